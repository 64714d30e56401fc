"""A trainer that outlives the train steps using it: during `masa run` (warm mode), the DeepSpeed ranks
of a branch stay up between rounds and keep their engine (weights, AdamW moments, LR schedule), so the
next round's train step neither loads the previous round's DeepSpeed state nor builds the engine again.
The steps stay separate KFP tasks with the same inputs and outputs, and every round still publishes its
model; only where the ranks live changes. A round trained from the held engine gives the weights, bit
for bit, of one restored from the store (tests/test_train_service.py). Its DeepSpeed state is published
by the step every round (`resources.train_state: round`), or, with `run`, only at a run's last round
and by the service, in the background, after the step (`Trainer.upload`, `drain_all`), the rounds
between keeping it in the service only (masa.runner.training.train_round's `state`; a rerun that lost
the service retrains them: masa.steps.train.rebuild_kept_states).

This is the local half of the trainer in docs/deploy.md's "engine services", beside the engine half
(masa.engines.service), and reached the same way: `SERVICES_ENV`, set by masa.pipeline.warm for warm
tasks only. What the held engine is: the state published with the checkpoint whose manifest digest
(`checkpoint.identity`) the service was last told; a round that starts from any other checkpoint (or
from a resume point of its own) has the ranks build from the store as a cold step does. A service
serves one step at a time (a step that finds it busy launches its own ranks), exits with its owner, and
exits on any error (the next step starts a fresh one), so a failed round cannot leave a half-updated
engine behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Listener
from pathlib import Path

from masa.engines.service import SERVICES_ENV, exit_with, greeted, running
from masa.train.checkpoint import BackgroundUploads
from masa.train.config import TrainConfig
from masa.train.launch import SERVE, TrainingFailed, forks_ranks, start_ranks
from masa.train.spec import ROUND_DONE, WorkerSpec

_GREETING_S = 5.0
_START_TIMEOUT_S = 300
# the settings a DeepSpeed engine is built with (optimizer, schedule, ZeRO, precision): a held engine
# serves only rounds that would build the same one
_BUILD_FIELDS = ("lr", "warmup_steps", "weight_decay", "betas", "adam_eps", "grad_clip", "zero_stage",
                 "gradient_checkpointing", "dtype")


def enabled() -> tuple[Path, int] | None:
    """(services folder, owner pid) when train steps should use a service: a warm `masa run` task
    that may fork its ranks (masa.train.launch.forks_ranks)."""
    value = os.environ.get(SERVICES_ENV)
    if not value or not forks_ranks():
        return None
    folder, _, owner = value.rpartition(":")
    return Path(folder), int(owner)


def service_key(chain: str, cfg: TrainConfig, nproc: int, env: dict[str, str] | None) -> str:
    fields = {k: getattr(cfg, k) for k in _BUILD_FIELDS}
    blob = json.dumps([chain, nproc, fields, sorted((env or {}).items())], sort_keys=True, default=str)
    return "trainer-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


class Trainer:
    """A connection to the run's trainer service for one chain of rounds (a branch)."""

    def __init__(self, conn, folder: Path) -> None:
        self._conn, self._folder = conn, folder

    def _send(self, op: str, arg) -> None:
        try:
            self._conn.send((op, arg))
        except OSError as e:
            raise self._stopped(e) from e

    def _recv(self) -> tuple[str, object]:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._stopped(e) from e

    @staticmethod
    def _stopped(e: BaseException) -> TrainingFailed:
        return TrainingFailed(f"the trainer service stopped ({type(e).__name__}); its log is beside its socket "
                              f"under ${SERVICES_ENV}")

    def _call(self, op: str, arg=None):
        self._send(op, arg)
        status, value = self._recv()
        if status == "error":
            raise TrainingFailed(f"the trainer service failed:\n{value}")
        return value

    def held(self) -> str | None:
        """The identity of the checkpoint whose state the ranks hold, or None."""
        return self._call("held")

    def train(self, spec_path: Path, expects: str | None, on_line: Callable[[str], None] | None) -> bool:
        """Train the staged round at `spec_path`; the ranks start from their engine when `expects` is
        the identity they hold. Streams the ranks' lines to `on_line`; returns whether they did."""
        # the step's own directory: its paths may be relative to it (a relative store root)
        self._send("train", {"spec": str(Path(spec_path).absolute()), "expects": expects, "cwd": os.getcwd()})
        while True:
            status, value = self._recv()
            if status == "line":
                on_line(value) if on_line else None
            elif status == "done":
                return value
            else:
                raise TrainingFailed(f"training workers failed in the trainer service:\n{value}")

    def upload(self, state_dir: Path, uri: str) -> None:
        """Hand the round's saved state to the service, which publishes it to `uri` after this step
        (manifest last), one upload after another; `drain` waits for them."""
        dest = self._folder / "uploads" / uuid.uuid4().hex
        dest.parent.mkdir(exist_ok=True)
        shutil.move(str(state_dir), dest)  # out of the step's scratch, which goes with the step
        self._call("upload", {"src": str(dest), "uri": uri})

    def hold(self, identity: str | None) -> None:
        """Tell the service which published checkpoint its engine now matches. A service gone by now
        holds nothing: the next round starts from the store (or retrains what only it kept)."""
        with contextlib.suppress(TrainingFailed):
            self._call("hold", identity)

    def drain(self) -> list[str]:
        """Wait for the service's uploads; the ones that failed, a line each."""
        return self._call("drain")

    def close(self) -> None:
        self._conn.close()


def connect(chain: str, cfg: TrainConfig, nproc: int, env: dict[str, str] | None) -> Trainer | None:
    """The run's trainer for this chain and engine, started first if there is none; None outside warm
    mode or when it is serving another step (the step then launches ranks of its own)."""
    where = enabled()
    if where is None:
        return None
    folder, owner = where
    sock = folder / f"{service_key(chain, cfg, nproc, env)}.sock"
    with sock.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = greeted(sock, _GREETING_S)
        if conn is None and not running(sock.with_suffix(".pid")):
            sock.unlink(missing_ok=True)
            _start(sock, owner, nproc, env)
            conn = greeted(sock, _START_TIMEOUT_S)
    return Trainer(conn, folder) if conn is not None else None


def _start(sock: Path, owner: int, nproc: int, env: dict[str, str] | None) -> None:
    """Fork the service from this warm task (it has imported what a rank imports and run no tensor op,
    as masa.train.launch.ForkedRank requires), detached from the task's session and streams."""
    ready = sock.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the service; tests see what it serves
        code = 1
        try:
            os.setsid()
            log = os.open(sock.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            # the task's other descriptors (its KFP output pipes, the warm server's socket) must not stay
            # open here: whoever reads them to their end would wait for the service
            os.closerange(3, 1 << 16)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives until os._exit
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            serve(sock, owner, nproc, env)
            code = 0
        except BaseException:  # noqa: BLE001 - into the service's log
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not ready.exists():
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            tail = sock.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise TrainingFailed(f"the trainer service did not start:\n{tail}")
        time.sleep(0.05)


@dataclasses.dataclass
class _Ranks:
    """The service's ranks, their lines in one queue (("line", s) | ("exit", code))."""

    procs: list
    lines: queue.Queue
    tail: deque

    @classmethod
    def start(cls, nproc: int, env: dict[str, str] | None) -> _Ranks:
        procs = start_ranks(SERVE, nproc, env)
        ranks = cls(procs, queue.Queue(), deque(maxlen=60))
        for p in procs:
            threading.Thread(target=ranks._relay, args=(p,), daemon=True).start()
        return ranks

    def _relay(self, proc) -> None:
        for line in proc.stdout:
            self.lines.put(("line", line.rstrip("\n")))
        self.lines.put(("exit", proc.wait()))

    def round(self, spec: str, use_held: bool, cwd: str, send: Callable[[str], None]) -> None:
        """One round on every rank; raises TrainingFailed when a rank exits."""
        msg = json.dumps({"spec": spec, "use_held": use_held, "cwd": cwd}) + "\n"
        for p in self.procs:
            p.stdin.write(msg)
            p.stdin.flush()
        done = 0
        while done < len(self.procs):
            kind, item = self.lines.get()
            if kind == "exit":
                raise TrainingFailed(f"a training rank exited with code {item}; last lines:\n"
                                     + "\n".join(self.tail))
            if item == ROUND_DONE:
                done += 1
                continue
            self.tail.append(item)
            print(item, flush=True)  # the service's log keeps every rank's output
            send(item)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()


def holds(chain: str, cfg: TrainConfig, nproc: int, env: dict[str, str] | None, identity: str | None) -> bool:
    """Whether the run's running trainer service for this chain holds the state of checkpoint
    `identity` (False where there is none, or it is busy: never starts one)."""
    where = enabled()
    if where is None or identity is None:
        return False
    conn = greeted(where[0] / f"{service_key(chain, cfg, nproc, env)}.sock", _GREETING_S)
    if conn is None:
        return False
    trainer = Trainer(conn, where[0])
    try:
        return trainer.held() == identity
    finally:
        trainer.close()


def drain_all(folder: Path) -> list[str]:
    """Wait for every trainer service under `folder` to finish its uploads (the owner calls it before
    stopping them); the uploads that failed, one line each."""
    errors: list[str] = []
    for sock in sorted(folder.glob("trainer-*.sock")):
        conn = greeted(sock, 60.0)
        if conn is None:
            continue
        try:
            errors += Trainer(conn, folder).drain()
        except TrainingFailed as e:
            errors.append(f"{sock.stem}: {type(e).__name__}: {e}")
        finally:
            conn.close()
    return errors


def serve(sock: Path, owner: int, nproc: int, env: dict[str, str] | None) -> None:
    """The service: start the ranks, then serve one train step after another until the owner is gone."""
    exit_with(owner)
    ranks = _Ranks.start(nproc, env)
    listener = Listener(str(sock), family="AF_UNIX")
    sock.with_suffix(".pid").write_text(str(os.getpid()))
    sock.with_suffix(".ready").write_text("")
    held: str | None = None
    uploads = BackgroundUploads()
    while True:
        with listener.accept() as conn:
            try:
                conn.send(("ok", "ready"))
            except OSError:
                continue
            try:
                held = _session(conn, ranks, uploads, held)
            except BaseException as e:  # noqa: BLE001 - reported to the step, then a clean exit (docstring)
                traceback.print_exc()
                ranks.stop()
                try:
                    conn.send(("error", f"{type(e).__name__}: {e}"))
                finally:
                    sock.unlink(missing_ok=True)
                    os._exit(1)


def _session(conn, ranks: _Ranks, uploads: BackgroundUploads, held: str | None) -> str | None:
    """One step's requests; returns the identity held afterwards."""
    while True:
        try:
            op, arg = conn.recv()
        except EOFError:
            return held
        if op == "held":
            conn.send(("ok", held))
        elif op == "train":
            use = held is not None and arg["expects"] == held
            held = None  # from here the engine moves away from what it held
            ranks.round(arg["spec"], use, arg["cwd"], lambda s: conn.send(("line", s)))
            conn.send(("done", use))
        elif op == "hold":
            held = arg
            conn.send(("ok", None))
        elif op == "upload":
            uploads.put(Path(arg["src"]), arg["uri"])
            conn.send(("ok", None))
        elif op == "drain":
            conn.send(("ok", uploads.drain()))
        else:
            raise ValueError(f"unknown request {op!r}")


def write_spec(spec: WorkerSpec, work: Path) -> Path:
    path = work / "spec.json"
    path.write_text(json.dumps(spec.to_dict(), indent=1))
    return path
