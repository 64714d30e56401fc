"""Tests of masa.algo.cutoff: hand-computed budgets, clamps, missing predictions, float-safe ceil."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.cutoff import cutoff_budget

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
