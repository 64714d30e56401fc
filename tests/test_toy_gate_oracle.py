"""bench/toy_gate_oracle.py: the gates it compares and the figures it prints (hand-computed values)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_spec = importlib.util.spec_from_file_location("toy_gate_oracle",
                                               Path(__file__).parent.parent / "bench" / "toy_gate_oracle.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)


def test_leave_one_out_share_of_each_cell():
    # cell a holds zero-variance flags 1, 1, 0: each prompt sees the other two, so 1/2, 1/2 and 2/2;
    # cell b has one prompt and no other to learn from: 0.5
    loo = oracle.leave_one_out(["a", "a", "a", "b"], np.array([1, 1, 0, 1]))
    assert loo.tolist() == [0.5, 0.5, 1.0, 0.5]


def test_rules_on_five_prompts():
    preds = [[0, 0, 1, 0],  # median 0: the gate skips it; not every sample says 0
             [0, 0, 0, 0],  # median 0 and unanimous
             [8, 8, 7, 8],  # median 8 (all right): skipped, not unanimous
             [3, 4],        # median 3.5: kept
             []]            # no parsed prediction: never gated
    loo = np.array([0.9, 0.1, 0.85, 0.5, 0.7])
    r = oracle.rules(preds, loo)
    assert r["the gate (median 0 or G)"].tolist() == [True, True, True, False, False]
    assert r["unanimous"].tolist() == [False, True, False, False, False]
    # as many as the gate (3), the highest leave-one-out shares: 0.9, 0.85, 0.7
    assert r["cell oracle, same count"].tolist() == [True, False, True, False, True]
    assert r["sure cells (LOO >= 0.8)"].tolist() == [True, False, True, False, False]


def test_figures_of_one_rule():
    # 4 prompts, the first two gated; zero-variance: the first and the third. Precision 1 of 2; tokens
    # S = 100, gated 10 + 20 = 30, M = 10: 100 / (100 - 30 + 10) = 1.25; mixed groups are the second and
    # the fourth, the gate drops the second: 1 of 2 lost
    f = oracle.figures(np.array([True, True, False, False]), np.array([True, False, True, False]),
                       np.array([10.0, 20.0, 30.0, 40.0]), 10.0)
    assert f == pytest.approx({"gated": 0.5, "precision": 0.5, "tokens": 1.25, "lost": 0.5})


def test_rounds_reads_the_newest_branch_and_keeps_whole_groups(tmp_path):
    def scored(rows):
        return pd.DataFrame(rows, columns=["prompt_id", "path", "problem", "correct", "response_token_ids",
                                           "meta_pass_rate"])
    old = tmp_path / "store" / "run-old" / "masa-efficient" / "round-000" / "scored"
    new = tmp_path / "store" / "run-new" / "masa-efficient" / "round-000" / "scored"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    scored([("x", "solution", "What is 1 + 1?", True, [1], None)] * 8).to_parquet(old / "scored.parquet")
    rows = ([("p", "solution", "What is 2 + 2?", i < 3, [1, 2], None) for i in range(8)]       # 3 of 8 right
            + [("p", "meta", "What is 2 + 2?", None, [5], v) for v in (3.0, float("nan"))]  # one unparsed; 1 token each
            + [("q", "solution", "What is 3 + 3?", False, [1], None) for _ in range(8)]      # all wrong, no meta
            + [("r", "solution", "What is 4 + 4?", True, [1], None) for _ in range(5)])      # not a whole group
    scored(rows).to_parquet(new / "scored.parquet")
    import os
    os.utime(old.parents[2] / "masa-efficient", (0, 0))  # the older run's branch directory
    d = oracle.rounds(tmp_path).set_index("problem")
    assert sorted(d.index) == ["What is 2 + 2?", "What is 3 + 3?"]
    p, q = d.loc["What is 2 + 2?"], d.loc["What is 3 + 3?"]
    assert (p.c, p.t, p.mt, p.preds, bool(p.zv)) == (3, 16, 2, [3.0], False)
    assert (q.c, q.preds, bool(q.zv)) == (0, [], True)
