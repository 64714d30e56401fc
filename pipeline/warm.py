"""Warm step processes for `masa run`: every KFP task still runs in a process of its own, but that
process is forked from one interpreter that has already imported torch, vLLM, DeepSpeed, kfp's
executor and our steps, instead of a fresh interpreter paying those imports per task (issue 16:
~9 s per rollout or benchmark step on an idle 2-core machine, ~3 s per score or train step); the
training step in turn forks its DeepSpeed ranks from itself (masa.train.launch.ForkedRank).

How it fits kfp.local. `kfp.local.SubprocessRunner` runs a lightweight component as
`sh -ec '<write the source to ephemeral_component.py>; python3 -m kfp.dsl.executor_main ...'
<source> <args>`, through `kfp.local.subprocess_task_handler.run_local_subprocess`, printing the
process's output line by line. `warm_tasks()` replaces that one function for the duration of a run:
a task whose command has that shape is sent to the fork server, which forks a child that writes the
source file and runs `kfp.dsl.executor_main` with the same arguments and environment; its output comes
back through a pipe and is printed exactly as kfp.local prints a subprocess's. Anything else takes
kfp.local's own path. A task that comes while the server is still importing waits for it (up to
`READY_WAIT_S`) rather than starting cold: a cold task imports the same modules beside the server on the
same cores, and a cold rollout step starts a vLLM engine of its own that the run's engine service then
starts again (measured 2026-12-03 with a cached toy, where the first tasks come seconds after `masa run`
starts: two engine starts of 19-23 s each, the first rollout task 57 s instead of ~25). The DAG, the tasks, their
inputs, outputs and cache are kfp.local's; only the process start differs, so a run gives the same rows
(tests/test_pipeline_local.py compares a warm run with a cold one row for row). `masa run --cold`
turns it off (a fresh interpreter per step, as a cluster pod has).

Why fork is safe here: the server imports modules and nothing else (no engine, no thread pool, no
tensor op; its only threads are the few idle ones that torch and pyarrow start at import, as in every
PyTorch DataLoader worker fork), and it is single-threaded when it forks. Each task forks a monitor
that forks the task, waits for it and reports its exit status, so a task that crashes still reports.
The server exits with `masa run` (and on its own when its parent is gone).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from masa.engines.service import SERVICES_ENV, stop_all
from masa.train import launch
from masa.train.service import drain_all

# What the steps import (masa.steps.* pull in torch, transformers, pyarrow), and what `vllm.LLM()`
# imports lazily when it starts an engine on CPU (its worker, model runner and loader, our models'
# class, LoRA manager, boto3 for its S3 loader): 7.2 s -> 3.8 s per engine start on the smoke model,
# measured 2026-12-02 on a loaded 2-core machine. A name this vLLM lacks is skipped (see serve).
# With DeepSpeed and the training worker (and what deepspeed.initialize and the model's class import
# lazily) preloaded, the training step forks its ranks from its own warm process
# (masa.train.launch.forks_ranks): `masa train --preset smoke --nproc 2` 18.8 s -> 1.7 s, same weights.
# pyarrow.dataset (and pandas with it): what the first `pyarrow.parquet.read_table` of a process imports,
# 0.3 s, paid by every rollout, score and train task (and each training rank) that reads a shard.
PRELOAD = ("torch", "transformers", "vllm", "vllm.entrypoints.llm", "kfp.dsl.executor_main",
           "vllm.v1.engine.core", "vllm.v1.executor.uniproc_executor", "vllm.v1.worker.cpu_worker",
           "vllm.v1.worker.cpu_model_runner", "vllm.model_executor.model_loader",
           "vllm.model_executor.models.qwen2", "vllm.model_executor.models.qwen3", "vllm.lora.worker_manager",
           "compressed_tensors", "boto3", "pyarrow.dataset", "deepspeed", "deepspeed.runtime.engine",
           "deepspeed.runtime.zero.muon.muon_optimizer", "transformers.models.qwen2.modeling_qwen2",
           "transformers.models.qwen3.modeling_qwen3", "masa.train.worker",
           "masa.steps.rollout", "masa.steps.score", "masa.steps.train", "masa.steps.benchmark",
           "masa.steps.prepare", "masa.steps.report", "masa.steps.resume", "masa.steps.promote")
_EXECUTOR = "kfp.dsl.executor_main"
# A Unix socket's path holds at most 107 bytes (sun_path, 108 with its NUL). The run's longest is a
# trainer service's, in the services folder that warm_tasks makes in TMPDIR: with a TMPDIR over ~60
# characters the first rollout step failed on `OSError: AF_UNIX path too long` (2026-12-07)
_SUN_PATH_MAX = 107
_SERVICES_PREFIX = "masa-eng-"  # the services folder's mkdtemp prefix; mkdtemp adds 8 characters
_LONGEST_SOCKET = f"{_SERVICES_PREFIX}01234567/trainer-0123456789abcdef.sock"
# how long a task waits for the server's imports (~15 s on 2 idle cores, longer beside other work)
# before it starts cold instead
READY_WAIT_S = 120.0
RUNTIME_ENV = frozenset({"MASA_METRICS_PORT"})  # read when the step runs (masa.telemetry), not at import


def warm_env(task_env: dict[str, str], server_env: dict[str, str]) -> bool:
    """Whether a task whose component sets `task_env` may run warm: modules read some variables once,
    at import (huggingface_hub's HF_HUB_OFFLINE, which the stage step lifts), so a task that sets one
    to a value the server did not import with starts cold. Ours read at run time: RUNTIME_ENV."""
    return all(k in RUNTIME_ENV or server_env.get(k) == v for k, v in task_env.items())


def task_argv(full_command: list[str]) -> tuple[str, list[str]] | None:
    """(component source, executor_main arguments) of a kfp.local lightweight-component command,
    or None when the command has another shape (then it runs as kfp.local runs it)."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    script = full_command[2]
    if _EXECUTOR not in script or "ephemeral_component.py" not in script or "pip install" in script:
        return None
    return full_command[3], list(full_command[4:])


# --- the server -------------------------------------------------------------------------------


def serve(sock_path: str, ready_path: str, modules: tuple[str, ...] = PRELOAD) -> None:
    """Import `modules`, mark ready, then fork one task per connection until the parent exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the tasks (default handler there)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    parent = os.getppid()
    os.environ["_KFP_RUNTIME"] = "true"  # kfp imports as the task's `_KFP_RUNTIME=true python3 -m` would
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a missing optional module: the task imports it itself
            print(f"warm: could not preload {name}: {type(e).__name__}: {e}", file=sys.stderr)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(16)
    srv.settimeout(1.0)
    Path(ready_path).write_text(str(os.getpid()))
    while os.getppid() == parent:
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        conn.settimeout(10.0)
        try:
            _, fds, _, _ = socket.recv_fds(conn, 1, 1)  # the task's output pipe, then the request
            req = json.loads(_read_to_eof(conn).decode())
        except (OSError, ValueError) as e:
            print(f"warm: bad request: {e}", file=sys.stderr)
            conn.close()
            continue
        conn.settimeout(None)
        if os.fork() == 0:  # the monitor
            srv.close()
            _monitor(conn, req, fds[0])
        conn.close()
        for fd in fds:
            os.close(fd)


def _read_to_eof(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _monitor(conn: socket.socket, req: dict, out_fd: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this process waits for its task
    pid = os.fork()
    if pid == 0:
        conn.close()
        _task(req, out_fd)
    os.close(out_fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    try:
        conn.sendall(json.dumps({"returncode": code}).encode())
    finally:
        os._exit(0)


def _task(req: dict, out_fd: int) -> None:
    """The task's process: the shell script's two lines, then executor_main as `python -m` runs it."""
    code, program = 1, None
    try:
        # Ctrl-C as a fresh interpreter started by `masa run` would take it: ignored where masa run
        # ignores it (started in the background without job control), else KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_IGN if req.get("sigint_ignored") else signal.default_int_handler)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)  # kfp.local merges stderr into stdout
        os.close(out_fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["_KFP_RUNTIME"] = "true"
        program = Path(tempfile.mkdtemp(prefix="masa-task-"))
        (program / "ephemeral_component.py").write_text(req["source"])
        sys.argv = [_EXECUTOR, "--component_module_path", str(program / "ephemeral_component.py"), *req["args"]]
        launch.allow_forked_ranks()  # forked from the import-only server: no OpenMP team to inherit
        import runpy

        runpy.run_module(_EXECUTOR, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - printed as `python -m` would, then the exit status
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        if program is not None:  # kfp.local's shell leaves its `mktemp -d` behind; ours goes (~120 a toy run)
            shutil.rmtree(program, ignore_errors=True)
        os._exit(code)


# --- the client side (in `masa run`) ---------------------------------------------------------


class WarmServer:
    """A running fork server and the client call that kfp.local's handler is pointed at."""

    def __init__(self, folder: Path, modules: tuple[str, ...] = PRELOAD) -> None:
        # a short path of its own: a Unix socket's path is limited to 107 bytes
        self._dir = Path(tempfile.mkdtemp(prefix="masa-warm-"))
        self.sock, self.ready = str(self._dir / "s"), self._dir / "ready"
        code = f"from masa.pipeline.warm import serve; serve({self.sock!r}, {str(self.ready)!r}, {modules!r})"
        self.env = dict(os.environ)  # what the server imports with
        self._log = (folder / "warm.log").open("w")  # its import warnings; the tasks' output goes to kfp.local
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        self.warm_tasks = 0

    def is_ready(self) -> bool:
        return self.proc.poll() is None and self.ready.exists()

    def wait_ready(self, timeout_s: float) -> bool:
        """Whether the server is ready, waiting up to `timeout_s` while it is still importing."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def run(self, source: str, args: list[str], env: dict[str, str]) -> int:
        """Run one task in a forked child; its output printed line by line, as kfp.local prints."""
        r, w = os.pipe()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self.sock)
                req = {"source": source, "args": args, "env": env, "cwd": os.getcwd(),
                       "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}
                socket.send_fds(conn, [b"F"], [w])
                os.close(w)
                w = -1
                conn.sendall(json.dumps(req).encode())
                conn.shutdown(socket.SHUT_WR)
                with os.fdopen(r, "r", encoding="utf-8", errors="replace") as out:
                    r = -1
                    for line in out:
                        print(line, end="")
                    print("\n")  # kfp.local's separator after a subprocess's logs
                reply = _read_to_eof(conn)
            self.warm_tasks += 1
            return int(json.loads(reply.decode())["returncode"]) if reply else 1
        finally:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def socket_room(tmpdir: str | None = None) -> str | None:
    """Why the run's Unix sockets cannot live under `tmpdir` (TMPDIR by default), or None if they can."""
    base = tmpdir or tempfile.gettempdir()
    longest = len(os.fsencode(os.path.join(base, _LONGEST_SOCKET)))
    if longest <= _SUN_PATH_MAX:
        return None
    room = _SUN_PATH_MAX - len(_LONGEST_SOCKET) - 1
    return (f"TMPDIR {base} is {len(os.fsencode(base))} bytes long, too long for the run's Unix sockets "
            f"(at most {room}): every step starts cold, as with --cold; a shorter TMPDIR keeps them warm")


@contextmanager
def warm_tasks(folder: Path, enabled: bool = True):
    """While inside, kfp.local starts tasks from the warm server (see the module docstring). Linux
    only: on macOS, forking a process that has loaded system frameworks is unsafe (why Python's
    multiprocessing spawns there), so tasks start cold."""
    if not enabled or not sys.platform.startswith("linux"):
        yield None
        return
    if (reason := socket_room()) is not None:
        print(f"masa: {reason}", flush=True)
        yield None
        return
    from kfp.local import subprocess_task_handler as handler

    server = WarmServer(folder)
    cold = handler.run_local_subprocess
    # the run's engine services (masa.engines.service): warm tasks only; a short path, as for the server
    engines = Path(tempfile.mkdtemp(prefix=_SERVICES_PREFIX))
    services = {SERVICES_ENV: f"{engines}:{os.getpid()}"}

    def run_local_subprocess(full_command, env_vars=None):
        parsed = task_argv(list(full_command))
        if parsed is None or not warm_env(env_vars or {}, server.env) or not server.wait_ready(READY_WAIT_S):
            return cold(full_command, env_vars)
        return server.run(parsed[0], parsed[1], {**os.environ, **(env_vars or {}), **services})

    handler.run_local_subprocess = run_local_subprocess
    try:
        yield server
    finally:
        handler.run_local_subprocess = cold
        server.close()
        # the trainer services' background uploads of kept training state (resources.train_state: run)
        # finish before they stop; one that failed leaves its rounds to be retrained by a rerun
        for error in drain_all(engines):
            print(f"masa: warning: training state not published: {error}; a rerun retrains from the last "
                  "published state", flush=True)
        stop_all(engines)
        shutil.rmtree(engines, ignore_errors=True)
