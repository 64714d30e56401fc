"""Held-out evaluation of the toy: standard error of avg@k and of the meta pass-rate MAE against its cost.

Runs `masa.runner.evaluate.evaluate` (the benchmark step's code, real vLLM CPU engine) on the toy's
held-out split for several (problems, k) settings, side by side from one engine start, and prints
accuracy +- stderr, meta MAE +- stderr and the seconds each costs, with the ratio to the old setting
(64 problems x k = 4). A setting PxKxM samples M meta predictions per problem instead of K
(`benchmark.meta_k`; the toy preset's 700x8x2 against its earlier 1000x8x8). Why more problems beats more samples: the standard error of avg@k over problems
is sqrt(Var(p_i) + E[p_i (1 - p_i)] / k) / sqrt(P), and the between-problem part Var(p_i) does not
shrink with k.

    MASA_CACHE_DIR=... .venv/bin/python bench/bench_eval_precision.py [--recipe toy] [--settings 64x4,500x8,1000x8,700x8x2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

from masa.data.records import load_problems  # noqa: E402
from masa.engines import EngineConfig, make_engine  # noqa: E402
from masa.runner.evaluate import EvalSettings, evaluate  # noqa: E402
from masa.toy import build, get_recipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="toy")
    ap.add_argument("--root", default=None, help="a built toy directory (<cache>/<hash>) to measure instead of "
                                                 "building the recipe; read only")
    ap.add_argument("--settings", default="64x4,64x8,500x8,1000x4,1000x8", help="PROBLEMSxK or PROBLEMSxKxMETA_K, comma-separated")
    args = ap.parse_args()
    recipe = get_recipe(args.recipe)
    root = Path(args.root) if args.root else build(recipe).root
    problems, _ = load_problems(str(root / "data" / "heldout.parquet"), split="test")
    t = time.monotonic()
    engine = make_engine(EngineConfig(model=str(root / "model"), dtype="float32", seed=0,
                                      max_model_len=recipe.max_model_len))
    print(f"toy {root.name}: {len(problems)} held-out problems; engine start {time.monotonic() - t:.1f}s; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    rows = []
    try:
        for setting in args.settings.split(","):
            n, k, *meta_k = (int(x) for x in setting.split("x"))
            s = EvalSettings(k=k, meta_k=meta_k[0] if meta_k else None, temperature=1.0, max_tokens=recipe.max_response_tokens, n_solution=recipe.n_solution,
                             max_prompt_tokens=256, seed=0, meta_max_tokens=recipe.max_response_tokens)
            t = time.monotonic()
            sol = evaluate(engine, problems[:n], s, meta=False)  # the rounds' held-out measurement
            sol_s = time.monotonic() - t
            t = time.monotonic()
            full = evaluate(engine, problems[:n], s, meta=True)  # the benchmark step's
            full_s = time.monotonic() - t
            rows.append((f"{full['n_problems']}x{k}" + (f"x{meta_k[0]}" if meta_k else ""), sol, sol_s, full, full_s))
    finally:
        engine.close()
    base_sol, base_full = rows[0][2], rows[0][4]
    print(f"{'P x k':>10} {'avg@k':>7} {'stderr':>7} {'meta MAE':>9} {'stderr':>7} {'parse':>6} "
          f"{'sol s':>7} {'x':>5} {'bench s':>8} {'x':>5}")
    for setting, _sol, sol_s, full, full_s in rows:
        m = full["meta"]
        print(f"{setting:>10} {full['accuracy']:7.3f} {full['accuracy_stderr']:7.4f} {m['pass_rate_mae']:9.3f} "
              f"{m['pass_rate_mae_stderr']:7.4f} {m['parse_rate']:6.3f} {sol_s:7.1f} {sol_s / base_sol:5.1f} "
              f"{full_s:8.1f} {full_s / base_full:5.1f}")


if __name__ == "__main__":
    main()
