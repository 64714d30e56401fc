import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from masa.algo.evaluation import accuracy_stderr, avg_at_k, clustered_mean_stderr, pass_at_k, spearman


def test_pass_at_k_hand_values():
    # n=4, c=2, k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6
    # n=4, c=0, k=1: no correct sample → 0;  n=4, c=4, k=3 → 1
    # n=5, c=1, k=1: c/n = 0.2 (pass@1 is the mean accuracy)
    got = pass_at_k(torch.tensor([4, 4, 4, 5]), torch.tensor([2, 0, 4, 1]), 1)
    assert torch.allclose(got, torch.tensor([0.5, 0.0, 1.0, 0.2]))
    assert math.isclose(float(pass_at_k(torch.tensor([4]), torch.tensor([2]), 2)[0]), 5 / 6, rel_tol=1e-6)
    assert float(pass_at_k(torch.tensor([4]), torch.tensor([4]), 3)[0]) == 1.0


@given(st.integers(1, 40), st.data())
def test_pass_at_k_matches_binomial_formula(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    got = float(pass_at_k(torch.tensor([n]), torch.tensor([c]), k)[0])
    assert math.isclose(got, expected, abs_tol=1e-5)


def test_pass_at_k_needs_k_samples():
    import pytest

    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k(torch.tensor([2]), torch.tensor([1]), 4)


def test_avg_at_k_ignores_invalid():
    correct = torch.tensor([[1, 0], [1, 1]])
    valid = torch.tensor([[True, True], [True, False]])
    # (1 + 0 + 1) / 3 valid samples
    assert math.isclose(float(avg_at_k(correct, valid)), 2 / 3, rel_tol=1e-6)


def test_spearman_hand_values():
    # monotone → 1, reversed → -1
    assert float(spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 30]))) == 1.0
    assert float(spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1]))) == -1.0
    # ties: x ranks [1.5, 1.5, 3], y ranks [1, 2, 3]; centred x [-.5,-.5,1], y [-1,0,1];
    # cov 1.5, |x|^2 1.5, |y|^2 2 → 1.5 / sqrt(3) = 0.8660
    assert math.isclose(float(spearman(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3]))), 1.5 / math.sqrt(3),
                        rel_tol=1e-6)
    assert math.isnan(float(spearman(torch.tensor([1.0, 1, 1]), torch.tensor([1.0, 2, 3]))))


def test_outcome_spread_hand_values():
    # k = 4; counts 0, 2, 4, 4, 1: all wrong 1/5, mixed (2 and 1) 2/5, all right 2/5
    from masa.algo.evaluation import outcome_spread

    assert outcome_spread(torch.tensor([0, 2, 4, 4, 1]), 4) == {"all_wrong": 0.2, "mixed": 0.4, "all_right": 0.4}
    assert outcome_spread(torch.tensor([], dtype=torch.long), 4) == {"all_wrong": 0.0, "mixed": 0.0,
                                                                      "all_right": 0.0}


def test_accuracy_stderr_hand_values():
    # per-problem means [1, 0]: mean 0.5, sample SD sqrt((0.25 + 0.25) / 1) = 0.7071, / sqrt(2) = 0.5
    ones = torch.ones(2, 2, dtype=torch.bool)
    assert math.isclose(float(accuracy_stderr(torch.tensor([[1, 1], [0, 0]]), ones)), 0.5, rel_tol=1e-6)
    # means [0.5, 1, 0]: deviations [0, .5, -.5], sample variance 0.5 / 2 = 0.25, SD 0.5, / sqrt(3)
    got = accuracy_stderr(torch.tensor([[1, 0], [1, 1], [0, 0]]), torch.ones(3, 2, dtype=torch.bool))
    assert math.isclose(float(got), 0.5 / math.sqrt(3), rel_tol=1e-6)
    # every problem alike: no spread, no error; one problem: undefined
    assert float(accuracy_stderr(torch.tensor([[1, 0], [0, 1]]), ones)) == 0.0
    assert math.isnan(float(accuracy_stderr(torch.tensor([[1, 0]]), torch.ones(1, 2, dtype=torch.bool))))


def test_clustered_mean_stderr_unequal_counts():
    # sums [1, 0, 3], counts [1, 2, 3] (a problem with 0 samples is left out): m = 4/6 = 2/3;
    # residuals s - m n = [1/3, -4/3, 1], squares sum 26/9; / (sum n)^2 = 36 -> 26/324; * P/(P-1) = 3/2
    # -> 13/108 = 0.12037, SE = sqrt(13/108) = 0.34694
    got = clustered_mean_stderr(torch.tensor([1.0, 0, 3, 0]), torch.tensor([1, 2, 3, 0]))
    assert math.isclose(float(got), math.sqrt(13 / 108), rel_tol=1e-6)
    # the accuracy stderr with invalid samples is this estimator over the valid ones: rows [1, 0] of
    # which 1 valid, [0, 1] both valid -> sums [1, 1], counts [1, 2], m = 2/3, residuals [1/3, -1/3],
    # squares 2/9, / 9 = 2/81, * 2 = 4/81, SE = 2/9
    got = accuracy_stderr(torch.tensor([[1, 0], [0, 1]]), torch.tensor([[True, False], [True, True]]))
    assert math.isclose(float(got), 2 / 9, rel_tol=1e-6)


@given(st.lists(st.floats(0, 1), min_size=2, max_size=30), st.integers(1, 8))
def test_clustered_stderr_equal_counts_is_sd_over_sqrt_p(means, n):
    import statistics

    got = float(clustered_mean_stderr(torch.tensor(means, dtype=torch.float64) * n, torch.full((len(means),), n)))
    assert math.isclose(got, statistics.stdev(means) / math.sqrt(len(means)), rel_tol=1e-5, abs_tol=1e-7)
