"""The toy recipe: every knob of the toy build, frozen and validated; its hash keys the cache.

`TOY` is the default profile (the pipeline's laptop run), `SMOKE` a cheaper variant for the `smoke`
preset and tests: fewer problems and a short warm start (it does not aim at the target pass rate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from masa.configbase import check, raise_if
from masa.toy.model import VLLM_HEAD_DIMS

# Bump when the build's code changes what it produces (task text, tokenizer, model, warm start):
# it is part of the cache key, so old caches are not reused.
CODE_VERSION = 2


@dataclass(frozen=True)
class ToyRecipe:
    name: str = "toy"
    seed: int = 0
    # task
    n_train: int = 4000
    n_heldout: int = 500
    max_digits: int = 4  # addition / subtraction operands: 1..max_digits digits
    max_mul_digits: int = 3  # multiplication: 1..max_mul_digits digits times one digit
    # the run's G and token budget, as rendered in the meta prompt and bounding its values (the
    # defaults are those of the `toy` preset; masa.steps.prepare replaces them with the run's)
    n_solution: int = 8
    max_response_tokens: int = 256
    max_model_len: int = 512
    # tokenizer and model (Qwen2)
    vocab_size: int = 512
    hidden_size: int = 64
    n_layers: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    # warm start
    lr: float = 3e-3
    batch_size: int = 64
    warmup_steps: int = 20
    meta_every: int = 4  # every meta_every-th batch is meta examples (0: none)
    max_steps: int = 1200
    probe_every: int = 50
    n_probe: int = 32  # probe prompts (from the train split)
    probe_samples: int = 4  # samples per probe prompt, T=1
    target_pass_rate: float = 0.4
    target_meta_parse_rate: float = 0.9

    def __post_init__(self) -> None:
        p: list[str] = []
        check(bool(self.name) and self.name.replace("-", "").isalnum(), "name", "must be a non-empty slug", p)
        for k in ("n_train", "n_heldout", "n_solution", "max_response_tokens", "batch_size", "max_steps",
                  "probe_every", "n_probe", "probe_samples", "warmup_steps", "n_layers"):
            check(getattr(self, k) >= 1, k, "must be >= 1", p)
        check(1 <= self.max_digits <= 4, "max_digits", "must be in 1..4", p)
        check(1 <= self.max_mul_digits <= 4, "max_mul_digits", "must be in 1..4", p)
        check(self.n_probe <= self.n_train, "n_probe", f"must be <= n_train ({self.n_train})", p)
        check(self.max_model_len > self.max_response_tokens, "max_model_len", "must exceed max_response_tokens", p)
        check(self.vocab_size >= 259, "vocab_size", "must be >= 259 (256 bytes + 3 special tokens)", p)
        check(self.head_dim in VLLM_HEAD_DIMS, "head_dim", f"must be one of {VLLM_HEAD_DIMS} (vLLM CPU)", p)
        check(self.hidden_size % self.head_dim == 0, "hidden_size", "must be a multiple of head_dim", p)
        check(self.lr > 0, "lr", "must be > 0", p)
        check(self.meta_every == 0 or self.meta_every >= 2, "meta_every", "must be 0 (no meta) or >= 2", p)
        check(0 < self.target_pass_rate <= 1, "target_pass_rate", "must be in (0, 1]", p)
        check(0 <= self.target_meta_parse_rate <= 1, "target_meta_parse_rate", "must be in [0, 1]", p)
        raise_if(p)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """16 hex digits over the recipe's values and CODE_VERSION (the cache key)."""
        blob = json.dumps({"code_version": CODE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


TOY = ToyRecipe()
# Same model shape and formats as TOY, so the pipeline's smoke run exercises the same code paths; it is
# barely trained (it writes the formats only now and then), which is enough for plumbing tests.
# Its G and token budget are those of the `smoke` preset, so `masa toy build --recipe smoke` is the
# build the pipeline's smoke run uses (the pipeline replaces them with the run's values).
SMOKE = dataclasses.replace(TOY, name="smoke", n_solution=4, max_response_tokens=128, n_train=128,
                            n_heldout=32, max_steps=30, probe_every=30, n_probe=4, probe_samples=2)
RECIPES = {"toy": TOY, "smoke": SMOKE}


def get_recipe(name: str) -> ToyRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown toy recipe {name!r}; valid: {', '.join(sorted(RECIPES))}") from None
