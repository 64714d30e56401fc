"""Inference engines: one interface (`masa.engines.base.Engine`), two backends (vLLM, transformers).

    engine = make_engine(EngineConfig(model="path/or/hf-id/or/s3-uri"))
    samples = engine.generate([GenerationRequest(prompt_ids, SamplingSpec(n=4, max_tokens=64, seed=1))])
    engine.load_weights(new_checkpoint_dir)   # in place, no restart

Backends are registered by name; `auto` picks vLLM where it is importable, else transformers.
"""

from __future__ import annotations

import importlib.util
import time

from masa.algo.registry import Registry
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
from masa.telemetry.progress import phase

BACKENDS: Registry = Registry("engine backend")


@BACKENDS.register("vllm")
def _vllm(config: EngineConfig) -> Engine:
    from masa.engines.vllm_engine import VLLMEngine

    return VLLMEngine(config)


@BACKENDS.register("transformers")
def _transformers(config: EngineConfig) -> Engine:
    from masa.engines.hf_engine import HFEngine

    return HFEngine(config)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_engine(config: EngineConfig) -> Engine:
    """Start the backend named by `config.backend` (`auto`: vLLM if installed, else transformers),
    `config.replicas` times over when that is above one."""
    name = config.backend
    if name == "auto":
        name = "vllm" if vllm_available() else "transformers"
    phase(f"starting the {name} engine" + (f" ×{config.replicas}" if config.replicas > 1 else ""))
    t0 = time.perf_counter()
    if config.replicas > 1:  # data-parallel replicas, each this backend on its own GPUs
        from dataclasses import replace

        from masa.engines.replicated import ReplicatedEngine

        engine = ReplicatedEngine(replace(config, backend=name))
    else:
        engine = BACKENDS.get(name)(config)
    phase(f"{name} engine ready in {time.perf_counter() - t0:.1f} s; generating")
    return engine


__all__ = [
    "BACKENDS", "Engine", "EngineConfig", "FinishReason", "GenerationRequest", "ModelNotFoundError", "Sample",
    "SamplingSpec", "finish_reason", "make_engine", "resolve_model_dir", "vllm_available",
]
