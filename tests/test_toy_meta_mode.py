"""bench/toy_meta_mode.py: the pass-rate reward's best constant against the MAE's (hand-computed values)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("toy_meta_mode", Path(__file__).parent.parent / "bench" / "toy_meta_mode.py")
mode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mode)

OBSERVED = [0.0, 0.0, 0.5, 0.75, 1.0]  # G = 4: two problems never solved, three solved 2, 3 and 4 times


def test_mean_reward_is_the_papers_r_pass():
    # r_pass = 0.01 ** |p - k/G|: exact 1; off by 0.5 -> 0.01 ** 0.5 = 0.1; a median between counts (0.125 of
    # G = 4 is half a count) off by 0.125 -> 0.01 ** 0.125 = 10 ** -0.25
    assert mode.mean_reward([0.0, 0.0], [0.0, 0.5], 4) == pytest.approx((1 + 0.1) / 2)
    assert mode.mean_reward([0.0], [0.125], 4) == pytest.approx(10 ** -0.25)


def test_the_rewards_best_constant_is_the_likeliest_count_not_the_median():
    # constant 0: errors 0, 0, 0.5, 0.75, 1 -> (1 + 1 + 0.1 + 0.01 ** 0.75 + 0.01) / 5 = 2.1416228 / 5
    # constant 0.5 (the median, the MAE's best): (0.1 + 0.1 + 1 + 0.01 ** 0.25 + 0.1) / 5 = 1.6162278 / 5
    # constants 0.25, 0.75, 1: 0.216, 0.339, 0.287 (each term as above), all below 0.428
    value, reward = mode.best_constant(OBSERVED, 4)
    assert value == 0.0
    assert reward == pytest.approx((2 + 0.1 + 0.01 ** 0.75 + 0.01) / 5)
    assert mode.mean_reward(OBSERVED, [0.5] * 5, 4) == pytest.approx((1.3 + 0.01 ** 0.25) / 5)
    # and under the MAE the order flips: 0 errs by (0.5 + 0.75 + 1) / 5 = 0.45, the median 0.5 by
    # (0.5 + 0.5 + 0 + 0.25 + 0.5) / 5 = 0.35
    assert mode.mae(OBSERVED, [0.0] * 5) == pytest.approx(0.45)
    assert mode.mae(OBSERVED, [0.5] * 5) == pytest.approx(0.35)


def test_under_the_linear_reward_the_best_constant_is_the_median():
    # 1 - |p - k/G| averages to 1 - MAE, so its best constant is the MAE's: 0.5 scores 1 - 0.35 = 0.65,
    # 0 scores 1 - 0.45 = 0.55
    value, reward = mode.best_constant(OBSERVED, 4, "linear")
    assert (value, reward) == (0.5, pytest.approx(0.65))
    assert mode.mean_reward(OBSERVED, [0.0] * 5, 4, "linear") == pytest.approx(0.55)


def test_one_value_everywhere_has_no_rank_correlation():
    assert mode.rank_corr(OBSERVED, [0.0] * 5) is None
    assert mode.rank_corr(OBSERVED, [0.0, 0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0, abs=0.05)


def test_row_scores_low_temperature_predictions_on_the_runs_observed_rates():
    # two problems: observed 0 and 1; the run's medians 0.5 and 0.5, the low-T predictions 0 and 1
    bench = {"meta": {"pass_rate_mae": 0.6},
             "calibration": [{"prompt_id": "a", "observed": 0.0, "median": 0.5},
                             {"prompt_id": "b", "observed": 1.0, "median": 0.5}]}
    f = mode.row(bench, {"a": 0.0, "b": 1.0}, 2)
    assert (f["n"], f["sampled"], f["median"], f["low_t"], f["low_t_mean"]) == (2, 0.6, 0.5, 0.0, 0.5)
    # r_pass of the medians: 0.01 ** 0.5 = 0.1 each; of the exact low-T predictions 1 each
    assert f["r_median"] == pytest.approx(0.1) and f["r_low_t"] == pytest.approx(1.0)
    # every constant of G = 2 scores (1 + 0.01) / 2 or 0.1: 0 and 1 tie at 0.505, the larger is kept
    assert f["r_best_constant"] == pytest.approx(0.505)
