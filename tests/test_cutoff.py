"""Tests of masa.algo.cutoff: hand-computed budgets, clamps, missing predictions, float-safe ceil."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.cutoff import cut_evidence, cutoff_active, cutoff_budget

T, F = True, False


def test_cutoff_budget_hand_values():
    # multiplier 2, min 16, max 512:
    # row 0: median of {100, 120, 80} = 100 -> 200
    # row 1: median of {101, 150} = 125.5 -> ceil(251.0) = 251
    # row 2: median 5 -> 10, raised to min_tokens 16
    # row 3: median 400 -> 800, capped at max_tokens 512
    # row 4: no valid prediction -> max_tokens 512
    pred = torch.tensor([[100, 120, 80], [101, 999, 150], [5, 5, 5], [400, 1, 400], [7, 7, 7]])
    valid = torch.tensor([[T, T, T], [T, F, T], [T, T, T], [T, F, T], [F, F, F]])
    out = cutoff_budget(pred, valid, multiplier=2.0, min_tokens=16, max_tokens=512)
    assert out.dtype == torch.long
    assert out.tolist() == [200, 251, 16, 512, 512]


def test_ceil_is_float_safe_and_rounds_up_fractions():
    # 1.1 * 100 is 110.00000000000001 in float64: the budget is 110, not 111.
    # 1.5 * 101 = 151.5 -> 152 (a genuine fraction still rounds up).
    pred = torch.tensor([[100], [101]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    assert cutoff_budget(pred, valid, multiplier=1.1, min_tokens=1, max_tokens=10_000).tolist()[0] == 110
    assert cutoff_budget(pred, valid, multiplier=1.5, min_tokens=1, max_tokens=10_000).tolist()[1] == 152


def test_bad_settings_are_named():
    pred, valid = torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="multiplier"):
        cutoff_budget(pred, valid, multiplier=0.0, max_tokens=10)
    with pytest.raises(ValueError, match="min_tokens <= max_tokens"):
        cutoff_budget(pred, valid, min_tokens=32, max_tokens=16)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=4, max_size=4),
                     min_size=1, max_size=6),
       mult=st.floats(0.1, 8.0), lo=st.integers(1, 64), span=st.integers(0, 4096))
def test_budget_bounds_and_reference(rows, mult, lo, span):
    hi = lo + span
    pred = torch.tensor([[v for v, _ in r] for r in rows])
    valid = torch.tensor([[ok for _, ok in r] for r in rows])
    out = cutoff_budget(pred, valid, multiplier=mult, min_tokens=lo, max_tokens=hi)
    assert ((out >= lo) & (out <= hi)).all()
    for i, r in enumerate(rows):
        vals = sorted(v for v, ok in r if ok)
        if not vals:
            assert out[i].item() == hi
            continue
        k = len(vals)
        med = (vals[(k - 1) // 2] + vals[k // 2]) / 2
        want = min(max(math.ceil(mult * med - 1e-6), lo), hi)
        assert out[i].item() == want


def test_cut_evidence_counts_passing_solutions_over_the_budget_where_it_did_not_act():
    # prompt 0 (budget 20, not applied): passing lengths 15, 25 (over 20: would be cut), 30 failing (not
    #   counted), one padded slot; prompt 1 (budget 50, applied: its solutions ran under it): left out;
    # prompt 2 (budget 64 = the response cap, not applied): passing 40 and 64, neither over 64.
    # would-cut 1 (the 25) of 4 passing: the 15 and 25 of prompt 0, the 40 and 64 of prompt 2
    budget = torch.tensor([20, 50, 64])
    applied = torch.tensor([F, T, F])
    lengths = torch.tensor([[15, 25, 30, 0], [60, 70, 10, 10], [40, 64, 5, 5]])
    passed = torch.tensor([[T, T, F, T], [T, T, T, T], [T, T, F, F]])
    valid = torch.tensor([[T, T, T, F], [T, T, T, T], [T, T, T, T]])
    assert cut_evidence(budget, applied, lengths, passed, valid) == (1, 4)


def test_cutoff_switch_pools_the_last_window():
    # no switch: on from the first round, with no evidence at all
    assert cutoff_active([], window=2, max_cut_passing=1.0)
    # fewer than `window` rounds of evidence: off
    assert not cutoff_active([(0, 10)], window=2, max_cut_passing=0.05)
    # last two rounds pooled: (3 + 1) / (40 + 60) = 0.04 <= 0.05: on; the first round's 9 of 10 is outside
    assert cutoff_active([(9, 10), (3, 40), (1, 60)], window=2, max_cut_passing=0.05)
    # (3 + 3) / (40 + 60) = 0.06 > 0.05: off
    assert not cutoff_active([(3, 40), (3, 60)], window=2, max_cut_passing=0.05)
    # no passing solution in the window: no evidence, off
    assert not cutoff_active([(0, 0), (0, 0)], window=2, max_cut_passing=0.05)
    # rounds where cutoff acted on every prompt give (0, 0) and are skipped: the last two rounds with
    # evidence, (1 + 0) / (10 + 30) = 0.025, keep it on (a run once toggled it off this way, 2026-12-08)
    assert cutoff_active([(9, 10), (1, 10), (0, 30), (0, 0), (0, 0)], window=2, max_cut_passing=0.05)
    with pytest.raises(ValueError, match="bad at rounds \\[1\\]"):
        cutoff_active([(0, 1), (2, 1)], window=2, max_cut_passing=0.05)
    with pytest.raises(ValueError, match="max_cut_passing"):
        cutoff_active([], window=2, max_cut_passing=1.5)

