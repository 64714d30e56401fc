"""`masa run`: the whole DAG on this machine with `kfp.local.SubprocessRunner`, every segment of
rounds (`RunConfig.segments`) one after another, as `masa submit --follow` chains them on a cluster.

KFP's local runner prints every task's executor input and logs to stdout; we send all of that to
`<out>/pipeline.log` and show one line per finished step instead (the steps announce themselves
with a `MASA-PROGRESS {json}` line, see `masa.steps.report.log_metrics`). kfp.local's cache lives
in `<out>/kfp-cache` and our store-level run-once markers in `<out>/store`, so a second run with the
same output directory reuses finished steps.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from masa.config import RunConfig
from masa.pipeline.dag import build_pipeline

PROGRESS = "MASA-PROGRESS "


def total_steps(cfg: RunConfig) -> int:
    """Steps shown over every segment: its tasks less configure (instantaneous and silent; a later
    segment's configure is a cache hit, and cache hits are shown)."""
    from masa.config import run_tasks

    segs, b, n = cfg.segments, len(cfg.branches), cfg.resources.rollout_shards
    # with shards a round shows n rollout lines and the merge, not the ParallelFor task itself
    per_round = 3 if n == 1 else n + 3
    return sum(run_tasks(b, len(s), first=i == 0, last=i == len(segs) - 1, per_round=per_round) - (i == 0)
               for i, s in enumerate(segs))


class _ProgressTee(io.TextIOBase):
    """Everything to the log file; progress lines, reformatted, to the terminal."""

    def __init__(self, log: TextIO, term: TextIO, total: int) -> None:
        self.log, self.term, self.total, self.done = log, term, total, 0
        self.start, self._buf = time.monotonic(), ""

    def write(self, s: str) -> int:
        self.log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(s)

    def flush(self) -> None:
        self.log.flush()
        self.term.flush()

    def _line(self, line: str) -> None:
        i = line.find(PROGRESS)
        if i < 0:
            # a step's own notices (masa.steps.layout: a corrupt part not reused, or found as an input)
            if (w := max(line.find("masa: warning: "), line.find("masa: error: "))) >= 0:
                self.term.write(f"  ! {line[w + 6:].strip()}\n")
            elif "finished with status" in line and "FAILURE" in line:
                self.term.write(f"  ✗ {line.strip()}\n")
            elif " cache hit " in line:  # kfp.local skipped a task whose inputs are unchanged
                self.done += 1
                task = line.split("Task ", 1)[-1].split(" cache hit", 1)[0]
                self.term.write(f"[{self.done:>3}/{self.total}] {task:<34} (cached)\n")
            return
        try:
            info = json.loads(line[i + len(PROGRESS):])
        except json.JSONDecodeError:
            return
        self.done += 1
        self.term.write(f"[{self.done:>3}/{self.total}] {format_progress(info)}"
                        f"  ({time.monotonic() - self.start:6.0f}s)\n")
        self.term.flush()


def format_progress(info: dict[str, Any]) -> str:
    where = info.get("step", "?")
    if "branch" in info:
        where = f"{info['branch']} · round {info['round'] + 1} · {where}"
    shown = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("show", {}).items()]
    return f"{where:<34} {'(reused) ' if info.get('reused') else ''}{' '.join(shown)}"


def run_local(cfg: RunConfig, out: str | Path, *, quiet_kfp: bool = True, kfp_cache: bool = True) -> dict[str, Any]:
    """Run the pipeline locally; returns the report path, final checkpoints and the log path.

    `kfp_cache=False` runs every task again (kfp.local's cache off); the steps still reuse every
    part of the store that verifies, so only missing or corrupt parts, and what depends on them,
    are recomputed (`masa run --recheck`)."""
    from kfp import local

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.store:
        cfg = replace(cfg, store=str(out / "store"))
    # No retries locally: a failure here is deterministic or needs the user; rerunning `masa run`
    # with the same --out reuses every finished step.
    cfg = replace(cfg, resources=replace(cfg.resources, retries=0))
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
        handlers, level = root.handlers[:], root.level
        root.handlers = [logging.StreamHandler(tee)]  # to the log file (and progress), not the terminal
        root.setLevel(logging.INFO)
        sys.stdout = tee if quiet_kfp else sys.stdout
        try:
            for segment in range(len(cfg.segments)):  # a cluster runs each as its own run
                build_pipeline(cfg, segment, local=True)()
        except BaseException as e:
            sys.stdout = term
            raise RuntimeError(f"pipeline failed ({type(e).__name__}: {e}); full log: {log_path}") from e
        finally:
            sys.stdout = term
            root.handlers = handlers
            root.setLevel(level)
    return {"out": str(out), "log": str(log_path), **_summary(out, cfg)}


def _summary(out: Path, cfg: RunConfig) -> dict[str, Any]:
    """Report files (local copies and the store's), final checkpoints, found through the report's JSON."""
    from masa.steps.report import report_prefix
    from masa.storage import open_store

    reports = sorted((out / "kfp").glob("*/report/report_json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return {}
    report = json.loads(reports[-1].read_text())
    folder = out / "report"
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    html = reports[-1].parent / "report_html"
    if html.exists():
        (folder / "report.html").write_text(html.read_text())
    return {"report_json": str(folder / "report.json"), "report_html": str(folder / "report.html"),
            "report_store": open_store(cfg.store).uri(report_prefix(cfg)), "checkpoints": report.get("checkpoints", {})}
