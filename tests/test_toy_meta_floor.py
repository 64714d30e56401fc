"""bench/toy_meta_floor.py: the floors of the toy's pass-rate MAE (hand-computed values)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("toy_meta_floor", Path(__file__).parent.parent / "bench" / "toy_meta_floor.py")
floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor)


def test_median_mae_is_the_best_one_value_per_group():
    # one group 0, 0, 1: median 0, errors 0 + 0 + 1 over 3 = 1/3
    assert floor.median_mae({0: [0.0, 0.0, 1.0]}) == pytest.approx(1 / 3)
    # two groups, 0, 0, 1 and 1, 1: errors 1 (the first group's 1) + 0 over 5 problems = 0.2
    assert floor.median_mae({"a": [0.0, 0.0, 1.0], "b": [1.0, 1.0]}) == pytest.approx(0.2)


def test_binomial_noise():
    # p = 0 or 1: every sample agrees, no noise. p = 0.5, k = 2: c/k is 0, 0.5, 1 with probabilities
    # 1/4, 1/2, 1/4, so E|c/k - p| = 1/4 * 0.5 + 1/2 * 0 + 1/4 * 0.5 = 0.25
    assert floor.binomial_noise([0.0, 1.0], 8) == 0.0
    assert floor.binomial_noise([0.5], 2) == pytest.approx(0.25)


def test_cell_reads_operation_columns_and_regroupings():
    # docs/toy.md's example: 6866 - 5969 borrows in the ones, tens and hundreds
    assert floor.cell("What is 6866 - 5969?") == ("-", 4, 3)
    assert floor.cell("What is 95 * 7?") == ("*", 2, 2)


def test_sampler_draws_from_the_other_members_of_the_group():
    # one group 0, 0, 1, leave one out: each 0 draws from {0, 1}, mean error 1/2; the 1 draws from
    # {0, 0}, error 1. (1/2 + 1/2 + 1) / 3 = 2/3 (drawing from all three, itself included, would give 4/9)
    assert floor.sampler_mae({0: [0.0, 0.0, 1.0]}) == pytest.approx(2 / 3)
    # a 1 alone in its cell draws from the other cells' {0, 1}: error 1/2; group a's 0 and 1 draw each
    # other: errors 1 and 1. (1 + 1 + 1/2) / 3 = 5/6
    assert floor.sampler_mae({"a": [0.0, 1.0], "b": [1.0]}) == pytest.approx(5 / 6)
