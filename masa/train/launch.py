"""Launch the training workers as N local processes (torchrun) and collect what they wrote.

torchrun, not the `deepspeed` launcher: on CPU the DeepSpeed launcher counts NUMA nodes as devices and
needs `--bind_cores_to_rank` tuning, while torchrun starts exactly N processes with RANK/WORLD_SIZE/
LOCAL_RANK set, which `deepspeed.init_distributed` reads on CPU (gloo) and GPU (NCCL) alike. When any
rank dies, torchrun's agent stops the others and exits non-zero; we raise with the tail of the log.

One rank is the local default (the toy and smoke presets): then the worker is started directly, as the
one process torchrun would start, with the same RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* environment. That
skips torchrun's agent, a second fresh interpreter that imports torch only to start and watch one
child (~3 s per round on a 2-core machine: bench/bench_step_overhead.py). Two or more ranks keep torchrun.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from masa.telemetry.progress import phase
from masa.train.spec import RoundRequest, WorkerSpec

# rank 0 prints each optimizer step's metrics row (masa.train.metrics) on a line of its own with this
# prefix; defined here, with the launcher that reads them, so the launching process never imports torch
METRICS_PREFIX = "MASA_METRICS "


class TrainingFailed(RuntimeError):
    """The workers exited non-zero; the message carries the exit code and the log's tail."""


def ds_config_path(zero_stage: int) -> str:
    """Path of the package's DeepSpeed JSON config for this ZeRO stage (masa/train/ds_zeroN.json)."""
    return str(resources.files("masa.train") / f"ds_zero{zero_stage}.json")


def worker_env(nproc: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # CPU ranks share the machine's cores; without a cap every rank spawns one thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_rank_env() -> dict[str, str]:
    """The environment torchrun --standalone gives its only rank (what deepspeed.init_distributed reads)."""
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}


def torchrun_command(spec_path: Path, nproc: int) -> list[str]:
    """The command that runs `nproc` workers: the worker itself for one rank, torchrun for more."""
    worker = ["-m", "masa.train.worker", str(spec_path)]
    if nproc == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]


def run_workers(spec: WorkerSpec | RoundRequest, nproc: int, *, env: dict[str, str] | None = None,
                on_line: Callable[[str], None] | None = None, log_tail: int = 60) -> None:
    """Write spec into its work_dir, run `nproc` workers to completion, stream their output to on_line.
    A RoundRequest (with its work_dir) has the workers stage and publish the round themselves, as a
    TrainJob's nodes do."""
    if spec.work_dir is None:
        raise ValueError("run_workers: the request names no work_dir")
    work = Path(spec.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "spec.json"
    data = spec.to_dict(remote=True) if isinstance(spec, RoundRequest) else spec.to_dict()
    spec_path.write_text(json.dumps(data, indent=1))
    tail: deque[str] = deque(maxlen=log_tail)
    phase(f"starting {nproc} DeepSpeed rank{'s' if nproc > 1 else ''}")
    with (work / "workers.log").open("a") as log, subprocess.Popen(
            torchrun_command(spec_path, nproc),
            env=worker_env(nproc, {**(one_rank_env() if nproc == 1 else {}), **(env or {})}), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if line.startswith(METRICS_PREFIX):  # rank 0's row of a finished optimizer step
                row = json.loads(line[len(METRICS_PREFIX):])
                phase(f"optimizer step {row.get('step_in_round')} done, loss {row.get('loss', float('nan')):.4g}")
            if on_line:
                on_line(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        raise TrainingFailed(f"training workers exited with code {rc}; last lines of {work}/workers.log:\n"
                             + "\n".join(tail))


def read_metrics(work_dir: Path) -> list[dict]:
    f = Path(work_dir) / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []
