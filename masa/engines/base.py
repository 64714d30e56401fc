"""The inference-engine contract shared by the vLLM and transformers backends.

A request is a tokenised prompt plus its own sampling parameters; the engine returns, per request,
`n` samples each holding the text, the prompt and response token ids, the log-probability of every
sampled token and a finish reason (`stop`, `length` or `cutoff`).

Log-probabilities are those of the *raw model* (log-softmax of the logits at temperature 1, before
top-p/top-k), i.e. vLLM's ``logprobs_mode="raw_logprobs"``. That is what the training step recomputes
for the PPO ratio. When sampling at temperature != 1 (or with top-p/top-k) the samples come from the
sharpened/truncated policy while the stored "old" log-probs stay those of the T=1 model; the trainer
must then compute its "new" log-probs at T=1 too, so the ratio is exactly 1 before the first update.
(verl instead divides the logits by the temperature in the actor; vLLM's ``processed_logprobs`` would
match that but also bakes in top-p/top-k masking, which no trainer reproduces.) We do not rescale.

`cutoff` differs from `length`: it is reported when a sample hit its prompt's *budget* (`budget`,
set by MASA-efficient's early cutoff) below the global `max_tokens`. Vanilla GRPO has no budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from masa.configbase import check, raise_if
from masa.storage import ModelNotFoundError, resolve_model  # one error type for a bad model, wherever found

FinishReason = Literal["stop", "length", "cutoff"]


@dataclass(frozen=True)
class SamplingSpec:
    """Per-request sampling parameters. `top_k=-1` and `top_p=1` disable truncation.

    `max_tokens` is the global response limit; `budget` (optional) a per-prompt limit below it whose
    hit is reported as `cutoff`. `seed` makes the request's n samples reproducible within a backend
    (vLLM gives sample i the seed `seed + i`).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    budget: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.n >= 1, "n", f"must be >= 1, got {self.n}", p)
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}", p)
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}", p)
        check(self.top_k == -1 or self.top_k >= 1, "top_k", f"must be -1 (off) or >= 1, got {self.top_k}", p)
        check(self.max_tokens >= 1, "max_tokens", f"must be >= 1, got {self.max_tokens}", p)
        check(self.budget is None or self.budget >= 1, "budget", f"must be >= 1 or None, got {self.budget}", p)
        check(all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings", p)
        raise_if(p)

    @property
    def limit(self) -> int:
        """Tokens the engine may generate: the budget when it is tighter than max_tokens."""
        return self.max_tokens if self.budget is None else min(self.budget, self.max_tokens)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingSpec = field(default_factory=SamplingSpec)


@dataclass(frozen=True)
class Sample:
    text: str
    prompt_token_ids: tuple[int, ...]
    response_token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # one per response token, raw model log-softmax (T=1)
    finish_reason: FinishReason


def finish_reason(stopped: bool, n_tokens: int, spec: SamplingSpec) -> FinishReason:
    """`stop` (EOS or stop string), else `cutoff` if the per-prompt budget was hit below max_tokens,
    else `length`."""
    if stopped:
        return "stop"
    if spec.budget is not None and spec.budget < spec.max_tokens and n_tokens >= spec.budget:
        return "cutoff"
    return "length"


@dataclass(frozen=True)
class EngineConfig:
    """How to start an engine. `model` is a local dir, a Hugging Face id or an `s3://` URI.

    backend: `vllm`, `transformers` or `auto` (vLLM where importable). `dtype="auto"` means float32
    on CPU (vLLM's CPU backend and our log-prob check need it) and the checkpoint's dtype on GPU.
    """

    model: str
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.2
    tensor_parallel_size: int = 1
    replicas: int = 1  # > 1: that many engines of tensor_parallel_size GPUs (masa.engines.replicated)
    # replicas on a machine without GPUs, in place of `replicas` (masa.engines.for_this_host; None: the
    # same count): vLLM's CPU engine runs its scheduler in one Python thread, so one engine keeps about
    # one core busy
    cpu_replicas: int | None = None
    seed: int = 0
    enforce_eager: bool = True  # CUDA graphs / compile cost more than they save for short RL rounds
    load_format: Literal["auto", "fastsafetensors"] = "auto"  # vLLM's; GPU only (for_this_host)

    def __post_init__(self) -> None:
        p: list[str] = []
        check(bool(self.model), "model", "must be a path, HF id or s3:// URI", p)
        check(self.max_model_len >= 8, "max_model_len", "must be >= 8", p)
        check(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]", p)
        check(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1", p)
        check(self.replicas >= 1, "replicas", "must be >= 1", p)
        check(self.cpu_replicas is None or self.cpu_replicas >= 1, "cpu_replicas", "must be >= 1 or None", p)
        raise_if(p)


class Engine(Protocol):
    """What the rollout and benchmark steps need from an inference backend."""

    backend: str
    model_dir: Path
    startup_s: float  # wall seconds from construction to ready (model load included)
    max_model_len: int  # context served (prompt + response): the requested one, capped by the model's positions

    @property
    def tokenizer(self): ...

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """One list of `request.sampling.n` samples per request, in request order."""
        ...

    def load_weights(self, model_dir: str | Path) -> None:
        """Replace the policy weights in place (same architecture) from a checkpoint directory."""
        ...

    def close(self) -> None: ...


def resolve_model_dir(model: str) -> Path:
    """A local directory holding `config.json` and weights for `model` (local dir, HF id or s3:// URI).

    Resolution (download of s3:// and HF ids into the cache) is `masa.storage.resolve_model`'s; we add
    the check that weights are there, so a bad model fails here, naming the path, not inside vLLM.
    """
    try:
        local = Path(resolve_model(model))
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"cannot load model {model!r}: {e}") from e
    if not any(local.glob("*.safetensors")) and not any(local.glob("*.bin")):
        raise ModelNotFoundError(f"model {model!r}: {local} has no *.safetensors or *.bin weights")
    return local
