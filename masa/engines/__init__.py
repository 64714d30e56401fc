"""Inference engines: one interface (`masa.engines.base.Engine`), two backends (vLLM, transformers).

    engine = make_engine(EngineConfig(model="path/or/hf-id/or/s3-uri"))
    samples = engine.generate([GenerationRequest(prompt_ids, SamplingSpec(n=4, max_tokens=64, seed=1))])
    engine.load_weights(new_checkpoint_dir)   # in place, no restart

Backends are registered by name; `auto` picks vLLM where it is importable, else transformers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from masa.engines.backends import BACKENDS, backend_name, vllm_available
from masa.engines.base import (
    Engine,
    EngineConfig,
    FinishReason,
    GenerationRequest,
    ModelNotFoundError,
    Sample,
    SamplingSpec,
    finish_reason,
    resolve_model_dir,
)
from masa.engines.replicated import start_engines
from masa.engines.service import RemoteEngine, ServiceBusy, enabled_for
from masa.telemetry.progress import phase


def make_engine(config: EngineConfig, fetch: Callable[[], str | Path] | None = None) -> Engine:
    """Start the backend named by `config.backend` (`auto`: vLLM if installed, else transformers),
    `config.replicas` times over when that is above one (`config.cpu_replicas` on a machine without
    GPUs: `for_this_host`). `fetch` (optional): brings the checkpoint and returns its directory
    (`config.model` then only names it); a step's own engines import their backend meanwhile, so
    the download or hand-over overlaps their start (masa.engines.replicated)."""
    config = for_this_host(config)
    name = backend_name(config)
    service = enabled_for(config)
    phase(f"starting the {name} engine" + (f" ×{config.replicas}" if config.replicas > 1 else "")
          if service is None else f"loading the policy into the run's {name} engine service")
    t0 = time.perf_counter()
    if service and fetch:  # the run's engines are up already: nothing to overlap
        config, fetch = replace(config, model=str(fetch())), None
    # warm `masa run`: the run's engines; else this step's own (data-parallel replicas when > 1)
    engine = (_from_service(config, service) if service else None) or start_engines(config, fetch)
    phase(f"{name} engine ready in {time.perf_counter() - t0:.1f} s; generating")
    return engine


def for_this_host(config: EngineConfig) -> EngineConfig:
    """`config` for the machine it starts on: where CUDA is present, as configured (`replicas`: the
    step's GPUs split into engines, masa.config.engine_parallelism); else `cpu_replicas` engines of
    vLLM's CPU backend, each a process on its share of the cores, loading the checkpoint the default
    way (fastsafetensors builds its tensors on a CUDA device). Each request carries its own seed, so
    the samples do not depend on the count (tests/test_engine_parallelism.py)."""
    cpu = replace(config, replicas=config.cpu_replicas or config.replicas, load_format="auto")
    if cpu == config:
        return config
    import torch  # the steps that start engines have it loaded; masa.engines itself stays light

    return config if torch.cuda.is_available() else cpu


def _from_service(config: EngineConfig, service: tuple) -> Engine | None:
    """`masa run`'s warm mode: the run's engine for this configuration (masa.engines.service); None
    when it is serving another step."""
    try:
        return RemoteEngine(config, *service)
    except ServiceBusy:
        return None


__all__ = [
    "BACKENDS", "Engine", "EngineConfig", "FinishReason", "GenerationRequest", "ModelNotFoundError", "Sample",
    "SamplingSpec", "finish_reason", "for_this_host", "make_engine", "resolve_model_dir", "vllm_available",
]
