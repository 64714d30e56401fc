"""Data-parallel engine replicas in one pod: `replicas` child processes, each one engine on its own
`tensor_parallel_size` GPUs (CUDA_VISIBLE_DEVICES), behind the one `Engine` interface.

Why our own: vLLM's offline `LLM(data_parallel_size=N)` refuses single-process use
(vllm/entrypoints/llm.py in 0.32: "not supported for single-process usage and may hang"); its
multi-process example needs a launcher per rank. A model that fits one GPU (Qwen3-1.7B, Qwen3-8B
in bf16) decodes faster as 8 replicas than as one TP-8 engine, which pays an all-reduce per layer.

Each `generate` call's requests are cut into contiguous, near-equal chunks, one per replica, and the
answers concatenated in request order. Every request carries its own seed
(`masa.runner.rollout.request_seed`), so its samples do not depend on which replica served it, nor
on how many there are: on CPU the same tokens, log-probs to float32 rounding
(tests/test_engine_parallelism.py); on GPU up to batch-shape-dependent kernels, as for any change of batch.

A step that still has to fetch its checkpoint passes `fetch` (`start_engines`): the replicas start
first and import their backend while it runs, then take the directory it returns, so the download or
the hand-over from the serving TrainJob overlaps the part of their start that needs no weights
(bench/bench_prestart.py).
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from masa.engines.backends import backend_name, preload_backend, start_backend
from masa.engines.base import EngineConfig, GenerationRequest, Sample, resolve_model_dir
from masa.engines.wire import answer


def gpu_slices(replicas: int, tensor_parallel_size: int, visible: str | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each replica: consecutive groups of `tensor_parallel_size` of the
    pod's devices (`visible`, the pod's own CUDA_VISIBLE_DEVICES, else 0..N-1)."""
    devices = visible.split(",") if visible else [str(i) for i in range(replicas * tensor_parallel_size)]
    if len(devices) < replicas * tensor_parallel_size:
        raise ValueError(f"{replicas} replicas x {tensor_parallel_size} GPUs need {replicas * tensor_parallel_size} "
                         f"devices; CUDA_VISIBLE_DEVICES={visible!r} has {len(devices)}")
    t = tensor_parallel_size
    return [",".join(devices[r * t:(r + 1) * t]) for r in range(replicas)]


def chunks(n: int, parts: int) -> list[range]:
    """`range(n)` cut into `parts` contiguous pieces whose sizes differ by at most one (first ones larger)."""
    q, r = divmod(n, parts)
    starts = [i * q + min(i, r) for i in range(parts + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(parts)]


def cpu_threads(replicas: int) -> str | None:
    """OMP_NUM_THREADS of each CPU replica: its share of this process's cores (None: the user's own
    OMP_NUM_THREADS stands). Without it every replica runs an OpenMP thread per core, and on 2 cores
    two replicas spin against each other: measured on the toy model, 200 prompts x 8, 2 cores
    (2026-12-02): one engine 15.0 s, two replicas 27.7 s, two replicas of one thread each 10.4 s."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return str(max(1, cores // replicas))


@contextmanager
def _env(key: str, value: str | None):
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _serve(conn, config: EngineConfig, deferred: bool = False) -> None:
    """A replica: one engine, answering ("generate", requests) / ("load", dir) / ("close", None).
    `deferred`: import the backend first, then wait for ("model", dir) (or ("close", None): the
    fetch failed) before starting the engine on it."""
    engine = None
    try:
        if deferred:
            preload_backend(config)
            kind, model = conn.recv()
            if kind != "model":
                conn.send(("ok", None))
                return
            config = dataclasses.replace(config, model=model)
        engine = start_backend(config)
        conn.send(("ok", (engine.startup_s, engine.max_model_len)))
        answer(conn, engine)
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the replica's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        # after an error too: vLLM's EngineCore is our child, and this process cannot exit while it runs
        if engine is not None:
            engine.close()


class ReplicatedEngine:
    """`config.replicas` engines of `config.tensor_parallel_size` GPUs each (see the module docstring)."""

    def __init__(self, config: EngineConfig, fetch: Callable[[], str | Path] | None = None) -> None:
        """`fetch` (optional): brings the checkpoint and returns its directory, called once the
        replicas are importing their backend (`config.model` then only names it)."""
        t0 = time.perf_counter()
        self.config = config
        self.model_dir = None if fetch else resolve_model_dir(config.model)
        one = dataclasses.replace(config, model=str(self.model_dir or config.model), replicas=1)
        ctx = multiprocessing.get_context("spawn")  # no forked CUDA or vLLM state
        slices = gpu_slices(config.replicas, config.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._conns, self._procs = [], []
        gpu = _has_gpu()
        for devices in slices:
            parent, child = ctx.Pipe()
            with _env("CUDA_VISIBLE_DEVICES", devices if gpu else None), \
                    _env("OMP_NUM_THREADS", None if gpu else cpu_threads(config.replicas)):
                # not daemonic: a daemonic process may not start children, and vLLM starts its
                # EngineCore (V1 multiprocessing, the GPU default) and its tensor-parallel workers as
                # children ("daemonic processes are not allowed to have children", vllm-project/vllm#18308).
                # A replica still ends with us: it returns at its pipe's end of file (masa.engines.wire),
                # and close() runs at interpreter exit before multiprocessing joins its children.
                proc = ctx.Process(target=_serve, args=(child, one, fetch is not None), daemon=False)
                proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        atexit.register(self.close)
        if fetch:
            self._take_model(fetch)
            t0 = time.perf_counter()  # the start-up a step waits for beyond its checkpoint's fetch
        started = self._gather()
        self.replica_startup_s = [t for t, _ in started]
        self.max_model_len = min(n for _, n in started)  # the context served, as every replica serves it
        self.backend = f"{config.backend}x{config.replicas}"
        self._tokenizer = None
        self.startup_s = time.perf_counter() - t0

    def _take_model(self, fetch: Callable[[], str | Path]) -> None:
        """Fetch the checkpoint while the replicas import, then hand them its directory; a failed
        fetch stops them before it is raised."""
        try:
            self.model_dir = resolve_model_dir(str(fetch()))
        except BaseException:
            self.close()
            raise
        for conn in self._conns:
            try:
                conn.send(("model", str(self.model_dir)))
            except OSError:  # a replica whose import failed has gone: _gather raises its traceback
                pass

    def _gather(self, conns=None) -> list:
        out = []
        for conn in conns or self._conns:
            status, value = conn.recv()
            if status != "ok":
                self.close()
                raise RuntimeError(f"engine replica failed:\n{value}")
            out.append(value)
        return out

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # the replicas' own tokenizer, loaded from the same checkpoint
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return self._tokenizer

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        parts = [p for p in chunks(len(requests), len(self._conns))]
        busy = [(conn, part) for conn, part in zip(self._conns, parts, strict=True) if len(part)]
        for conn, part in busy:
            conn.send(("generate", [requests[i] for i in part]))
        return [s for group in self._gather([c for c, _ in busy]) for s in group]

    def load_weights(self, model_dir: str | Path) -> None:
        local = resolve_model_dir(str(model_dir))
        for conn in self._conns:
            conn.send(("load", str(local)))
        self._gather()
        self.model_dir = local

    def close(self) -> None:
        atexit.unregister(self.close)
        conns, self._conns = self._conns, []
        for conn, proc in zip(conns, self._procs, strict=True):
            if proc.is_alive():
                try:
                    conn.send(("close", None))
                    if conn.poll(60):  # a replica that failed no longer answers: don't wait on it forever
                        conn.recv()
                except (OSError, EOFError):
                    pass
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        self._procs = []


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def start_engines(config: EngineConfig, fetch: Callable[[], str | Path] | None = None):
    """One engine of the configured backend, or `config.replicas` of them behind one `Engine`: what a
    step starts for itself and what a run's engine service holds (masa.engines.service). `fetch`
    (optional): brings the checkpoint and returns its directory, while the backend imports (in the
    replicas, or in a thread beside it for one engine in this process)."""
    if config.replicas > 1:
        return ReplicatedEngine(dataclasses.replace(config, backend=backend_name(config)), fetch)
    if fetch is None:
        return start_backend(config)
    with ThreadPoolExecutor(1, thread_name_prefix="masa-preload") as pool:
        imported = pool.submit(preload_backend, config)
        model = fetch()
        imported.result()
    return start_backend(dataclasses.replace(config, model=str(model)))
