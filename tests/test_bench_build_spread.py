"""bench/toy_build_spread.py: the printed accuracy figures from a benchmark's correct counts."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "bench"


def _load():
    sys.path.insert(0, str(BENCH))  # the script imports toy_meta_floor, its neighbour, as a script does
    try:
        spec = importlib.util.spec_from_file_location("toy_build_spread", BENCH / "toy_build_spread.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_figures_by_hand():
    figures = _load().figures
    text = {"a": "What is 4321 + 1234?", "b": "What is 9999 + 1111?", "c": "What is 5678 - 1234?",
            "d": "What is 12 + 34?", "e": "What is 56 * 7?"}
    counts = {"a": 0, "b": 4, "c": 8, "d": 2, "e": 8}  # out of k = 8
    got = figures(counts, text, 8)
    # acc: (0 + 4 + 8 + 2 + 8) / (5 * 8) = 22 / 40 = 0.55
    assert math.isclose(got["acc"], 0.55)
    # zero_var: a (0 of 8), c and e (8 of 8) -> 3 of 5
    assert math.isclose(got["zero_var"], 0.6)
    # 4-column additions a and b: (0/8 + 4/8) / 2 = 0.25; the one 4-column subtraction c: 1.0;
    # the 2-column addition d: 2/8; no 2-column subtraction: nan (the multiplication enters no cell)
    assert math.isclose(got["+4"], 0.25) and got["-4"] == 1.0 and got["+2"] == 0.25
    assert math.isnan(got["-2"])


def test_recipe_set_reads_fields_as_json_and_names_a_bad_one():
    import pytest

    fields = _load().recipe_fields
    assert fields(["wander=0.05", "micro_batches=4", "task=chain"]) == {"wander": 0.05, "micro_batches": 4,
                                                                        "task": "chain"}
    with pytest.raises(SystemExit, match="wandr: not a toy recipe field; valid: .*wander"):
        fields(["wandr=0.1"])
    with pytest.raises(SystemExit, match="--recipe-set 'wander'"):
        fields(["wander"])
