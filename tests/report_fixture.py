"""A report's inputs built by hand (the shape `build_report` assembles from a run), for the rendering tests."""

from __future__ import annotations

from typing import Any


def bench(acc: float, se: float | None, mae: float | None, mae_se: float | None, calib: list) -> dict[str, Any]:
    b = {"accuracy": acc, "pass_at_k": {"1": acc, "4": min(1.0, acc + 0.2)}, "k": 4, "n_problems": 64,
         "meta": {"pass_rate_mae": mae, "pass_rate_mae_median": mae, "spearman": 0.5, "length_in_range": 0.7,
                  "notion": 0.4},
         "tokens": 12000, "wall_s": 3.0, "samples_per_s": 80.0,
         "calibration": [{"observed": o, "predicted": p} for o, p in calib]}
    if se is not None:
        b["accuracy_stderr"] = se
        b["meta"]["pass_rate_mae_stderr"] = mae_se
    return b


def rows(accs: list[float], tokens: list[int], maes: list[float | None], se: float | None) -> list[dict[str, Any]]:
    return [{"round": r, "train_accuracy": a - 0.05, "heldout_accuracy": a, "heldout_accuracy_stderr": se,
             "rollout_tokens": t, "meta_tokens": 0, "solution_tokens": t, "wall_s": t / 1000, "generation_s": 1.0,
             "scoring_s": 0.5, "training_s": 2.0, "gated_prompts": 3, "cutoff_samples": 5, "gating_active": True,
             "meta": {"pass_rate_mae": m, "pass_rate_mae_median": m, "parse_rate": 0.9, "reward": 0.1},
             "policy_loss": 0.1, "grad_norm": 1.0}
            for r, (a, t, m) in enumerate(zip(accs, tokens, maes, strict=True))]


def report_inputs(stderr: bool = True, promotion: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    se = 0.03 if stderr else None
    calib = {"base": [(i / 8, 0.5) for i in range(9)], "grpo": [(i / 8, 0.4 + i / 40) for i in range(9)],
             "masa": [(i / 8, i / 8 * 0.9 + 0.05) for i in range(9)]}
    results = {"base": {"benchmarks": {"toy": bench(0.40, se, 0.44, 0.02, calib["base"])}},
               "grpo": {"benchmarks": {"toy": bench(0.50, se, 0.45, 0.02, calib["grpo"])}},
               "masa": {"benchmarks": {"toy": bench(0.56, se, 0.22, 0.02, calib["masa"])}}}
    eval_ = {k: {"toy": {kk: v for kk, v in r["benchmarks"]["toy"].items() if kk != "calibration"}}
             for k, r in results.items()}
    rounds = {"grpo": rows([0.40, 0.44, 0.47], [40000, 41000, 42000], [None] * 3, se),
              "masa": rows([0.40, 0.47, 0.52], [30000, 28000, 25000], [0.45, 0.33, 0.25], se)}
    report = {
        "run": {"name": "smoke", "branches": ["grpo", "masa-efficient"], "rounds": 3, "config": {}, "created_at": "x"},
        "eval": eval_, "rounds": rounds,
        "efficiency": {"speedup_tokens": 1.6, "speedup_wall": 1.2, "speedup_tokens_target_accuracy": 0.50,
                       "speedup_tokens_why_null": None, "speedup_wall_target_accuracy": 0.50,
                       "speedup_wall_why_null": None, "tokens_saved_gating": 170000, "tokens_saved_cutoff": 12000,
                       "estimate_basis": "grpo-same-prompts"},
        "timing": {"total_s": 100.0, "overhead_s": 40.0, "compute_s": 60.0,
                   "by_kind": {"rollout": {"steps": 6, "compute_s": 30.0, "overhead_s": 20.0},
                               "report": {"steps": 1, "compute_s": 1.0, "overhead_s": 3.0}}},
        "checkpoints": {k: f"file:///tmp/a/very/long/path/{k}/" + "x" * 150 for k in results},
        "promotion": promotion,
    }
    return report, results


PROMOTION = {"decision": "promoted", "reason": "candidate beats current by 0.06 > margin 0.042",
             "model_name": "toy-masa", "version": "v3",
             "candidate": {"uri": "s3://b/models/run/masa", "accuracy": 0.56, "accuracy_stderr": 0.02,
                           "pass_rate_mae": 0.22},
             "current": {"uri": "s3://b/models/toy-masa/v2", "accuracy": 0.50, "accuracy_stderr": 0.02,
                         "pass_rate_mae": 0.30},
             "margin": 0.042}
