"""`masa run`: the whole DAG on this machine with `kfp.local.SubprocessRunner`, every segment of
rounds (`RunConfig.segments`) one after another, as `masa submit --follow` chains them on a cluster.

KFP's local runner prints every task's executor input and logs to stdout; we send all of that to
`<out>/pipeline.log` and show one line per finished step instead (the steps announce themselves
with a `MASA-PROGRESS {json}` line, see `masa.steps.report.log_metrics`). kfp.local's cache lives
in `<out>/kfp-cache` and our store-level run-once markers in `<out>/store`, so a second run with the
same output directory reuses finished steps.
"""

from __future__ import annotations

import builtins
import fcntl
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from masa.config import RunConfig, run_tasks
from masa.pipeline.dag import build_pipeline
from masa.pipeline.warm import warm_tasks
from masa.steps.configure import stamp
from masa.steps.report import report_prefix
from masa.storage import open_store

PROGRESS = "MASA-PROGRESS "
PHASE = "MASA-PHASE "  # masa.telemetry.progress.phase: what a running step does now
PHASE_EVERY_S = 5.0  # at most one phase line per step this often: a quick step shows none
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names and statuses
# the closing line of a Python traceback, e.g. "masa.data.records.DataError: cannot read parquet file ..."
_EXCEPTION = re.compile(r"^\s*(?:[A-Za-z_]\w*\.)*([A-Z]\w*(?:Error|Exception|Failed|Invalid)): (.+)$")
_INTERRUPT = re.compile(r"^\s*KeyboardInterrupt\s*$")


class PipelineFailed(RuntimeError):
    """A step failed: its name as the user sees it, its own error line, and the log with the rest."""

    def __init__(self, step: str, error: str, log: Path) -> None:
        self.step, self.error, self.log = step, error, log
        super().__init__(f"{step} failed: {error}")


class RunInProgress(RuntimeError):
    """Another `masa run` holds the output directory."""


def total_steps(cfg: RunConfig) -> int:
    """Steps shown over every segment: its tasks less configure (instantaneous and silent; a later
    segment's configure is a cache hit, and cache hits are shown)."""
    segs, b, n, m = cfg.segments, len(cfg.branches), cfg.resources.rollout_shards, cfg.resources.benchmark_shards
    # with shards a round shows n rollout lines and the merge, not the ParallelFor task itself; a
    # benchmark m shard lines and its merge
    per_round = 3 if n == 1 else n + 3
    # configure is never shown (instantaneous, silent; a cache hit on every rerun)
    return sum(run_tasks(b, len(s), first=i == 0, last=i == len(segs) - 1, per_round=per_round,
                         fixed=cfg.fixed_tasks, per_benchmark=1 if m == 1 else m + 1) - 1
               for i, s in enumerate(segs))


def display_names(pipeline) -> dict[str, str]:
    """KFP task id (e.g. `rollout-3`, as kfp.local logs it) -> the name the DAG gives it
    (`grpo · round 2 · rollout`), over the pipeline and its loop bodies."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    return {task: d.tasks[task].task_info.name for d in dags for task in d.tasks}


class _ProgressTee(io.TextIOBase):
    """Everything to the log file; progress lines, reformatted, to the terminal."""

    def __init__(self, log: TextIO, term: TextIO, total: int) -> None:
        self.log, self.term, self.total, self.done = log, term, total, 0
        # kfp.local runs a ParallelFor's iterations in threads, each printing here. A text file written
        # from two threads at once can write uninitialized memory (cpython#118138): a sharded run's
        # pipeline.log held 2 KB of heap bytes. One writer at a time, and the line buffer stays whole.
        self._lock = threading.RLock()
        self.start, self._buf = time.monotonic(), ""
        self.names: dict[str, str] = {}  # task id -> display name (display_names)
        self.last_error = ""  # the latest traceback's closing line
        self.failed: tuple[str, str] | None = None  # (step, its error) of the first failure
        self.interrupted = False
        self.running, self.shown_at = "", 0.0  # the executing task's name; when the terminal last heard of it

    def write(self, s: str) -> int:
        with self._lock:
            self.log.write(s)
            self._buf += s
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._line(line)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            self.term.flush()

    def _task(self, line: str, before: str) -> str:
        """The display name of the task a kfp.local line (`Task 'rollout-3' ...`) is about."""
        task = line.split("Task ", 1)[-1].split(before, 1)[0].strip().strip("'")
        return self.names.get(task, task)

    def _phase(self, line: str, i: int) -> None:
        try:
            text = json.loads(line[i + len(PHASE):])["phase"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return
        now = time.monotonic()
        if now - self.shown_at >= PHASE_EVERY_S:
            self.shown_at = now
            self.term.write(f"      · {self.running}: {text}  ({now - self.start:6.0f}s)\n")
            self.term.flush()

    def _count(self, text: str) -> None:
        self.done += 1
        self.shown_at = time.monotonic()
        self.total = max(self.total, self.done)
        self.term.write(f"[{self.done:>3}/{self.total}] {text}\n")
        self.term.flush()

    def _line(self, line: str) -> None:
        line = _ANSI.sub("", line)
        i = line.find(PROGRESS)
        if i >= 0:
            try:
                info = json.loads(line[i + len(PROGRESS):])
            except json.JSONDecodeError:
                return
            self._count(f"{format_progress(info)}  ({time.monotonic() - self.start:6.0f}s)")
        # a step's own notices (masa.runner.layout: a corrupt part not reused, or found as an input)
        elif (w := max(line.find("masa: warning: "), line.find("masa: error: "))) >= 0:
            self.term.write(f"  ! {line[w + 6:].strip()}\n")
        elif (i := line.find(PHASE)) >= 0:
            self._phase(line, i)
        elif "Executing task " in line:
            self.last_error = ""  # a traceback belongs to the task that printed it
            self.running = self._task(line.replace("Executing task ", "Task "), "\n")
        elif m := _EXCEPTION.match(line):
            self.last_error = f"{m.group(1)}: {m.group(2).strip()}"
        elif _INTERRUPT.match(line):
            self.interrupted = True
        elif "Task " in line and "finished with status" in line and "FAILURE" in line:
            step = self._task(line, " finished with status")
            self.failed = self.failed or (step, self.last_error or "see the log")
            self.term.write(f"  ✗ {step}\n")  # the reason closes the run (PipelineFailed)
        elif "Task " in line and " cache hit" in line:  # kfp.local skipped a task whose inputs are unchanged
            step = self._task(line, " cache hit")
            if not step.startswith("configure"):
                self._count(f"{step:<34} (cached)")


def format_progress(info: dict[str, Any]) -> str:
    where = info.get("step", "?")
    if "branch" in info:
        where = f"{info['branch']} · round {info['round'] + 1} · {where}"
    if info.get("of"):  # the benchmark's checkpoint, as the DAG names the task (and its cache hit)
        where = f"{where} · {info['of']}"
    shown = [f"{k}={_figure(v)}" for k, v in info.get("show", {}).items()]
    return f"{where:<34} {'(reused) ' if info.get('reused') else ''}{' '.join(shown)}"


def _figure(v: Any) -> str:
    """A shown figure: counts whole, with thousands separators (metrics arrive as floats: `kept=4e+03`
    said 4,000), other numbers to 3 significant digits."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_local(cfg: RunConfig, out: str | Path, *, quiet_kfp: bool = True, kfp_cache: bool = True,
              warm: bool = True) -> dict[str, Any]:
    """Run the pipeline locally; returns the report path, final checkpoints and the log path.

    `kfp_cache=False` runs every task again (kfp.local's cache off); the steps still reuse every
    part of the store that verifies, so only missing or corrupt parts, and what depends on them,
    are recomputed (`masa run --recheck`). `warm=False` starts every step in a fresh interpreter
    instead of forking it from one that has imported the steps (masa.pipeline.warm). Raises
    `PipelineFailed` naming the failed step and its error, `RunInProgress` when another run holds
    `out`, KeyboardInterrupt on Ctrl-C."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.resources.train_service:
        print("masa run: resources.train_service is off here (no Kubernetes): each train step starts its own "
              "DeepSpeed ranks, or shares this machine's trainer service (docs/training.md)", flush=True)
    cfg = local_config(cfg, out)
    with _exclusive(out), warm_tasks(out, enabled=warm) as server:  # it imports while the toy builds
        if cfg.model == "toy":  # built here in the foreground, its progress on the terminal, not silently in a step
            from masa.steps.prepare import toy_artifacts

            toy_artifacts(cfg, progress=True)
        result = _run_segments(cfg, out, quiet_kfp=quiet_kfp, kfp_cache=kfp_cache)
        return {**result, "warm_tasks": server.warm_tasks if server else 0}


def local_config(cfg: RunConfig, out: Path) -> RunConfig:
    """The configuration `masa run` runs: no retries (a failure here is deterministic or needs the user;
    rerunning with the same --out reuses every finished step), no serving TrainJob (the `paper` preset's
    `resources.train_service`: it needs Kubernetes), and the store under `out` unless one is given."""
    cfg = replace(cfg, resources=replace(cfg.resources, retries=0, train_service=False))
    return cfg if cfg.store else replace(cfg, store=str(out / "store"))


@contextmanager
def _exclusive(out: Path):
    """One `masa run` per output directory: a second one would redo and overwrite the first's steps."""
    f = (out / ".masa-run.lock").open("a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunInProgress(f"another masa run (pid {f.read().strip() or '?'}) is using {out}; wait for it "
                                "to finish, or choose another --out") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _run_segments(cfg: RunConfig, out: Path, *, quiet_kfp: bool, kfp_cache: bool) -> dict[str, Any]:
    from kfp import local

    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp"),
               enable_caching=kfp_cache, cache_root=str(out / "kfp-cache"), raise_on_error=True)
    log_path = out / "pipeline.log"
    # kfp.local warns, per task, that cluster-only settings (images, resources) are ignored here
    warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
    term = sys.stdout
    root = logging.getLogger()
    with log_path.open("a") as log:
        tee = _ProgressTee(log, term, total_steps(cfg))
        # kfp.local reports cache hits through the root logger, outside its per-task log capture
        handlers, level, print_ = root.handlers[:], root.level, builtins.print
        root.handlers = [logging.StreamHandler(tee)]  # to the log file (and progress), not the terminal
        root.setLevel(logging.INFO)
        sys.stdout = tee if quiet_kfp else sys.stdout
        try:
            for segment in range(len(cfg.segments)):  # a cluster runs each as its own run
                pipeline = build_pipeline(cfg, segment, local=True)
                tee.names = display_names(pipeline)
                pipeline()
        except Exception as e:
            if tee.interrupted:  # Ctrl-C reached a step first; kfp.local reports it as a failure
                raise KeyboardInterrupt from None
            step, error = tee.failed or ("the pipeline", f"{type(e).__name__}: {e}")
            raise PipelineFailed(step, error, log_path) from e
        finally:
            sys.stdout = term
            root.handlers = handlers
            root.setLevel(level)
            builtins.print = print_  # kfp.local indents print() per task and can leave it so after a failure
    return {"out": str(out), "log": str(log_path), **_summary(out, cfg)}


def _summary(out: Path, cfg: RunConfig) -> dict[str, Any]:
    """Report files (local copies and the store's), final checkpoints, found through the report's JSON."""
    reports = sorted((out / "kfp").glob("*/report/report_json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return {}
    report = json.loads(reports[-1].read_text())
    folder = out / "report"
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    for name, local in (("report_html", "report.html"), ("report_md", "report.md")):
        if (reports[-1].parent / name).exists():
            (folder / local).write_text((reports[-1].parent / name).read_text())
    return {"report_json": str(folder / "report.json"), "report_html": str(folder / "report.html"),
            "report_md": str(folder / "report.md"),
            # the run's identity as its configure step stamped it (data snapshot; masa.steps.configure)
            "report_store": open_store(cfg.store).uri(report_prefix(stamp(cfg))), "checkpoints": report.get("checkpoints", {})}
