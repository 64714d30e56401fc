"""The engine backends, registered by name, and how one engine of a named backend starts.

Below both `masa.engines.make_engine` (which adds `auto` and replicas) and the replicas' child
processes (`masa.engines.replicated`), so neither imports the other back.
"""

from __future__ import annotations

import importlib
import importlib.util

from masa.algo.registry import Registry
from masa.engines.base import Engine, EngineConfig

BACKENDS: Registry = Registry("engine backend")


# The backends' modules import vLLM or torch + transformers: loaded only when that backend starts, so
# importing masa.engines (the configuration, the CLI, a CPU-only step) costs neither.
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


def backend_name(config: EngineConfig) -> str:
    """`config.backend`, with `auto` resolved: vLLM if installed, else transformers."""
    if config.backend == "auto":
        return "vllm" if vllm_available() else "transformers"
    return config.backend


def preload_backend(config: EngineConfig) -> None:
    """Import the backend's libraries (vLLM; or torch + transformers): the part of an engine's start
    that needs no checkpoint, so it can run while the checkpoint is still being fetched."""
    name = backend_name(config)
    importlib.import_module("vllm" if name == "vllm" else "transformers")
    importlib.import_module(f"masa.engines.{'vllm_engine' if name == 'vllm' else 'hf_engine'}")


def start_backend(config: EngineConfig) -> Engine:
    """One engine of the configured backend (no replicas)."""
    return BACKENDS.get(backend_name(config))(config)
