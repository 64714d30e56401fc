"""Engines that outlive the steps using them: during `masa run` (warm mode), one engine per engine
configuration stays up for the whole run, and each rollout or benchmark step, instead of starting
vLLM (4-8 s on a 2-core CPU, measured in bench/results/cost_constants_cpu.json), connects to it and
loads its own policy's weights in place (`Engine.load_weights`: the worker's `reload_weights` and a
prefix-cache reset, as between rounds in one process). The steps stay separate KFP tasks with the same
inputs and outputs; only where their engine lives changes. A warm run gives the same rows as a cold one
(tests/test_pipeline_local.py compares them row for row, token ids included).

This is the local half of docs/deploy.md's "engine services". On a cluster every pod still starts its
own engine: a service there needs the weight sync in GPU memory and a pod of its own (not built).

The services' folder and the owner's process id reach the step through `SERVICES_ENV`, which
masa.pipeline.warm sets for warm tasks only: cold tasks (`masa run --cold`, a cluster pod) never see it.
A service serves one step at a time (a step that finds it busy starts its own engine), holds one engine
or, for `replicas` > 1, the replicas (masa.engines.replicated: on CPU, one engine per core), answers
the same ("generate" | "load" | "close", arg) messages as an engine replica (masa.engines.wire), exits with its
owner, and exits on any error (the next step starts a fresh one), so a failed step cannot leave a
half-loaded engine behind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Client, Listener
from pathlib import Path

from masa.engines.backends import backend_name
from masa.engines.base import EngineConfig, GenerationRequest, Sample, resolve_model_dir
from masa.engines.replicated import start_engines
from masa.engines.wire import answer

SERVICES_ENV = "MASA_ENGINE_SERVICES"  # "<folder>:<owner pid>", set by masa.pipeline.warm for warm tasks
_GREETING_S = 5.0  # an idle service greets at once; no greeting by then: it is serving another step
_START_TIMEOUT_S = 600
# the files that decide what an engine serves besides its weights: a step whose model differs in any
# of them (another architecture, tokenizer or generation defaults) gets a service of its own
_IDENTITY_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def enabled_for(config: EngineConfig) -> tuple[Path, int] | None:
    """(services folder, owner pid) when this step should use a service: warm mode, vLLM (one engine
    or `config.replicas` of them, all held by the service)."""
    value = os.environ.get(SERVICES_ENV)
    if not value or backend_name(config) != "vllm":
        return None
    folder, _, owner = value.rpartition(":")
    return Path(folder), int(owner)


def service_key(config: EngineConfig, model_dir: Path) -> str:
    """What makes two steps' engines interchangeable: the configuration but the model, and the
    model's identity files (not its weights, which every step loads anyway)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "model"}
    h = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for name in _IDENTITY_FILES:
        f = model_dir / name
        data = f.read_bytes() if f.is_file() else b"-"
        if name == "config.json":
            data = _served_config(data)
        h.update(name.encode() + data)
    return h.hexdigest()[:16]


# config.json keys that vLLM does not read: the trainer sets `use_cache: false` in every checkpoint it
# writes, which would otherwise give the base model and the trained ones two engines of one shape
_UNSERVED_KEYS = ("use_cache",)


def _served_config(data: bytes) -> bytes:
    """config.json without `_UNSERVED_KEYS`, canonical (anything that is not a JSON object: as is)."""
    try:
        config = json.loads(data)
    except ValueError:
        return data
    if not isinstance(config, dict):
        return data
    return json.dumps({k: v for k, v in config.items() if k not in _UNSERVED_KEYS}, sort_keys=True).encode()


class ServiceBusy(RuntimeError):
    """The run's service for this configuration is serving another step (make_engine starts one)."""


class RemoteEngine:
    """An `Engine` whose vLLM runs in a service process (see the module docstring)."""

    backend = "vllm"

    def __init__(self, config: EngineConfig, folder: Path, owner: int) -> None:
        t0 = time.perf_counter()
        self.config = config
        self.model_dir = resolve_model_dir(config.model)
        self._conn = _connect(config, self.model_dir, folder, owner)
        if self._conn is None:
            raise ServiceBusy(f"the engine service for {config.model} is serving another step")
        self._tokenizer = None
        self.max_model_len = self._call("load", str(self.model_dir))
        self.startup_s = time.perf_counter() - t0  # connect (and the service's start, if it had none) + load

    def _call(self, op: str, arg):
        try:
            self._conn.send((op, arg))
            status, value = self._conn.recv()
        except (EOFError, OSError) as e:
            raise RuntimeError(f"the engine service stopped ({type(e).__name__}); its log is beside "
                               f"its socket under ${SERVICES_ENV}") from e
        if status != "ok":
            raise RuntimeError(f"engine service failed:\n{value}")
        return value

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # the service's own tokenizer files (part of its key)
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return self._tokenizer

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        return self._call("generate", requests) if requests else []

    def load_weights(self, model_dir: str | Path) -> None:
        local = resolve_model_dir(str(model_dir))
        self._call("load", str(local))
        self.model_dir = local

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self._call("close", None)  # ends this step's session; the service stays up for the next
        except RuntimeError:
            pass
        finally:
            self._conn.close()
            self._conn = None


def _connect(config: EngineConfig, model_dir: Path, folder: Path, owner: int):
    """A connection to the service for (config, model), started first if there is none (or it died);
    None when it is serving another step (then this step starts an engine of its own)."""
    key = service_key(config, model_dir)
    sock = folder / f"{key}.sock"
    with (folder / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per key, whatever runs beside this step
        conn = greeted(sock, _GREETING_S)
        if conn is not None or running(sock.with_suffix(".pid")):
            return conn  # taken, or alive and serving another step
        # none, or a dead one (whose socket may still accept: a process it forked can hold the fd)
        sock.unlink(missing_ok=True)
        _start(dataclasses.replace(config, model=str(model_dir)), sock, owner)
        return greeted(sock, _START_TIMEOUT_S)  # ours and idle: only a loaded machine delays it


def greeted(sock: Path, wait: float):
    """A connection the service at `sock` has taken (it greets when it does), else None."""
    try:
        conn = Client(str(sock), family="AF_UNIX")
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    try:
        if conn.poll(wait) and conn.recv() == ("ok", "ready"):
            return conn
    except (EOFError, OSError):
        pass
    conn.close()
    return None


def running(pid_file: Path) -> bool:
    """Whether the service that wrote `pid_file` is alive (a zombie is not)."""
    try:
        stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _start(config: EngineConfig, sock: Path, owner: int) -> None:
    ready = sock.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    with sock.with_suffix(".log").open("a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "masa.engines.service", json.dumps(dataclasses.asdict(config)),
                                 str(sock), str(owner)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)  # outlives this step; not in its process group
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = sock.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the engine service did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.05)


def stop_all(folder: Path) -> None:
    """Stop every service under `folder` (the owner calls it at its end; they also exit on their own
    once it is gone)."""
    for pid_file in folder.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), 15)
        except (ValueError, OSError):
            pass


def exit_with(owner: int) -> None:
    def watch() -> None:
        while True:
            try:
                os.kill(owner, 0)
            except OSError:
                os._exit(0)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def serve(config: EngineConfig, sock: Path, owner: int) -> None:
    """The service: start the engine, then answer one client after another until the owner is gone."""
    exit_with(owner)
    engine = start_engines(config)
    listener = Listener(str(sock), family="AF_UNIX")  # in a private folder (masa.pipeline.warm: mkdtemp)
    sock.with_suffix(".pid").write_text(str(os.getpid()))
    sock.with_suffix(".ready").write_text(str(engine.startup_s))
    fresh: str | None = str(engine.model_dir)
    while True:
        with listener.accept() as conn:
            try:
                conn.send(("ok", "ready"))
            except OSError:
                continue  # a client that gave up waiting (it started its own engine)
            try:
                answer(conn, engine, fresh)
                fresh = None
            except BaseException:  # noqa: BLE001 - reported to the step, then a clean exit (see docstring)
                try:
                    conn.send(("error", traceback.format_exc()))
                finally:
                    sock.unlink(missing_ok=True)
                    os._exit(1)


if __name__ == "__main__":
    serve(EngineConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3]))
