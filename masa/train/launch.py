"""Launch the training workers as N local processes and collect what they wrote.

Each rank is started directly, with the environment torchrun gives its ranks (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT), which `deepspeed.init_distributed` reads
on CPU (gloo) and GPU (NCCL) alike. Not torchrun itself: its agent is one more fresh interpreter that
imports torch only to start and watch the ranks (7-15 s per round on a loaded 2-core machine,
docs/overhead.md), and we use none of its elasticity (a failed round is rerun by the pipeline). Not
the `deepspeed` launcher: on CPU it counts NUMA nodes as devices and needs `--bind_cores_to_rank`
tuning. As torchrun's agent does, when any rank exits non-zero the others are stopped, and we raise
with the last lines of the rank that failed first (the others' collectives then fail on the missing
peer, and their tracebacks would bury its error); workers.log keeps every rank's lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from masa.telemetry.progress import phase
from masa.train.spec import METRICS_PREFIX, RoundRequest, WorkerSpec


class TrainingFailed(RuntimeError):
    """The workers exited non-zero; the message carries the exit code and the log's tail."""


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


def rank_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    """The environment torchrun --standalone gives rank `rank` of `nproc` on one node."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def worker_command(arg: str | Path) -> list[str]:
    return [sys.executable, "-m", "masa.train.worker", str(arg)]


SERVE = "--serve"  # the worker's argument for a rank of the trainer service (rounds on its stdin)


def start_ranks(arg: str | Path, nproc: int, env: dict[str, str] | None) -> list:
    """`nproc` ranks of `python -m masa.train.worker ARG`, forked where this process allows it. With
    ARG = `SERVE` each rank also has a `stdin` to send it rounds on (masa.train.service)."""
    port = _free_port()
    envs = [worker_env(nproc, {**rank_env(r, nproc, port), **(env or {})}) for r in range(nproc)]
    commands = str(arg) == SERVE
    if forks_ranks():
        return [ForkedRank(str(arg), e, commands=commands) for e in envs]
    return [subprocess.Popen(worker_command(arg), env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.PIPE if commands else None, text=True, bufsize=1) for e in envs]


_FORK_SAFE = False


def allow_forked_ranks() -> None:
    """Declare this process fit to fork ranks from: it has imported modules but run no tensor op.
    An OpenMP team, once a process has started one (any torch op big enough to go parallel), does not
    survive a fork: the child hangs at its first parallel region (seen in a test process, 2026-12-02).
    masa.pipeline.warm declares each task it forks from its import-only server; nothing else does."""
    global _FORK_SAFE
    _FORK_SAFE = True


def forks_ranks() -> bool:
    """Whether ranks are forked from this process rather than started as fresh interpreters: on Linux,
    in a process declared fork-safe (`allow_forked_ranks`) that has already imported what a rank
    imports (DeepSpeed, transformers, the worker), as a warm `masa run` task has (masa.pipeline.warm
    preloads them). A rank spends ~10 s of a smoke round importing them (measured 2026-12-02: 11.4 s
    from launch to the first optimizer step, 0.4 s of it training); forked, it starts with them. Any
    other process (a pod, `masa train`, `masa run --cold`) starts fresh interpreters."""
    return _FORK_SAFE and sys.platform == "linux" and all(
        m in sys.modules for m in ("deepspeed", "transformers", "masa.train.worker"))


class ForkedRank:
    """One rank forked from this process, with the part of `subprocess.Popen` that the launcher uses
    (pid, stdout lines, poll, wait, terminate). Fork is safe for the same reason as the warm server's:
    the launching process has imported modules but run no tensor op, engine or process group."""

    def __init__(self, arg: str, env: dict[str, str], *, commands: bool = False) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        cr, cw = os.pipe() if commands else (-1, -1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its exit status and output are what the tests see
            os.close(r)
            if commands:
                os.close(cw)
                os.dup2(cr, 0)
                os.close(cr)
            _rank_child(arg, env, w)
        os.close(w)
        self.pid, self.returncode = pid, None
        self.stdout = os.fdopen(r, "r", buffering=1, errors="replace")
        self.stdin = None
        if commands:
            os.close(cr)
            self.stdin = os.fdopen(cw, "w", buffering=1)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def terminate(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGTERM)


def _rank_child(arg: str, env: dict[str, str], out_fd: int) -> None:
    """In the forked rank: the rank's environment and output pipe, then the worker; never returns."""
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        # new line-buffered streams on the pipe: the inherited objects may not write to fd 1/2 at all
        # (a test runner's capture) and a fresh rank's prints arrive as they happen
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives until os._exit
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - a serving rank's rounds (or nothing)
        # signals as a fresh interpreter has them: SIGINT ignored only where it was ignored here
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        import torch  # already imported (forks_ranks): the thread cap a fresh rank takes from OMP_NUM_THREADS

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        from masa.train import worker

        code = worker.main([arg])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as a fresh interpreter would, then a non-zero exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _watch(procs: list, events: queue.Queue) -> None:
    """A thread per rank that puts ("exit", rank, code) when the rank exits: the events come in the
    order the ranks exited, so the rank that failed first is known (the others, whose collectives then
    fail on the missing peer, exit after it)."""
    for r, p in enumerate(procs):
        threading.Thread(target=lambda r=r, p=p: events.put(("exit", r, p.wait())), daemon=True).start()


def _stop(procs: list, exited: dict[int, int]) -> None:
    for r, p in enumerate(procs):
        if r not in exited:
            with contextlib.suppress(ProcessLookupError):  # it may exit (and be reaped) meanwhile
                p.terminate()


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
    phase(f"starting {nproc} DeepSpeed rank{'s' if nproc > 1 else ''}")
    procs = start_ranks(spec_path, nproc, env)
    events: queue.Queue = queue.Queue()
    for r, p in enumerate(procs):
        threading.Thread(target=_relay, args=(p, r, events), daemon=True).start()
    _watch(procs, events)
    tails: list[deque[str]] = [deque(maxlen=log_tail) for _ in procs]
    exited: dict[int, int] = {}
    first, open_streams = None, len(procs)
    with (work / "workers.log").open("a") as log:
        while len(exited) < len(procs) or open_streams:  # every rank's output, in the order it arrives
            kind, r, item = events.get()
            if kind == "exit":
                exited[r] = item
                if item != 0 and first is None:  # as torchrun's agent: one rank failed, stop the others
                    first = r
                    _stop(procs, exited)
            elif kind == "eof":
                open_streams -= 1
            else:
                _line(item, log, tails[r], on_line)
    if first is not None:
        raise TrainingFailed(f"training workers exited with code {exited[first]}; rank {first} failed first, its "
                             f"last lines ({work}/workers.log has every rank's):\n" + "\n".join(tails[first]))


def _relay(proc, rank: int, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put(("line", rank, line))
    lines.put(("eof", rank, None))


def _line(line: str, log, tail: deque, on_line: Callable[[str], None] | None) -> None:
    log.write(line)
    tail.append(line.rstrip())
    if line.startswith(METRICS_PREFIX):  # rank 0's row of a finished optimizer step
        row = json.loads(line[len(METRICS_PREFIX):])
        phase(f"optimizer step {row.get('step_in_round')} done, loss {row.get('loss', float('nan')):.4g}")
    if on_line:
        on_line(line.rstrip())


def read_metrics(work_dir: Path) -> list[dict]:
    f = Path(work_dir) / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []
