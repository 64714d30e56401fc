"""Training a toy round with and without its inert samples (advantage 0 on every token), side by side.

A zero-variance group's rollouts (all right or all wrong) get advantage 0: their policy-gradient term is
0 at any ratio, so with no KL and no entropy term they add nothing to the gradient, and `train.skip_inert`
(default on) leaves them out of the forward and backward passes while keeping them in the loss's
denominators. This runs the same round (a stored round of a finished `make run`: its input checkpoint,
scored rows and experts) both ways, alternately, and prints the optimizer steps' seconds, the whole
round's wall time and how far apart the two resulting weights are.

    .venv/bin/python bench/bench_train_skip.py                          # runs/toy, both branches, round 5
    .venv/bin/python bench/bench_train_skip.py --run OUT --round 3 --reps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path


def stored_round(run: Path, branch: str, rnd: int) -> tuple[str, str, str | None]:
    """(input checkpoint, scored rows, experts) of `branch`'s round `rnd` (1-based in the store's names:
    round-00k trains from round-00(k-1)'s checkpoint) in a finished run's local store."""
    stores = sorted((run / "store").glob("*/"))
    if not stores:
        raise SystemExit(f"bench_train_skip: no store under {run}: run `make run` (or pass --run OUT) first")
    root = stores[-1] / branch
    model = root / f"round-{rnd - 1:03d}" / "checkpoint"
    scored = root / f"round-{rnd:03d}" / "scored" / "scored.parquet"
    experts = root / f"round-{rnd:03d}" / "scored" / "experts.parquet"
    for p in (model, scored):
        if not p.exists():
            raise SystemExit(f"bench_train_skip: {p} is missing: is round {rnd} of {branch} finished in {run}?")
    return str(model), str(scored), str(experts) if experts.exists() else None


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def main() -> None:
    from masa.config import load_config
    from masa.runner.settings import train_settings
    from masa.runner.training import train_round

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/toy"), help="a finished toy run's output dir")
    ap.add_argument("--branches", default="grpo,masa-efficient")
    ap.add_argument("--round", type=int, default=5, help="round whose training is repeated (>= 1)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    cfg = load_config("toy")
    print(f"{'branch':<15} {'skip':<5} {'rep':>3} {'steps s':>8} {'wall s':>7} {'skipped':>8} {'opt steps':>9}")
    totals: dict[tuple[str, bool], list[float]] = {}
    for branch in args.branches.split(","):
        model, scored, experts = stored_round(args.run, branch, args.round)
        base = train_settings(cfg, branch, args.round)
        outs: dict[bool, Path] = {}
        for rep in range(args.reps):
            for skip in (False, True) if rep % 2 == 0 else (True, False):
                out = Path(tempfile.mkdtemp(prefix="bench-skip-")) / "out"
                t0 = time.perf_counter()
                res = train_round(model, scored, experts, str(out), dataclasses.replace(base, skip_inert=skip),
                                  nproc=args.nproc)
                wall = time.perf_counter() - t0
                steps = sum(r["seconds"] for r in res["steps"])
                n_skipped = sum(r.get("skipped_samples", 0) for r in res["steps"])
                print(f"{branch:<15} {str(skip):<5} {rep:>3} {steps:8.1f} {wall:7.1f} {n_skipped:8d} "
                      f"{len(res['steps']):9d}", flush=True)
                totals.setdefault((branch, skip), []).append(steps)
                outs[skip] = out
        full, lean = statistics.median(totals[(branch, False)]), statistics.median(totals[(branch, True)])
        print(f"{branch}: optimizer steps median {full:.1f} s computing every sample, {lean:.1f} s skipping "
              f"inert ones: {lean / full:.2f}x; max |weight difference| {max_weight_diff(outs[False], outs[True]):.2e}")


if __name__ == "__main__":
    main()
