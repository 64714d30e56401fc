"""bench/bench_toy_seeds.py: the cost-structure columns, from a report's first rounds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("bench_toy_seeds",
                                               Path(__file__).parents[1] / "bench" / "bench_toy_seeds.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _round(solution, meta, zero_share=None, zero_tokens=None):
    return {"solution_tokens": solution, "meta_tokens": meta, "rollout_tokens": solution + meta,
            "zero_variance_share": zero_share, "zero_variance_tokens": zero_tokens}


def test_figures_read_the_first_rounds():
    ev = {"accuracy": 0.5, "meta": {"pass_rate_mae": 0.4}}
    report = {
        "eval": {"base": {"b": {"accuracy": 0.45}}, "grpo": {"b": ev}, "masa": {"b": {"accuracy": 0.49, "meta": {"pass_rate_mae": 0.2,
                                                                                           "pass_rate_mae_constant": 0.16}}}},
        "efficiency": {"speedup_tokens_ceiling": 0.9},
        "timing": {"total_s": 100.0, "overhead_s": 10.0},
        # round 0 is the base model's; round 1 (already trained) must not enter the base columns
        "rounds": {"grpo": [_round(800, 0, zero_share=0.5), _round(700, 0, zero_share=0.1)],
                   "masa": [_round(600, 400, zero_tokens=300), _round(100, 900, zero_tokens=0)]},
    }
    f = bench.figures(report)
    assert f["mae_ratio"] == pytest.approx(0.5) and f["acc_diff"] == pytest.approx(-1.0)
    # half the untrained path's MAE, yet 1.25x what one pass rate for every problem would score
    assert f["mae_vs_const"] == pytest.approx(0.2 / 0.16)
    # the constant alone would have scored 0.16 / 0.4 = 0.4x; the product gives back mae_ratio
    assert f["const_ratio"] == pytest.approx(0.4)
    assert f["const_ratio"] * f["mae_vs_const"] == pytest.approx(f["mae_ratio"])
    assert f["acc_base"] == 0.45  # the base checkpoint's, not GRPO's 0.5
    assert f["meta_base"] == pytest.approx(400 / 1000)  # not the whole run's (400 + 900) / 2000
    assert f["meta_share"] == pytest.approx(1300 / 2000)
    assert f["zero_var_base"] == 0.5
    assert f["ceiling_tok"] == 0.9  # the report's (masa.steps.report.speedup_ceiling, tested there)
    assert f["unkept"] is None  # no speedup, so no crossing to keep or not


@pytest.mark.parametrize(("eff", "unkept"), [
    ({"speedup_tokens": 1.2, "speedup_note": "MASA-efficient reached ... ended below it"}, 1.0),
    ({"speedup_wall": 0.9, "speedup_note": None}, 0.0),
    ({"speedup_tokens": None, "speedup_wall": None, "speedup_note": None}, None),
])
def test_unkept_marks_a_speedup_whose_crossing_the_run_did_not_keep(eff, unkept):
    ev = {"accuracy": 0.5, "meta": {"pass_rate_mae": 0.4}}
    report = {"eval": {"base": {"b": ev}, "grpo": {"b": ev}, "masa": {"b": ev}},
              "efficiency": {**eff, "speedup_target_interval": 0.03}, "timing": {},
              "rounds": {"grpo": [_round(800, 0)], "masa": [_round(600, 400)]}}
    f = bench.figures(report)
    assert f["unkept"] == unkept and f["target_ci"] == 0.03


def test_mae_ratio_interval_by_the_delta_method():
    # R = 0.27 / 0.40 = 0.675; relative errors 0.009 / 0.27 = 1/30 and 0.008 / 0.40 = 1/50, so
    # se(R) = 0.675 sqrt(1/900 + 1/2500) = 0.675 * 0.038873 = 0.026239, and 1.96 of them 0.051429
    masa, grpo = {"pass_rate_mae": 0.27, "pass_rate_mae_stderr": 0.009}, {"pass_rate_mae": 0.40, "pass_rate_mae_stderr": 0.008}
    assert bench.ratio_interval(0.675, masa, grpo) == pytest.approx(0.051429, abs=1e-6)
    assert bench.ratio_interval(0.675, {"pass_rate_mae": 0.27}, grpo) is None  # an older report


def test_sem_over_seeds():
    # the preset's three seeds (2026-12-06): 0.669, 0.341, 0.526; mean 0.512, deviations 0.157, -0.171,
    # 0.014; sample variance (0.024649 + 0.029241 + 0.000196) / 2 = 0.027043; sd 0.164448; / sqrt 3 = 0.094944
    assert bench.sem([0.669, 0.341, 0.526]) == pytest.approx(0.094944, abs=1e-6)
    assert bench.sem([0.5]) is None
    table = bench.table({"0": dict.fromkeys(bench.COLUMNS, 1.0), "1": dict.fromkeys(bench.COLUMNS, 3.0)})
    assert table.splitlines()[-1].split()[:2] == ["sem", "1"]  # sd sqrt 2 / sqrt 2
