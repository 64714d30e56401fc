"""Group advantages: hand values, loop reference, masked-position invariance, ragged form, bounds."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.advantages import (
    ESTIMATORS,
    flat_advantages,
    flat_field_advantages,
    group_advantages,
    pad_groups,
    token_advantages,
)

EPS = 1e-6


def test_grpo_hand_values_unbiased_and_biased():
    # r = [1, 0, 0, 0]: mean 0.25, deviations [0.75, -0.25, -0.25, -0.25], sum of squares 0.75.
    #   unbiased var = 0.75 / 3 = 0.25 -> std 0.5      -> A = [1.5, -0.5, -0.5, -0.5]
    #   biased   var = 0.75 / 4        -> std sqrt(3)/4 -> A = [sqrt(3), -1/sqrt(3), ...]
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    adv, zv = group_advantages(r, eps=EPS)
    torch.testing.assert_close(adv, torch.tensor([[1.5, -0.5, -0.5, -0.5]]), atol=1e-5, rtol=0)
    adv_b, _ = group_advantages(r, eps=EPS, unbiased=False)
    s3 = math.sqrt(3)
    torch.testing.assert_close(adv_b, torch.tensor([[s3, -1 / s3, -1 / s3, -1 / s3]]), atol=1e-5, rtol=0)
    assert zv.tolist() == [False]


def test_drgrpo_hand_values():
    # r = [1, 0, 0, 0] -> A = r - 0.25; std is not used
    adv, _ = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), estimator="drgrpo")
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def test_zero_variance_and_singleton_groups_get_zero():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.3, 0.3, 0.3], [5.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True] * 3, [True] * 3, [True, False, False], [False] * 3])
    for est in ESTIMATORS:
        adv, zv = group_advantages(r, mask, estimator=est, eps=EPS)
        assert zv.tolist() == [True, True, True, True]
        assert torch.equal(adv, torch.zeros_like(adv))


def _loop_reference(r, mask, estimator, unbiased):
    adv, zv = torch.zeros_like(r), []
    for b in range(r.shape[0]):
        idx = [g for g in range(r.shape[1]) if mask[b, g]]
        vals = r[b, idx]
        flat = len(idx) < 2 or float(vals.max() - vals.min()) <= 1e-6
        zv.append(flat)
        if flat:
            continue
        centred = vals - vals.mean()
        out = centred / (vals.std(correction=1 if unbiased else 0) + EPS) if estimator == "grpo" else centred
        adv[b, idx] = out
    return adv, torch.tensor(zv)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_matches_loop_reference(estimator, unbiased):
    g = torch.Generator().manual_seed(1)
    r = torch.rand(16, 8, generator=g).round(decimals=1)
    mask = torch.rand(16, 8, generator=g) < 0.7
    got = group_advantages(r, mask, estimator=estimator, eps=EPS, unbiased=unbiased)
    want = _loop_reference(r, mask, estimator, unbiased)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo"])
def test_masked_positions_do_not_affect_others(estimator):
    g = torch.Generator().manual_seed(2)
    r = torch.rand(6, 8, generator=g)
    mask = torch.rand(6, 8, generator=g) < 0.6
    base, zv = group_advantages(r, mask, estimator=estimator)
    for junk in (torch.full_like(r, float("nan")), torch.full_like(r, float("inf")), r * 1000 - 7):
        got, zv2 = group_advantages(torch.where(mask, r, junk), mask, estimator=estimator)
        assert torch.equal(got, base) and torch.equal(zv2, zv)
    assert bool((base[~mask] == 0).all())


def test_flat_form_matches_padded_and_pads_round_trip():
    # groups 0: 3 rows, 1: 1 row, 2: 2 rows, in shuffled order
    gi = torch.tensor([2, 0, 1, 0, 2, 0])
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    padded, mask, slot = pad_groups(r, gi)
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert torch.equal(padded[gi, slot], r)
    adv, zv = flat_advantages(r, gi, eps=EPS)
    # group 0: [0, 1, 1]: mean 2/3, unbiased std sqrt(1/3) -> A = [-2/3, 1/3, 1/3] / 0.57735
    s = math.sqrt(1 / 3)
    torch.testing.assert_close(adv[[1, 3, 5]], torch.tensor([-2 / 3, 1 / 3, 1 / 3]) / s, atol=1e-5, rtol=0)
    # group 2: [1, 0]: mean 0.5, unbiased std sqrt(0.5) -> A = +-0.5/0.7071 = +-0.7071
    torch.testing.assert_close(adv[[0, 4]], torch.tensor([0.5, -0.5]) / math.sqrt(0.5), atol=1e-5, rtol=0)
    assert float(adv[2]) == 0.0  # singleton group
    assert zv.tolist() == [False, False, True, False, False, False]


def test_bad_input_errors():
    with pytest.raises(KeyError, match="valid: drgrpo, grpo"):
        group_advantages(torch.zeros(2, 2), estimator="ppo")
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="mask must be bool"):
        group_advantages(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))


def test_a_near_tied_group_gets_advantages_of_equal_size():
    # rewards a < b, 1.6e-4 apart (hypothesis's falsifying example of the sum-to-zero test, seed 112).
    # population std of two values = d = (b - a) / 2, each deviation is -d, +d, so A = -+ d / (d + eps).
    # With the stats in float32 the mean's rounding gave -0.9880 / +0.9873 (sum -7e-4).
    a, b = 0.8939918875694275, 0.8941521644592285  # float32 values
    d = (b - a) / 2  # 8.0138e-05
    adv, zv = group_advantages(torch.tensor([[a, b]]), estimator="grpo", unbiased=False, eps=1e-6)
    assert not zv[0] and adv.dtype == torch.float32
    assert adv[0, 1].item() == -adv[0, 0].item()
    assert adv[0, 1].item() == pytest.approx(d / (d + 1e-6), rel=1e-6)  # 0.98767


@settings(max_examples=80, deadline=None)
@given(B=st.integers(1, 6), G=st.integers(1, 10), seed=st.integers(0, 2**31 - 1),
       estimator=st.sampled_from(["grpo", "drgrpo"]), unbiased=st.booleans())
def test_advantages_sum_to_zero_per_group(B, G, seed, estimator, unbiased):
    g = torch.Generator().manual_seed(seed)
    r = (torch.rand(B, G, generator=g) < 0.5).float() * torch.rand(B, G, generator=g)
    mask = torch.rand(B, G, generator=g) < 0.8
    adv, zv = group_advantages(r, mask, estimator=estimator, unbiased=unbiased)
    assert torch.isfinite(adv).all()
    sums = (adv * mask).sum(-1)
    assert bool((sums.abs() < 1e-4 * mask.sum(-1).clamp(min=1)).all())
    if estimator == "grpo":
        # a z-score in a group of n is bounded: (n-1)/sqrt(n) with unbiased std, sqrt(n-1) with biased; both <= sqrt(n)
        n = mask.sum(-1, keepdim=True).clamp(min=1).float()
        assert bool((adv.abs() <= n.sqrt() + 1e-4).all())


def test_pad_groups_with_empty_groups():
    # 4 groups, rows only in groups 1 and 3; empty groups are all-masked and zero-variance
    gi = torch.tensor([3, 1, 3])
    padded, mask, slot = pad_groups(torch.tensor([1.0, 2.0, 0.0]), gi, n_groups=4)
    assert padded.tolist() == [[0, 0], [2, 0], [0, 0], [1, 0]]
    assert mask.tolist() == [[False, False], [True, False], [False, False], [True, True]]
    _, zv = group_advantages(padded, mask)
    assert zv.tolist() == [True, True, True, False]
    empty = pad_groups(torch.zeros(0), torch.zeros(0, dtype=torch.long), n_groups=2)
    assert empty[0].shape == (2, 0) and empty[2].shape == (0,)
    adv, zv = group_advantages(empty[0], empty[1])
    assert adv.shape == (2, 0) and zv.tolist() == [True, True]
    adv, zv = flat_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert adv.shape == (0,) and zv.shape == (0,)


# ---------------------------------------------------------------- per-field credit


def test_token_advantages_hand_values():
    # row 0: tokens (other, field 0, field 1, other) -> (A_seq, A_0, A_1, A_seq) = (0.5, 2, -3, 0.5)
    # row 1: tokens (field 1, field 1, other, field 0) -> (0, 0, -1, 0.25)
    seq = torch.tensor([0.5, -1.0])
    field = torch.tensor([[2.0, -3.0], [0.25, 0.0]])
    tf = torch.tensor([[-1, 0, 1, -1], [1, 1, -1, 0]])
    assert token_advantages(seq, field, tf).tolist() == [[0.5, 2.0, -3.0, 0.5], [0.0, 0.0, -1.0, 0.25]]
    # no field tokens at all: every token carries the sequence's advantage (plain GRPO)
    assert token_advantages(seq, field, torch.full((2, 3), -1)).tolist() == [[0.5] * 3, [-1.0] * 3]
    assert token_advantages(seq, field[:, :0], torch.full((2, 2), -1)).tolist() == [[0.5] * 2, [-1.0] * 2]


def test_flat_field_advantages_normalise_each_field_alone():
    # two groups; field 0 of group 0 = [1, 0.01] -> +-1/sqrt(2) (two values, unbiased std = |d|/sqrt(2));
    # field 1 of group 0 = [0.5, 0.5] -> zero variance -> 0; group 1 is a singleton -> 0
    r = torch.tensor([[1.0, 0.5], [0.01, 0.5], [0.3, 0.9]])
    gi = torch.tensor([0, 0, 1])
    a = flat_field_advantages(r, gi)
    assert a[:, 0].tolist() == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2), 0.0], abs=1e-5)
    assert a[:, 1].tolist() == [0.0, 0.0, 0.0]
    torch.manual_seed(0)
    r, gi = torch.rand(12, 3), torch.randint(0, 3, (12,))
    for f in range(3):  # vectorised over fields == the one-field form per column
        assert torch.equal(flat_field_advantages(r, gi, estimator="drgrpo")[:, f],
                           flat_advantages(r[:, f], gi, estimator="drgrpo")[0])


def test_field_credit_bad_shapes():
    with pytest.raises(ValueError, match=r"need seq_adv \[N\]"):
        token_advantages(torch.zeros(2), torch.zeros(2, 1), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"rewards must be \[N, F\]"):
        flat_field_advantages(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_unknown_meta_credit_names_the_valid_ones():
    from masa.algo.config import AdvantageConfig

    with pytest.raises(ValueError, match="unknown meta credit 'per-token'; valid: sequence, per-field"):
        AdvantageConfig(meta_credit="per-token")
