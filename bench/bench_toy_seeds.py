"""The toy run's headline figures over seeds (issue 15): is what `make run` shows a result or one draw?

    .venv/bin/python bench/bench_toy_seeds.py [--seeds 0 1 2] [--set KEY=VALUE ...] [--out DIR]
    .venv/bin/python bench/bench_toy_seeds.py --reports A/report.json B/report.json ...   # finished runs

For each seed S, `masa run --preset toy --set seed=S --set toy_seed=S` (another toy build and task draw,
and other run seeds: prompts, sampling, shuffles), in DIR/seed-S (default a new temporary directory; a
finished seed is reused, as `masa run` reuses its steps). Each run builds its own toy (3.4-3.8 min on 2
cores for the preset, 2026-12-06) and takes about as long as `make run`. Prints per seed, then mean /
min / max:

- acc_base       the base model's held-out avg@k: how far the toy draw sits from pass rate 0
- mae_ratio      MASA-efficient's held-out meta pass-rate MAE / GRPO's (issue 15: <= 0.5)
- mae_ci         1.96 standard errors of mae_ratio over the run's held-out problems (delta method from the two
                 MAEs' standard errors, their covariance left out: wider than the truth when the two
                 checkpoints err on the same problems); "-" in reports without the standard errors
- mae_vs_const   MASA-efficient's meta MAE / the constant's MAE on its benchmark (the observed rates'
                 median for every problem; below 1: the meta path predicts better than that constant).
                 An untrained meta path's MAE is the mae_ratio's denominator, so where the model fails most
                 problems mae_ratio can meet 0.5 with a meta path that does worse than always guessing 0
- const_ratio    that constant's MAE / GRPO's: the mae_ratio a meta path would score that learned only the
                 constant, so mae_ratio = const_ratio x mae_vs_const. The first factor is the toy draw's
                 (its pass rates' spread against an untrained meta path's), the second what was learnt
- acc_diff       MASA-efficient's held-out avg@k minus GRPO's, in points (issue 15: >= -1)
- speedup_tok    GRPO's rollout tokens to its final held-out accuracy / MASA-efficient's (>= 1.5)
- speedup_wall   the same in wall time (>= 1.3); "-" where the report says why it is undefined
- target_ci      1.96 standard errors of GRPO's final check accuracy, the target both speedups time
- unkept         1 where MASA-efficient reached that target but its own final check ended below it (the
                 report's speedup_note: a crossing within the check's noise), 0 where it kept it, "-"
                 where the speedups are undefined
- saved_gating   solution tokens that gating saved (the report's estimate), whole run
- saved_cutoff   tokens that early cutoff saved, whole run
- meta_share     meta tokens / all rollout tokens of the MASA-efficient branch, whole run
- meta_base      the same in its first round, whose policy is the base model (issue 15: <= 0.15)
- zero_var_base  share of the first GRPO round's prompts whose G solutions are all wrong or all right
                 (no GRPO signal; issue 15: 0.30-0.60 at the base model)
- ceiling_tok    the most a first round's costs allow MASA-efficient to save in tokens: its solution
                 tokens / (those of groups that give GRPO a signal + its meta tokens), i.e. predictive
                 gating that skips exactly the zero-variance prompts and learning per round equal to
                 GRPO's (early cutoff left out). Below 1, MASA-efficient cannot reach an accuracy with
                 fewer rollout tokens than GRPO, however well it predicts; the 1.5x bar needs it >= 1.5
- run_s, overhead  the run's wall time (report timing.total_s) and its overhead share

Below the seeds: mean, min, max, and `sem`, the standard error of the mean over the seeds (their standard
deviation / sqrt(n)): how far a bar on the mean can be trusted, since seeds differ by more (another toy
build and task draw) than one run's problems let a figure move.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

COLUMNS = ("acc_base", "mae_ratio", "mae_ci", "mae_vs_const", "const_ratio", "acc_diff", "speedup_tok",
           "speedup_wall", "target_ci", "unkept", "saved_gating", "saved_cutoff", "meta_share", "meta_base",
           "zero_var_base", "ceiling_tok", "run_s", "overhead")


def figures(report: dict) -> dict[str, float | None]:
    """The columns above from one report.json."""
    ev, eff, t = report["eval"], report["efficiency"], report.get("timing", {})
    masa_key = next(k for k in ev if k not in ("base", "grpo"))
    (grpo,), (masa,) = ev["grpo"].values(), ev[masa_key].values()
    rows = report["rounds"][masa_key]
    tokens = sum(r.get("rollout_tokens", 0) for r in rows)
    meta = sum(r.get("meta_tokens", 0) for r in rows)
    total = t.get("total_s")
    first = rows[0] if rows else {}
    ratio = masa["meta"]["pass_rate_mae"] / grpo["meta"]["pass_rate_mae"]
    const = masa["meta"].get("pass_rate_mae_constant")  # None in reports before 2026-12-05
    return {
        "acc_base": next(iter(ev["base"].values()))["accuracy"] if ev.get("base") else None,
        "mae_ratio": ratio,
        "mae_ci": ratio_interval(ratio, masa["meta"], grpo["meta"]),
        "mae_vs_const": masa["meta"]["pass_rate_mae"] / const if const else None,  # masa.runner.evaluate
        "const_ratio": const / grpo["meta"]["pass_rate_mae"] if const else None,
        "acc_diff": 100 * (masa["accuracy"] - grpo["accuracy"]),
        "speedup_tok": eff.get("speedup_tokens"),
        "speedup_wall": eff.get("speedup_wall"),
        "target_ci": eff.get("speedup_target_interval"),  # None in reports before 2026-12-05
        "unkept": (None if eff.get("speedup_tokens") is None and eff.get("speedup_wall") is None
                   else float(eff.get("speedup_note") is not None)),
        "saved_gating": eff.get("tokens_saved_gating"),
        "saved_cutoff": eff.get("tokens_saved_cutoff"),
        "meta_share": meta / tokens if tokens else None,
        "meta_base": first["meta_tokens"] / first["rollout_tokens"] if first.get("rollout_tokens") else None,
        "zero_var_base": report["rounds"]["grpo"][0].get("zero_variance_share"),  # None in older reports
        "ceiling_tok": eff.get("speedup_tokens_ceiling"),  # masa.steps.report.speedup_ceiling
        "run_s": total,
        "overhead": t["overhead_s"] / total if total else None,
    }


def ratio_interval(ratio: float, masa: dict, grpo: dict) -> float | None:
    """1.96 standard errors of MAE_masa / MAE_grpo: se(R) = R sqrt((se_m / m)^2 + (se_g / g)^2)."""
    terms = [(m.get("pass_rate_mae_stderr"), m["pass_rate_mae"]) for m in (masa, grpo)]
    if any(se is None or not mae for se, mae in terms):
        return None
    return 1.96 * ratio * sum((se / mae) ** 2 for se, mae in terms) ** 0.5


def sem(values: list[float]) -> float | None:
    """Standard error of the mean over seeds; None for one seed (no spread to measure)."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def run_seed(seed: int, sets: list[str], out: Path) -> Path:
    report = out / "report" / "report.json"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    args = [f"seed={seed}", f"toy_seed={seed}", *sets]
    print(f"seed {seed}: masa run --preset toy {' '.join('--set ' + a for a in args)} --out {out}", flush=True)
    r = subprocess.run([sys.executable, "-m", "masa.cli", "run", "--preset", "toy",
                        *[x for a in args for x in ("--set", a)], "--out", str(out)], env=env)
    if r.returncode != 0 or not report.is_file():
        sys.exit(f"seed {seed}: masa run failed (rc {r.returncode}); rerun the bench to resume it")
    return report


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def table(per_seed: dict[str, dict[str, float | None]]) -> str:
    lines = [f"{'run':<8}" + "".join(f"{c:>14}" for c in COLUMNS)]
    for name, f in per_seed.items():
        lines.append(f"{name:<8}" + "".join(f"{_fmt(f[c]):>14}" for c in COLUMNS))
    for label, agg in (("mean", statistics.fmean), ("min", min), ("max", max), ("sem", sem)):
        cells = []
        for c in COLUMNS:
            vals = [f[c] for f in per_seed.values() if f[c] is not None]
            cells.append(_fmt(agg(vals)) if vals else "-")
        lines.append(f"{label:<8}" + "".join(f"{x:>14}" for x in cells))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config override, every seed")
    ap.add_argument("--out", type=Path, help="one directory per seed under it (default: a new temporary one)")
    ap.add_argument("--reports", type=Path, nargs="+", help="tabulate these report.json files, run nothing")
    a = ap.parse_args()
    if a.reports:
        reports = {f"run{i}": p for i, p in enumerate(a.reports)}
        for name, p in reports.items():
            print(f"{name}: {p}")
    else:
        out = a.out or Path(tempfile.mkdtemp(prefix="masa-toy-seeds-"))
        reports = {str(s): run_seed(s, a.sets, out / f"seed-{s}") for s in a.seeds}
    print(table({name: figures(json.loads(p.read_text())) for name, p in reports.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
