"""bench/toy_meta_rounds.py: the per-round readings of the meta path (hand-computed values)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

_spec = importlib.util.spec_from_file_location("toy_meta_rounds",
                                               Path(__file__).parent.parent / "bench" / "toy_meta_rounds.py")
rounds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rounds)


def test_pairwise_spread_and_bins():
    # pairs of 0, 0.5, 1: |0 - 0.5| + |0 - 1| + |0.5 - 1| = 2 over 3 pairs
    assert rounds.pairwise_spread([0.0, 0.5, 1.0]) == pytest.approx(2 / 3)
    assert rounds.pairwise_spread([0.5]) is None
    # G = 8: 0 | 1..4 | 5..7 | 8
    assert [rounds.count_bin(c, 8) for c in (0, 1, 4, 5, 7, 8)] == ["0", "low", "low", "high", "high", "all"]


def test_round_row():
    # G = 2. Prompt a: both solutions right (observed 1.0), parsed predictions 2 and 0 of 2 (1.0, 0.0) and
    # one unparsed row, which no figure counts. Prompt b: both wrong (0.0), predictions 0 and 1 (0, 0.5).
    rows = [("a", "solution", 1, None, None), ("a", "solution", 1, None, None),
            ("a", "meta", None, 2, None), ("a", "meta", None, 0, None), ("a", "meta", None, 2, "no JSON"),
            ("b", "solution", 0, None, None), ("b", "solution", 0, None, None),
            ("b", "meta", None, 0, None), ("b", "meta", None, 1, None)]
    df = pd.DataFrame(rows, columns=["prompt_id", "path", "correct", "meta_pass_rate", "meta_parse_error"])
    r = rounds.round_row(df, {"a"}, 2)
    # 0 in a's second and b's first parsed row (2/5 with the unparsed)
    assert r["zero"] == pytest.approx(2 / 4)
    assert r["rho"] == pytest.approx(1.0)  # mean predictions a 0.5 > b 0.25, observed a 1 > b 0
    assert r["pred"] == pytest.approx(0.375) and r["obs"] == pytest.approx(0.5)
    assert r["spread"] == pytest.approx(0.75)  # a: |1 - 0| = 1, b: |0 - 0.5| = 0.5
    assert r["experts"] == {"0": [0, 1], "low": [0, 0], "high": [0, 0], "all": [1, 1]}
