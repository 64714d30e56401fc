"""Where each pipeline step's time goes (issue 16): per step kind, the seconds before its first useful
work (KFP starting the process, interpreter and imports, engine or DeepSpeed start, store reads) and
after it (store writes, KFP bookkeeping), from one `masa run` under kfp.local.

    .venv/bin/python bench/bench_step_overhead.py                          # toy preset, 1 round, MASA only
    .venv/bin/python bench/bench_step_overhead.py --preset smoke           # the test preset (2 ranks)
    .venv/bin/python bench/bench_step_overhead.py --log OUT/pipeline.log   # a finished run's log, no run
    .venv/bin/python bench/bench_step_overhead.py --micro                  # imports and launch only (no run)

Sources, all from the run's pipeline.log: kfp.local's own lines (`Executing task` / `Task ... finished`,
millisecond stamps), and each step's `MASA-PROGRESS` line, whose `clock` holds when the step's process
started, when the line was printed (after the step's store writes), and the step's stats: `started_at`/
`finished_at` around its part's production (masa.steps.layout.run_once), the engine's `startup_s`, and
the work itself: rollout `wall_s` (+ the held-out generation), training `wall_s` (the optimizer steps),
benchmark `generation_s`, scoring its whole part. Columns, per task, averaged per kind:

    kfp<   KFP before the step's process exists (executor input, spawn)
    boot   process start -> `started_at`: interpreter, imports, config, fingerprints (store reads)
    prep   inside the part, not work: model download, engine start / DeepSpeed launch and load, staging
    work   the step's useful work
    post   `finished_at` -> progress line: publishing the part to the store, pointers, KFP metrics
    kfp>   progress line -> KFP's `finished`: interpreter exit, KFP output bookkeeping

A step without part stamps (configure, data filter, report, ...) shows its in-process time under boot.

`--micro` measures two parts of boot and prep on their own, median of --reps fresh interpreters: what
each step kind's process imports (kfp's executor and the modules its component body loads) and which
heavy packages that brings, and the one-rank training launch, torchrun's agent against the worker
started directly (an interpreter that imports torch and torch.distributed, as a worker does first).
The toy model build is outside the steps (cached by recipe; `masa toy build` first for a warm cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) - \w+ - (.*)$")
COLUMNS = ("kfp<", "boot", "prep", "work", "post", "kfp>")


def _epoch(hms: str, day: dt.date) -> float:
    t = dt.datetime.strptime(f"{day.isoformat()} {hms}", "%Y-%m-%d %H:%M:%S.%f")
    return t.timestamp()  # kfp.local stamps in local time, as datetime.fromtimestamp does


def _near(hms: str, ref: float | None, day: dt.date) -> float:
    """kfp.local's time-of-day stamp as an epoch: on the day (before, of or after `ref`'s local date)
    that puts it nearest to `ref`, a clock of the step's own; a run that crosses midnight has stamps
    of two days. Without a clock, on `day`."""
    if ref is None:
        return _epoch(hms, day)
    d = dt.datetime.fromtimestamp(ref).date()
    return min((_epoch(hms, d + dt.timedelta(days=k)) for k in (-1, 0, 1)), key=lambda t: abs(t - ref))


def parse_log(text: str, day: dt.date) -> list[dict]:
    """One dict per finished step task: kfp start/end stamps and its progress line's info."""
    tasks, current = [], None
    for raw in text.splitlines():
        line = ANSI.sub("", raw)
        m = STAMP.match(line.strip())
        if m and "Executing task " in m.group(2):
            current = {"task": m.group(2).split("Executing task ", 1)[1].strip("' "), "h0": m.group(1)}
        elif m and "finished with status" in m.group(2) and current is not None:
            if "info" in current:
                clock = current["info"].get("clock", {})
                printed = clock.get("printed")
                current["t0"] = _near(current.pop("h0"), clock.get("process_start") or printed, day)
                current["t1"] = _near(m.group(1), printed, day)
                tasks.append(current)
            current = None
        elif current is not None and (i := line.find("MASA-PROGRESS ")) >= 0:
            try:
                current["info"] = json.loads(line[i + len("MASA-PROGRESS "):])
            except json.JSONDecodeError:
                pass
    return tasks


def work_s(kind: str, c: dict) -> float:
    """The step's useful work, from its stats (see the module docstring)."""
    if kind == "rollout":
        return c.get("wall_s", 0.0) + c.get("heldout.wall_s", c.get("heldout.generation_s", 0.0))
    if kind == "train":
        return c.get("wall_s", 0.0)
    if kind == "benchmark":
        return sum(v for k, v in c.items() if k.endswith("generation_s"))
    if kind == "score" and "started_at" in c:
        return c["finished_at"] - c["started_at"]
    return 0.0


def split(task: dict) -> dict[str, float]:
    info, c = task["info"], task["info"].get("clock", {})
    if info.get("step") == "benchmark" and "started_at" not in c and "wall_s" in c:
        # its stamps sit in the results it writes, not in the line: its work is its evaluation's wall_s
        c = {**c, "started_at": c["printed"] - c["wall_s"], "finished_at": c["printed"],
             "generation_s": c["wall_s"]}
    start = c.get("process_start") or task["t0"]
    printed = c.get("printed", task["t1"])
    row = dict.fromkeys(COLUMNS, 0.0)
    row["kfp<"], row["kfp>"] = start - task["t0"], task["t1"] - printed
    if info.get("reused") or "started_at" not in c:
        row["boot"] = printed - start  # a cache hit or a step without part stamps: not split further
        return row
    row["work"] = min(work_s(info["step"], c), c["finished_at"] - c["started_at"])
    row["boot"] = c["started_at"] - start
    row["prep"] = c["finished_at"] - c["started_at"] - row["work"]
    row["post"] = printed - c["finished_at"]
    return row


def table(tasks: list[dict]) -> str:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        by_kind[t["info"]["step"]].append(split(t))
    head = f"{'step kind':<12} {'n':>3} {'task s':>7} " + " ".join(f"{c:>6}" for c in COLUMNS) + f" {'before':>7} {'after':>6} {'overhead':>8}"
    lines = [head, "-" * len(head)]
    total = defaultdict(float)
    for kind, rows in sorted(by_kind.items(), key=lambda kv: -sum(sum(r.values()) for r in kv[1])):
        mean = {c: sum(r[c] for r in rows) / len(rows) for c in COLUMNS}
        task = sum(mean.values())
        before, after = mean["kfp<"] + mean["boot"] + mean["prep"], mean["post"] + mean["kfp>"]
        for c in COLUMNS:
            total[c] += mean[c] * len(rows)
        lines.append(f"{kind:<12} {len(rows):>3} {task:>7.1f} " + " ".join(f"{mean[c]:>6.1f}" for c in COLUMNS)
                     + f" {before:>7.1f} {after:>6.1f} {1 - mean['work'] / task if task else 0:>8.0%}")
    all_s = sum(total.values())
    lines.append("-" * len(head))
    lines.append(f"{'all steps':<12} {len(tasks):>3} {all_s:>7.1f} " + " ".join(f"{total[c]:>6.1f}" for c in COLUMNS)
                 + f" {total['kfp<'] + total['boot'] + total['prep']:>7.1f} {total['post'] + total['kfp>']:>6.1f}"
                 + f" {1 - total['work'] / all_s if all_s else 0:>8.0%}")
    if blind := sum("clock" not in t["info"] for t in tasks):
        lines.append(f"{blind} task(s) without a clock on their progress line (older code): whole task under boot")
    span = max(t["t1"] for t in tasks) - min(t["t0"] for t in tasks)
    lines.append(f"pipeline wall (first task start -> last task end): {span:.1f} s; steps' work {total['work']:.1f} s"
                 f" = {total['work'] / span:.0%} of it")
    return "\n".join(lines)


# what kfp's executor and each component body import (components/*.py), per step kind
STEP_IMPORTS = {
    "rollout": ["masa.components.rollout", "masa.steps.rollout", "masa.runner.rollout", "masa.engines.vllm_engine"],
    "score": ["masa.components.score", "masa.steps.score", "masa.runner.scoring", "masa.algo.verifier"],
    "train": ["masa.components.train", "masa.steps.train", "masa.runner.training"],
    "benchmark": ["masa.components.benchmark", "masa.steps.benchmark", "masa.runner.evaluate"],
    "report": ["masa.components.report", "masa.steps.report"],
    "data_filter": ["masa.components.data_filter", "masa.steps.prepare"],
}
COMMON = ["kfp.dsl.executor_main", "masa.config", "masa.telemetry.stepmetrics", "masa.telemetry"]
HEAVY = ("torch", "vllm", "deepspeed", "transformers")


def _timed(cmd: list[str], reps: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        out = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    return sorted(times)[len(times) // 2], out


def micro(reps: int) -> None:
    print(f"{'step kind':<12} {'import s':>8}  heavy packages loaded")
    for kind, mods in STEP_IMPORTS.items():
        code = (f"import importlib, sys\nfor m in {COMMON + mods!r}: importlib.import_module(m)\n"
                f"print(' '.join(k for k in {HEAVY!r} if k in sys.modules) or '-')")
        secs, heavy = _timed([sys.executable, "-c", code], reps)
        print(f"{kind:<12} {secs:>8.2f}  {heavy}")
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp, "worker.py")
        w.write_text("import torch, torch.distributed\n")
        agent, _ = _timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           str(w)], reps)
        direct, _ = _timed([sys.executable, str(w)], reps)
    print(f"one-rank launch: torchrun {agent:.2f} s, worker started directly {direct:.2f} s "
          f"({agent / direct:.2f}x; {agent - direct:.2f} s saved per training round)")


def run(preset: str, overrides: list[str], out: Path) -> float:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    sets = [x for kv in overrides for x in ("--set", kv)]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "masa.cli", "run", "--preset", preset, *sets, "--out", str(out),
                        "--store", str(out / "store")], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"masa run failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--set", dest="overrides", action="append", default=None,
                    help="config override (default: rounds=1, compare=false)")
    ap.add_argument("--log", type=Path, help="analyse this pipeline.log instead of running")
    ap.add_argument("--micro", action="store_true", help="imports per step kind and the one-rank launch only")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.micro:
        print(f"{dt.date.today().isoformat()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        micro(a.reps)
        return 0
    overrides = a.overrides if a.overrides is not None else ["rounds=1", "compare=false"]
    if a.log:
        text, day, wall = a.log.read_text(), dt.date.fromtimestamp(a.log.stat().st_mtime), None
    else:
        with tempfile.TemporaryDirectory(prefix="masa-bench-overhead-") as tmp:
            wall = run(a.preset, overrides, Path(tmp) / "out")
            log = Path(tmp) / "out" / "pipeline.log"
            text, day = log.read_text(), dt.date.fromtimestamp(log.stat().st_mtime)
        print(f"preset {a.preset} {' '.join(overrides)}: masa run {wall:.1f} s on {os.cpu_count()} cores, "
              f"{dt.date.today().isoformat()}")
    tasks = parse_log(text, day)
    if not tasks:
        print("no step with a MASA-PROGRESS clock in the log")
        return 1
    print(table(tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
