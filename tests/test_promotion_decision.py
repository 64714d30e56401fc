"""The promotion decision (masa.algo.promotion), with hand-computed values."""

import math

import pytest

from masa.algo.promotion import Figures, binomial_stderr, combine, decide, noise


def test_noise_is_z_times_the_root_sum_of_squares():
    # 1.96 * sqrt(0.03^2 + 0.04^2) = 1.96 * 0.05 = 0.098
    assert noise(0.03, 0.04, 1.96) == pytest.approx(0.098)
    assert noise(None, 0.04, 2.0) == pytest.approx(0.08)  # unknown counts as 0


def test_binomial_stderr():
    # sqrt(0.5 * 0.5 / 100) = 0.05
    assert binomial_stderr(0.5, 100) == pytest.approx(0.05)
    assert binomial_stderr(0.3, 0) == 0.0


def test_first_model_is_promoted():
    d = decide(Figures(0.1), None)
    assert d.promote and d.margin == 0.0 and "first" in d.reason


def test_gain_must_exceed_the_derived_margin():
    cur = Figures(0.50, 0.03, 0.20, 0.01)
    # margin = 1.96 * sqrt(0.03^2 + 0.04^2) = 0.098: a gain of 0.10 passes, 0.09 does not
    win = decide(Figures(0.60, 0.04, 0.20, 0.01), cur)
    assert win.promote and win.margin == pytest.approx(0.098)
    lose = decide(Figures(0.59, 0.04, 0.20, 0.01), cur)
    assert not lose.promote and "not above the margin" in lose.reason


def test_equal_or_worse_is_rejected_even_with_zero_margin():
    cur = Figures(0.5, None, 0.2)
    assert not decide(Figures(0.5, None, 0.2), cur).promote  # gain 0 is not > 0
    assert not decide(Figures(0.4, None, 0.2), cur).promote


def test_explicit_margin_overrides_the_stderr():
    cur = Figures(0.5, 0.1)
    # derived margin would be 1.96*sqrt(0.02) = 0.277; explicit 0.05 lets a 0.06 gain through
    assert decide(Figures(0.56, 0.1), cur, margin=0.05).promote


def test_meta_awareness_may_not_get_worse_beyond_its_noise():
    cur = Figures(0.5, 0.0, 0.20, 0.01)
    # MAE noise = 1.96 * sqrt(0.01^2 + 0.01^2) = 0.02772: +0.02 is tolerated, +0.03 is not
    assert decide(Figures(0.6, 0.0, 0.22, 0.01), cur).promote
    worse = decide(Figures(0.6, 0.0, 0.23, 0.01), cur)
    assert not worse.promote and "meta-awareness got worse" in worse.reason
    assert not decide(Figures(0.6, 0.0, None), cur).promote  # no MAE where the current has one


def test_combine_averages_benchmarks():
    f = combine([Figures(0.2, 0.03, 0.1, None), Figures(0.4, 0.04, 0.3, None)])
    # mean 0.3; se = sqrt(0.03^2 + 0.04^2) / 2 = 0.05 / 2 = 0.025; MAE 0.2, its se unknown
    assert f.accuracy == pytest.approx(0.3) and f.accuracy_stderr == pytest.approx(0.025)
    assert f.pass_rate_mae == pytest.approx(0.2) and f.pass_rate_mae_stderr is None
    assert math.isclose(combine([Figures(0.7)]).accuracy, 0.7)
