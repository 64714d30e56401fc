"""Tests of masa.algo.gating: medians, gate thresholds, the reliability switch, seeded exploration."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.gating import (
    apply_exploration,
    gate_mask,
    gate_precision,
    gate_signal,
    gating_active,
    gating_decision,
    median_prediction,
    pass_rate_mae,
    round_generator,
    signal_loss,
)

T, F = True, False


def test_median_prediction_hand_values():
    # Row 0: valid {8, 0, 8} -> sorted 0, 8, 8 -> median 8 (odd count, the middle one).
    # Row 1: valid {2, 6} -> mean of the two middles (2 + 6) / 2 = 4 (the 99 is invalid and ignored).
    # Row 2: nothing valid -> NaN, has_pred False.
    # Row 3: valid {5} -> 5.
    pred = torch.tensor([[8, 0, 8, 3], [2, 99, 6, 0], [1, 2, 3, 4], [7, 7, 5, 7]])
    valid = torch.tensor([[T, T, T, F], [T, F, T, F], [F, F, F, F], [F, F, T, F]])
    med, has = median_prediction(pred, valid)
    assert has.tolist() == [T, T, F, T]
    assert med[[0, 1, 3]].tolist() == [8.0, 4.0, 5.0] and math.isnan(med[2])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 16), st.booleans()), min_size=1, max_size=9),
                min_size=1, max_size=6).filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_median_matches_statistics_median(rows):
    pred = torch.tensor([[v for v, _ in r] for r in rows])
    valid = torch.tensor([[ok for _, ok in r] for r in rows])
    med, has = median_prediction(pred, valid)
    for i, r in enumerate(rows):
        vals = [v for v, ok in r if ok]
        assert bool(has[i]) == bool(vals)
        if vals:
            assert med[i].item() == statistics.median(vals)


def test_gate_mask_thresholds_and_missing_predictions():
    # G = 8, defaults low 0, high 8: skip medians 0 and 8 only; 0.5 (e.g. {0, 1}) is not gated; NaN never.
    med = torch.tensor([0.0, 8.0, 0.5, 4.0, math.nan, 7.5])
    has = torch.tensor([T, T, T, T, F, T])
    assert gate_mask(med, has, n_solution=8).tolist() == [T, T, F, F, F, F]
    # Wider band: low 1, high 7 also gates 0.5 and 7.5.
    assert gate_mask(med, has, n_solution=8, low=1, high=7).tolist() == [T, T, T, F, F, T]
    # has_pred False wins even over an extreme value left in `median`.
    assert not gate_mask(torch.tensor([0.0]), torch.tensor([F]), n_solution=8).any()
    with pytest.raises(ValueError, match="low < high"):
        gate_mask(med, has, n_solution=8, low=4, high=4)
    with pytest.raises(ValueError, match="high <= n_solution"):
        gate_mask(med, has, n_solution=8, high=9)


def test_gating_active_switch():
    kw = dict(min_rounds=2, window=3, mae_threshold=0.2)
    assert not gating_active([], **kw)
    assert not gating_active([0.05], **kw)  # too few rounds
    assert gating_active([0.05, 0.1], **kw)  # mean 0.075 < 0.2 over the 2 available
    # Last 3 of [0.9, 0.1, 0.2, 0.2] -> mean 0.5/3 = 0.1667 < 0.2 (the old 0.9 left the window).
    assert gating_active([0.9, 0.1, 0.2, 0.2], **kw)
    # Last 3 of [0.1, 0.1, 0.1, 0.4] -> 0.2, not strictly below: off again when the meta path drifts.
    assert not gating_active([0.1, 0.1, 0.1, 0.4], **kw)
    # min_rounds 0 still needs one measured round.
    assert not gating_active([], min_rounds=0, window=1, mae_threshold=0.5)
    with pytest.raises(ValueError, match="bad at rounds \\[1\\]"):
        gating_active([0.1, math.nan], **kw)


def test_pass_rate_mae_hand_value():
    # G = 8. Prompt 0: |8 - 6| / 8 = 0.25; prompt 1: |0 - 0| = 0; prompt 2 not rolled out; prompt 3 has no
    # prediction. MAE = (0.25 + 0) / 2 = 0.125 over 2 prompts.
    med = torch.tensor([8.0, 0.0, 4.0, math.nan], dtype=torch.float64)
    has = torch.tensor([T, T, T, F])
    observed = torch.tensor([6, 0, -1, 3])
    rolled = torch.tensor([T, T, F, T])
    mae, n = pass_rate_mae(med, has, observed, rolled, n_solution=8)
    assert mae.item() == pytest.approx(0.125) and n.item() == 2
    mae0, n0 = pass_rate_mae(med, has, observed, torch.zeros(4, dtype=torch.bool), n_solution=8)
    assert n0.item() == 0 and math.isnan(mae0.item())


def test_exploration_is_seeded_and_a_subset():
    skip = torch.tensor([T, F, T, T, F, T, T, T, T, F, T, T])  # 9 skipped
    a = apply_exploration(skip, explore_share=0.5, generator=round_generator(3, 7))
    b = apply_exploration(skip, explore_share=0.5, generator=round_generator(3, 7))
    assert torch.equal(a, b)  # rerun of the same round: identical decisions
    assert not (a & ~skip).any()  # never skips a prompt that was not gated
    assert (skip & ~a).sum().item() in (4, 5)  # 0.5 * 9 = 4.5 -> floor or ceil
    # Other rounds draw other prompts (with 9 choose 4/5 options, 8 rounds all equal is ~impossible).
    others = {tuple(apply_exploration(skip, explore_share=0.5, generator=round_generator(3, r)).tolist())
              for r in range(8)}
    assert len(others) > 1
    assert torch.equal(apply_exploration(skip, explore_share=0.0, generator=round_generator(0, 0)), skip)
    assert not apply_exploration(skip, explore_share=1.0, generator=round_generator(0, 0)).any()


def test_exploration_rate_is_unbiased_on_small_batches():
    # 3 gated prompts, share 0.1: 0.3 prompts per round on average (stochastic rounding), not 0 forever.
    skip = torch.tensor([T, T, T, F])
    explored = sum(int((skip & ~apply_exploration(skip, explore_share=0.1, generator=round_generator(1, r)))
                       .sum()) for r in range(2000))
    assert 0.25 * 2000 < explored < 0.35 * 2000


@settings(max_examples=60, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=0, max_size=40), share=st.floats(0.0, 1.0),
       seed=st.integers(0, 10**6))
def test_exploration_count_bounds(bits, share, seed):
    skip = torch.tensor(bits, dtype=torch.bool)
    out = apply_exploration(skip, explore_share=share, generator=round_generator(seed, 0))
    n, explored = int(skip.sum()), int((skip & ~out).sum())
    assert not (out & ~skip).any()
    assert math.floor(share * n) <= explored <= math.ceil(share * n)


def test_gating_decision_inactive_then_active():
    pred = torch.tensor([[0, 0, 1], [8, 8, 8], [3, 4, 5], [0, 8, 9]])
    valid = torch.tensor([[T, T, T], [T, T, T], [T, T, T], [T, T, F]])
    kw = dict(n_solution=8, min_rounds=1, window=2, mae_threshold=0.2, explore_share=0.0,
              generator=round_generator(0, 0))
    skip, med, has = gating_decision(pred, valid, [0.5], **kw)  # unreliable meta path: nothing skipped
    assert not skip.any() and med.tolist() == [0.0, 8.0, 4.0, 4.0]
    skip, _, _ = gating_decision(pred, valid, [0.5, 0.05, 0.1], **kw)  # mean(0.05, 0.1) < 0.2
    assert skip.tolist() == [T, T, F, F]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="pred \\[B, Gm\\]"):
        median_prediction(torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="explore_share"):
        apply_exploration(torch.zeros(3, dtype=torch.bool), explore_share=1.5, generator=round_generator(0, 0))


def test_gating_config_bounds_and_validation():
    from masa.algo.config import GatingConfig
    from masa.configbase import ConfigError, from_dict

    assert GatingConfig().bounds(8) == (0, 8)
    assert from_dict(GatingConfig, {"low": 1, "high": 7}).bounds(8) == (1, 7)
    with pytest.raises(ConfigError, match="low: must be < high"):
        from_dict(GatingConfig, {"low": 5, "high": 3})
    with pytest.raises(ConfigError, match="max_signal_loss: must be in"):
        from_dict(GatingConfig, {"max_signal_loss": 1.5})


def test_gate_precision_counts_the_skipped_side():
    # G = 8, defaults low 0 and high 8. Six prompts (median, observed count, rolled out):
    #   0: median 0, observed 0, rolled -> candidate, hit (all wrong, as predicted)
    #   1: median 0, observed 3, rolled -> candidate, miss (a mixed group gating would have skipped)
    #   2: median 8, observed 8, rolled -> candidate, hit (all right)
    #   3: median 8, observed 0, rolled -> candidate, miss (predicted high, on the other side)
    #   4: median 4, observed 0, rolled -> not a candidate (gating would roll it out)
    #   5: median 0, not rolled out (gated, not explored) -> nothing observed, not counted
    med = torch.tensor([0.0, 0.0, 8.0, 8.0, 4.0, 0.0], dtype=torch.float64)
    has = torch.ones(6, dtype=torch.bool)
    obs = torch.tensor([0, 3, 8, 0, 0, 0])
    rolled = torch.tensor([T, T, T, T, T, F])
    hits, cands = gate_precision(med, has, obs, rolled, n_solution=8)
    assert (int(hits), int(cands)) == (2, 4)
    # low = 1: prompt 1's median 0 is still a candidate and its 3 is above 1 -> still a miss; a prompt with
    # median 1 and observed 1 is a hit (the side the user chose to skip)
    hits, cands = gate_precision(torch.tensor([1.0, 0.0]), torch.tensor([T, T]), torch.tensor([1, 3]),
                                 torch.tensor([T, T]), n_solution=8, low=1)
    assert (int(hits), int(cands)) == (1, 2)
    # no prediction -> never a candidate
    hits, cands = gate_precision(torch.tensor([math.nan]), torch.tensor([F]), torch.tensor([0]),
                                 torch.tensor([T]), n_solution=8)
    assert (int(hits), int(cands)) == (0, 0)


def test_gating_switch_needs_precision_as_well_as_mae():
    kw = dict(min_rounds=2, window=2, mae_threshold=0.25, min_precision=0.8)
    # The toy's seed 1 at round 5 (docs/report.md, "Gating on a constant"): MAE 0.179 and 0.166 pass the
    # threshold, but of the prompts predicted 0 only 56 of 90 and 12 of 19 were all wrong:
    # (56 + 12) / (90 + 19) = 0.624 < 0.8 -> off
    assert not gating_active([0.179, 0.166], precision_history=[(56, 90), (12, 19)], **kw)
    # pooled over the last 2 rounds only: (9 + 8) / (10 + 10) = 0.85 >= 0.8 -> on (the old 0 of 40 left)
    assert gating_active([0.2, 0.1, 0.1], precision_history=[(0, 40), (9, 10), (8, 10)], **kw)
    # exactly at the bar is on: 8 / 10 = 0.8
    assert gating_active([0.1, 0.1], precision_history=[(4, 5), (4, 5)], **kw)
    # no candidate in the window: no evidence, off
    assert not gating_active([0.1, 0.1], precision_history=[(0, 0), (0, 0)], **kw)
    assert not gating_active([0.1, 0.1], **kw)
    # precision never overrides the MAE: 1.0 precision with MAE 0.3 stays off
    assert not gating_active([0.3, 0.3], precision_history=[(5, 5), (5, 5)], **kw)
    # min_precision 0 is the MAE switch alone
    assert gating_active([0.1, 0.1], min_rounds=2, window=2, mae_threshold=0.25)
    with pytest.raises(ValueError, match="hits <= candidates"):
        gating_active([0.1, 0.1], precision_history=[(3, 2)], **kw)
    with pytest.raises(ValueError, match="min_precision"):
        gating_active([0.1], min_rounds=1, window=1, mae_threshold=0.2, min_precision=1.5)


def test_gate_signal_counts_the_mixed_groups_it_would_skip():
    # G = 8, the six prompts of test_gate_precision_counts_the_skipped_side. Mixed (0 < observed < 8) and
    # rolled out: prompt 1 only (observed 3), and it is a candidate (median 0) -> (1, 1). Prompt 5 is
    # not rolled out, so its observed 0 is nothing.
    med = torch.tensor([0.0, 0.0, 8.0, 8.0, 4.0, 0.0], dtype=torch.float64)
    has = torch.ones(6, dtype=torch.bool)
    rolled = torch.tensor([T, T, T, T, T, F])
    mc, m = gate_signal(med, has, torch.tensor([0, 3, 8, 0, 0, 0]), rolled, n_solution=8)
    assert (int(mc), int(m)) == (1, 1)
    # prompt 4 (median 4, not a candidate) mixed at 5: counted in mixed, not in mixed candidates -> (1, 2)
    mc, m = gate_signal(med, has, torch.tensor([0, 3, 8, 0, 5, 0]), rolled, n_solution=8)
    assert (int(mc), int(m)) == (1, 2)


def test_signal_loss_scales_the_explored_candidates():
    # gating off (gated 0): 3 of the 12 mixed groups are candidates -> 3 / 12 = 0.25
    assert signal_loss([(3, 12, 20, 0)]) == pytest.approx(0.25)
    # gating on: 10 candidates explored, 40 skipped, so the 2 mixed among the explored stand for
    # 2 * (10 + 40) / 10 = 10 among all 50; the rolled-out non-candidates had 9 - 2 = 7 -> 10 / 17
    assert signal_loss([(2, 9, 10, 40)]) == pytest.approx(10 / 17)
    # pooled over rounds: skipped 3 + 10 = 13, kept 9 + 7 = 16 -> 13 / 29
    assert signal_loss([(3, 12, 20, 0), (2, 9, 10, 40)]) == pytest.approx(13 / 29)
    # a round that skipped 30 prompts and explored none says nothing about them: left out
    assert signal_loss([(3, 12, 20, 0), (0, 5, 0, 30)]) == pytest.approx(0.25)
    # no mixed group anywhere: no evidence
    assert signal_loss([(0, 0, 4, 0)]) is None and signal_loss([]) is None
    with pytest.raises(ValueError, match="mixed_candidates <= min"):
        signal_loss([(5, 3, 10, 0)])


def test_gating_switch_needs_the_signal_kept_where_precision_passes_for_a_constant():
    # A hard dataset: 100 prompts a round, 85 all wrong, 15 mixed; a meta path that predicts 0 for every one
    # has MAE = the mean pass rate (say 0.05), precision 85 / 100 = 0.85 >= 0.8: both old switches pass.
    kw = dict(min_rounds=2, window=2, mae_threshold=0.25, min_precision=0.8)
    history = dict(precision_history=[(85, 100), (85, 100)])
    assert gating_active([0.05, 0.05], **history, **kw)
    # but it would skip all 15 mixed groups of each round: loss 30 / 30 = 1 > 0.2 -> off
    lost = dict(signal_history=[(15, 15, 100, 0), (15, 15, 100, 0)], max_signal_loss=0.2)
    assert not gating_active([0.05, 0.05], **history, **lost, **kw)
    # a gate that would skip 2 of each round's 15 mixed groups: 4 / 30 = 0.13 <= 0.2 -> on
    assert gating_active([0.05, 0.05], **history, signal_history=[(2, 15, 87, 0)] * 2, max_signal_loss=0.2, **kw)
    # no evidence of the signal: off; max_signal_loss 1 is the check turned off
    assert not gating_active([0.05, 0.05], **history, max_signal_loss=0.2, **kw)
    assert gating_active([0.05, 0.05], **history, max_signal_loss=1.0, **kw)
    with pytest.raises(ValueError, match="max_signal_loss"):
        gating_active([0.1], min_rounds=1, window=1, mae_threshold=0.2, max_signal_loss=1.5)
