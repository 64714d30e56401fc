"""bench/probe_meta_readout.py: its rank correlation and out-of-fold estimators, on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("probe_meta_readout",
                                               Path(__file__).parents[1] / "bench" / "probe_meta_readout.py")
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


def test_spearman_is_the_rank_correlation():
    # ranks 1 2 3 4 against 1 2 4 3: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert probe.spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)


def test_lookup_predicts_each_key_from_the_other_folds_only():
    # fold 0 holds items 0 and 2: trained on items 1 and 3 (a -> 0, b -> 1); fold 1 holds items 1 and 3:
    # trained on items 0 and 2 (a -> 1, b -> 1). Item 1's own label 0 never predicts item 1.
    out = probe.cv_lookup(["a", "a", "b", "b"], np.array([1.0, 0.0, 1.0, 1.0]), np.array([0, 1, 0, 1]))
    assert out.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_lookup_of_an_unseen_key_is_the_training_mean():
    # item 2's key "c" is in no training fold: it gets the mean of the training labels (item 1: 0.25)
    out = probe.cv_lookup(["a", "a", "c"], np.array([1.0, 0.25, 0.5]), np.array([0, 1, 0]))
    assert out[2] == pytest.approx(0.25)


def test_ridge_without_penalty_recovers_an_exact_line_out_of_fold():
    # y = 2x + 1 exactly: least squares on any 8 of the 10 points finds the line, so every held-out
    # prediction is exact; a huge penalty shrinks the slope to 0, leaving the training folds' mean
    x = np.arange(10.0)[:, None]
    y = 2 * x[:, 0] + 1
    fold = np.arange(10) % 5
    assert probe.cv_ridge(x, y, fold, lam=0.0) == pytest.approx(y)
    means = [y[fold != k].mean() for k in fold]
    assert probe.cv_ridge(x, y, fold, lam=1e12) == pytest.approx(means)
