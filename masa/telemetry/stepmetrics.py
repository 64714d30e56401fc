"""Step results → KFP Metrics and one progress line per finished step.

`log_metrics` flattens a step's stats into scalar KFP metrics (shown in the Kubeflow UI) and prints
`MASA-PROGRESS {json}` for `masa run`'s terminal view (`masa.pipeline.local`). The line also carries the
step's clock (`clock`: when its process started, when the line was printed, and the stats' own stamps and
seconds), from which bench/bench_step_overhead.py splits each step's time into start-up, work and
bookkeeping. What a long step is doing meanwhile: `masa.telemetry.progress.phase`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PROGRESS = "MASA-PROGRESS "
# The few figures shown per step in the terminal, by step name.
SHOWN = {
    "prepare": ("model",),
    "data_filter": ("kept", "heldout"),
    "resume": ("rounds_done",),
    "merge": ("samples", "shards"),
    "rollout": ("samples", "tokens", "gated_prompts", "cutoff_samples", "wall_s"),
    "score": ("train_accuracy", "meta_pass_rate_mae", "heldout_accuracy"),
    "train": ("policy_loss", "grad_norm", "wall_s"),
    "benchmark": ("accuracy",),
    "benchmark_shard": ("problems", "shard"),
    "promote": ("decision",),
    "report": ("speedup_tokens",),
}


def flatten(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested stats as `a.b.c` → float (booleans as 0/1, non-finite dropped)."""
    out: dict[str, float] = {}
    for k, v in stats.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (bool, int, float)) and not (isinstance(v, float) and not math.isfinite(v)):
            out[key] = float(v)
    return out


def process_started_at() -> float | None:
    """Wall-clock time this process started (Linux /proc; None elsewhere), to 1/CLK_TCK (10 ms)."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def progress_line(step: str, stats: Mapping[str, Any], *, branch: str | None = None,
                  round_idx: int | None = None, shown: Iterable[str] | None = None, of: str | None = None) -> str:
    """`of`: what a step outside the rounds worked on (the benchmark's checkpoint), shown after its name."""
    info: dict[str, Any] = {"step": step, "reused": bool(stats.get("reused"))}
    if branch is not None:
        info.update(branch=branch, round=round_idx)
    if of is not None:
        info["of"] = of
    flat = {**flatten(stats), **{k: v for k, v in stats.items() if isinstance(v, str)}}
    info["show"] = {k: flat[k] for k in (shown or SHOWN.get(step, ())) if k in flat}
    info["clock"] = {"process_start": process_started_at(), "printed": time.time(),
                     **{k: v for k, v in flat.items() if k.endswith(("_s", "_at"))}}
    return PROGRESS + json.dumps(info, default=str)


def log_metrics(metrics, stats: Mapping[str, Any], *, step: str, branch: str | None = None,
                round_idx: int | None = None, of: str | None = None) -> None:
    """Log scalar stats to a KFP Metrics artifact and print the progress line."""
    flat = flatten(stats)
    for key, value in flat.items():
        metrics.log_metric(key.replace(".", "_"), value)
    # A file at the artifact's path too: kfp.local treats an output artifact without a file as
    # missing and never reuses the task from its cache.
    path = getattr(metrics, "path", None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(flat, sort_keys=True))
    print(progress_line(step, stats, branch=branch, round_idx=round_idx, of=of), flush=True)
