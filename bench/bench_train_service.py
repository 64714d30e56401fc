"""A warm `masa run` train step with and without the trainer service (masa.train.service), side by side.

This process makes itself what masa.pipeline.warm makes a task (the warm server's modules imported, no
tensor op run, declared fork-safe, a services folder), then trains K consecutive toy rounds of a
finished `make run` (each from the previous one's output, on the stored scored rows of that round) two
ways, alternately: ranks forked for each round, restoring the previous round's published state (what
every warm train step did before the service); and through a trainer service, whose ranks continue
from the engine they hold. It prints each round's wall time (the whole `train_round` call: staging,
ranks, training, publishing), the medians over rounds 2..K (round 1 builds the engine either way), and
whether the two chains' final weights are equal.

    .venv/bin/python bench/bench_train_service.py                       # runs/toy, both branches
    .venv/bin/python bench/bench_train_service.py --run OUT --first 3 --rounds 4 --reps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from masa.engines.service import SERVICES_ENV
from masa.pipeline.warm import PRELOAD
from masa.train import launch


def preload() -> None:
    """Import what the warm server imports before it forks a task (masa.pipeline.warm.PRELOAD): a rank
    forked without the modules that DeepSpeed and the model's class import lazily pays for them every
    round (a first version of this bench did, and overstated the service's gain about eightfold)."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def stored(run: Path, branch: str, rnd: int) -> tuple[str, str | None]:
    """(scored rows, experts) of `branch`'s round `rnd` in a finished run's local store."""
    stores = sorted((run / "store").glob("*/"))
    if not stores:
        raise SystemExit(f"bench_train_service: no store under {run}: run `make run` (or pass --run OUT) first")
    scored = stores[-1] / branch / f"round-{rnd:03d}" / "scored"
    if not (scored / "scored.parquet").is_file():
        raise SystemExit(f"bench_train_service: {scored} is missing: is round {rnd} of {branch} finished?")
    experts = scored / "experts.parquet"
    return str(scored / "scored.parquet"), str(experts) if experts.exists() else None


def chain(run: Path, branch: str, first: int, rounds: int, service: str | None, nproc: int) -> tuple[list[float], Path]:
    """Train rounds first..first+rounds-1 of `branch`, each from the last one's output; (seconds, last out)."""
    from masa.config import load_config
    from masa.runner.settings import train_settings
    from masa.runner.training import train_round

    cfg = load_config("toy")
    stores = sorted((run / "store").glob("*/"))
    model = str(stores[-1] / branch / f"round-{first - 1:03d}" / "checkpoint")
    root = Path(tempfile.mkdtemp(prefix="bench-svc-"))
    times = []
    for r in range(first, first + rounds):
        scored, experts = stored(run, branch, r)
        out = root / f"round-{r:03d}"
        t0 = time.perf_counter()
        train_round(model, scored, experts, str(out), train_settings(cfg, branch, r), nproc=nproc, chain=service)
        times.append(time.perf_counter() - t0)
        model = str(out)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/toy"), help="a finished toy run's output dir")
    ap.add_argument("--branches", default="grpo,masa-efficient")
    ap.add_argument("--first", type=int, default=3, help="first round trained (>= 1)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    preload()
    launch.allow_forked_ranks()
    os.environ[SERVICES_ENV] = f"{tempfile.mkdtemp(prefix='bench-svc-')}:{os.getpid()}"
    print(f"{'branch':<15} {'how':<8} {'rep':>3}  seconds per round")
    for branch in args.branches.split(","):
        secs: dict[str, list[float]] = {"forked": [], "service": []}
        outs: dict[str, Path] = {}
        for rep in range(args.reps):
            for how in ("forked", "service") if rep % 2 == 0 else ("service", "forked"):
                service = f"bench-{branch}-{rep}" if how == "service" else None  # a fresh service each rep
                times, outs[how] = chain(args.run, branch, args.first, args.rounds, service, args.nproc)
                print(f"{branch:<15} {how:<8} {rep:>3}  " + " ".join(f"{t:5.2f}" for t in times), flush=True)
                secs[how] += times[1:]
        forked, served = statistics.median(secs["forked"]), statistics.median(secs["service"])
        same = (outs["forked"] / "model.safetensors").read_bytes() == (outs["service"] / "model.safetensors").read_bytes()
        print(f"{branch}: rounds 2..{args.rounds} median {forked:.2f} s with forked ranks, {served:.2f} s through "
              f"the service: {served / forked:.2f}x (saves {forked - served:.2f} s a round); "
              f"final weights {'equal' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
