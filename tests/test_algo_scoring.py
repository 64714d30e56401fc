"""Tests of masa.algo.scoring: the MASA scoring math on hand-derived values."""

from __future__ import annotations

import pytest
import torch

from masa.algo.scoring import (
    FIELD_KEYS,
    advantage_groups,
    credited_fields,
    is_meta_group,
    meta_group,
    meta_scores,
    solution_group,
    token_fields,
)

EQUAL = {"variant": "weighted-mean", "weight_pass_rate": 1.0, "weight_length": 1.0, "weight_notion": 1.0}


def _two_prompts():
    """B=2 prompts, G=4 solution slots.

    prompt 0: solutions ok = [1, 0, 1, 0], lengths [10, 20, 30, 40] -> observed p = 2/4 = 0.5, correct
              lengths range [10, 30].
    prompt 1: gated (no solution rows: mask all False).
    Meta rows (M=4), in slot order per prompt:
      row 0 (prompt 0): k=2, L=15, notion 0.5, all fields valid
      row 1 (prompt 0): k=4, L=35, notion 1.0, pass_rate valid, length INVALID, notion valid
      row 2 (prompt 0): k=0 (any), L=1 (any), nothing valid (unparsed)
      row 3 (prompt 1): k=1, L=5, notion 0, all valid, but the prompt was gated
    """
    sol_ok = torch.tensor([[True, False, True, False], [False] * 4])
    sol_len = torch.tensor([[10, 20, 30, 40], [0] * 4])
    sol_mask = torch.tensor([[True] * 4, [False] * 4])
    pred_k = torch.tensor([2, 4, 0, 1])
    pred_len = torch.tensor([15, 35, 1, 5])
    has_k = torch.tensor([True, True, False, True])
    has_len = torch.tensor([True, False, False, True])
    has_notion = torch.tensor([True, True, False, True])
    any_field = has_k | has_len | has_notion
    r_notion = torch.tensor([0.5, 1.0, 0.0, 0.0])
    prompt = torch.tensor([0, 0, 0, 1])
    return (pred_k, pred_len, has_k, has_len, has_notion, any_field, r_notion, prompt, sol_ok, sol_len, sol_mask)


def test_meta_scores_hand_values():
    m = meta_scores(*_two_prompts(), n_solution=4, length_strict=False, **EQUAL)
    # r_pass = 0.01 ** |p - k/G|:  row 0: |0.5 - 0.5| = 0 -> 1;  row 1: |0.5 - 1| = 0.5 -> 0.1;
    # row 2: no valid pass_rate -> zeroed; row 3: gated prompt, p = 0 (no rows), |0 - 1/4| -> 0.01**0.25,
    # kept as a component value (its `parsed` is False, so its reward is 0).
    assert m.pass_rate.tolist() == pytest.approx([1.0, 0.1, 0.0, 0.01 ** 0.25], rel=1e-6)
    # r_length: 15 in [10, 30] -> 1; row 1's length is invalid -> 0; row 3: no correct rollout -> 0
    assert m.length.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m.notion.tolist() == [0.5, 1.0, 0.0, 0.0]
    # parsed = some valid field AND the prompt has solution rows
    assert m.parsed.tolist() == [True, True, False, False]
    # reward = mean of the three components where parsed: (1 + 1 + 0.5) / 3, (0.1 + 0 + 1) / 3, 0, 0
    assert m.reward.tolist() == pytest.approx([2.5 / 3, 1.1 / 3, 0.0, 0.0], rel=1e-6)
    assert m.has_pass_rate.tolist() == [True, True, False, False]
    # |k/G - p|: 0, |1 - 0.5| = 0.5, |0 - 0.5| = 0.5 (row 2's k is the placeholder 0), |1/4 - 0| = 0.25
    assert m.abs_err.tolist() == pytest.approx([0.0, 0.5, 0.5, 0.25])
    # median of prompt 0's valid predictions {2, 4} = 3; observed count 2 -> |3 - 2| / 4 = 0.25;
    # prompt 1 was not rolled out, so the MAE covers prompt 0 only
    assert m.median_mae == pytest.approx(0.25)
    # gating's precision: prompt 0's median 3 is inside (0, 4), not a candidate; prompt 1 was not rolled out
    assert (m.gate_hits, m.gate_candidates) == (0, 0)
    # prompt 0's group is mixed (2 of 4 right) and rolled out; not a candidate: (0 mixed candidates, 1 mixed)
    assert (m.gate_mixed, m.mixed) == (0, 1)


def test_meta_scores_gate_precision():
    # prompt 0 as above but every meta row predicts k = 0 (median 0 <= low 0): a candidate; its observed
    # count 2 is not <= 0, a miss. With gate_low = 2 it is a candidate and a hit (2 <= 2).
    pred_k, *rest = _two_prompts()
    zero = torch.zeros_like(pred_k)
    m = meta_scores(zero, *rest, n_solution=4, length_strict=False, **EQUAL)
    assert (m.gate_hits, m.gate_candidates) == (0, 1)
    # ... and that miss is a mixed group the gate would throw away: 1 of the 1 mixed
    assert (m.gate_mixed, m.mixed) == (1, 1)
    m = meta_scores(zero, *rest, n_solution=4, length_strict=False, gate_low=2, **EQUAL)
    assert (m.gate_hits, m.gate_candidates) == (1, 1)


def test_meta_scores_linear_pass_rate_reward():
    # "linear": 1 - |p - k/G|. row 0: exact -> 1; row 1: |0.5 - 1| -> 0.5; row 2 invalid -> 0;
    # row 3: |0 - 1/4| -> 0.75. Reward of row 1: (0.5 + 0 + 1) / 3 = 0.5
    m = meta_scores(*_two_prompts(), n_solution=4, length_strict=False, pass_rate_variant="linear", **EQUAL)
    assert m.pass_rate.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.75])
    assert m.reward.tolist() == pytest.approx([2.5 / 3, 0.5, 0.0, 0.0])


def test_meta_scores_pass_rate_only_and_strict_length():
    args = _two_prompts()
    m = meta_scores(*args, n_solution=4, length_strict=True, variant="pass-rate-only", weight_pass_rate=1.0,
                    weight_length=1.0, weight_notion=1.0)
    # pass-rate-only: the reward is r_pass where parsed: 1, 0.1, 0, 0
    assert m.reward.tolist() == pytest.approx([1.0, 0.1, 0.0, 0.0], rel=1e-6)
    # strict: 15 in (10, 30) still inside
    assert m.length.tolist()[0] == 1.0


def test_median_mae_is_none_without_a_valid_prediction():
    (pred_k, pred_len, _, has_len, has_notion, _, r_notion, prompt, sol_ok, sol_len, sol_mask) = _two_prompts()
    no_k = torch.zeros(4, dtype=torch.bool)
    m = meta_scores(pred_k, pred_len, no_k, has_len, has_notion, no_k | has_len | has_notion, r_notion, prompt,
                    sol_ok, sol_len, sol_mask, n_solution=4, length_strict=False, **EQUAL)
    # None, not 0: an MAE of 0 over no prediction would switch predictive gating on
    assert m.median_mae is None
    assert m.pass_rate.tolist() == [0.0] * 4


def test_advantage_groups_are_one_per_prompt_and_path():
    # rows: (prompt 0, sol), (prompt 0, meta), (prompt 1, sol), (prompt 1, meta) -> 0, 1, 2, 3
    g = advantage_groups([0, 0, 1, 1, 0], [False, True, False, True, False])
    assert g.tolist() == [0, 1, 2, 3, 0]
    assert [solution_group(1), meta_group(1)] == [2, 3]
    assert [is_meta_group(x) for x in g.tolist()] == [False, True, False, True, False]


def test_credited_fields():
    # equal weights: each field alone scores 1/3 > 0 -> all three are credited
    assert credited_fields(**EQUAL) == list(FIELD_KEYS)
    # a zero weight leaves that field on the whole reward's advantage
    assert credited_fields(variant="weighted-mean", weight_pass_rate=1.0, weight_length=0.0,
                           weight_notion=1.0) == [FIELD_KEYS[0], FIELD_KEYS[2]]
    # pass-rate-only pays for the pass rate alone
    assert credited_fields(variant="pass-rate-only", weight_pass_rate=1.0, weight_length=1.0,
                           weight_notion=1.0) == [FIELD_KEYS[0]]


def test_token_fields_marks_the_tokens_of_each_value():
    # '{"pass_rate": 3, "solution_length": 120}' split into tokens; the value "3" is token 2, "120" is
    # split over tokens 5 and 6 ("12", "0"); keys order: pass_rate -> 0, solution_length -> 1
    pieces = ['{"pass_rate', '": ', '3', ', "solution_length', '": ', '12', '0', '}']
    assert token_fields(pieces, ["pass_rate", "solution_length"]) == [-1, -1, 0, -1, -1, 1, 1, -1]
    # a key not asked for is not marked
    assert token_fields(pieces, ["solution_length"]) == [-1, -1, -1, -1, -1, 0, 0, -1]
