"""The toy recipe: every knob of the toy build, frozen and validated; its hash keys the cache.

`BROAD` is the model of the `toy` preset (the pipeline's laptop run, since 2026-12-07): `REASONED`, the
preset's from 2026-12-05, with a warm start on more problems. `REASONED` is `TOY`'s task with a 20-token
prediction, so the meta path has the paper's share of a round (docs/toy.md). `TOY`, the first recipe
and `build()`'s default, is the base the others are derived from. `SMOKE` is a cheaper variant
for the `smoke` preset and tests: fewer problems and a short warm start.

The warm start runs a fixed number of steps (`steps`), not "until a sampled probe reaches a target":
a sampled stopping rule makes the step count, and so the model, depend on the last bits of every
kernel's floating-point result, which differ between machines (measured: the same recipe hash stopped
at probe pass rate 0.547 on one machine and 0.61 on another). A fixed count, fixed seeds, a fixed thread count
and deterministic kernels, under MKL's strict reproducibility mode, give the same weights for the same recipe
(docs/toy.md, "Reproducibility").
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
# 3: fixed step count, cosine lr decay, deterministic kernels; 4: MKL's strict CNR (masa/__init__.py)
CODE_VERSION = 4
TASKS = ("columns", "chain")
META_REASONING = ("prose", "short", "none")
# Fields added after CODE_VERSION 3: they enter the hash only when they differ from these values (the
# recipes' hashes under CODE_VERSION 3, quoted in docs, stayed the same when the fields came).
_LATER_FIELDS = {"task": "columns", "max_ops": 3, "key_tokens": False, "meta_reasoning": "prose",
                 "solution_analysis": False, "wander": 0.0, "n_warm_extra": 0, "micro_batches": 1}


@dataclass(frozen=True)
class ToyRecipe:
    name: str = "toy"
    seed: int = 0
    # task
    n_train: int = 4000
    # held-out problems: the toy preset benchmarks up to 1000 of them (standard error of avg@k ~1.2
    # points at k = 8; masa/presets/toy.yaml), the rounds a seeded sample of data.heldout_size
    n_heldout: int = 1000
    max_digits: int = 4  # addition / subtraction operands: 1..max_digits digits
    max_mul_digits: int = 3  # multiplication: 1..max_mul_digits digits times one digit
    # "columns": one operation per problem (masa.toy.task); "chain": 1..max_ops additions and
    # subtractions worked as steps (masa.toy.chain), solutions several times a meta prediction's length
    task: str = "columns"
    max_ops: int = 3
    # the meta path's fixed strings (<meta>, </meta>, the JSON keys) as one token each: a prediction
    # then costs about its values, not its punctuation (masa.toy.build.META_KEY_TOKENS)
    key_tokens: bool = False
    # the line of reasoning the warm start's meta examples open with: "prose" ("A 4-digit subtraction
    # with 3 borrows."), "short" ("4-digit, 3 borrows.": the facts a pass rate depends on, in fewer
    # tokens) or "none" (an empty <meta></meta>: the prediction is the JSON alone)
    meta_reasoning: str = "prose"
    # the warm start's solutions open with that line ("A 4-digit subtraction with 3 borrows.")
    solution_analysis: bool = False
    # the chance, at each column that carries or borrows, that a warm-start solution takes a wrong turn
    # there (re-checks that column, flips between its value and one off, settles on the wrong one and
    # boxes a wrong answer; masa.toy.task.wandering): failing samples that run long, more often on harder
    # problems, as a base model's do. 0: every warm-start solution is correct
    wander: float = 0.0
    # problems the warm start trains on beyond the train split's (drawn from their own stream, none in
    # either split; the splits stay what the seed always drew): 4,000 problems seen ~12 times each
    # leave it to the build seed whether the model learns to carry across four columns (base accuracy
    # 0.09-0.36 over seeds 0-6 of `reasoned`; docs/toy.md, "The build seed's spread"). 0: the train split only
    n_warm_extra: int = 0
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
    # cosine decay from lr to lr * final_lr_ratio over `steps`: the last steps move the weights little,
    # so the saved model does not depend on whether the last batch was a meta or a solution batch
    final_lr_ratio: float = 0.1
    meta_every: int = 4  # every meta_every-th batch is meta examples (0: none)
    # each warm-start batch run as this many length-sorted pieces, each padded to its own longest
    # (masa.toy.warmstart.backward_in_pieces): the same gradient, without `wander`'s few long examples
    # padding the whole batch. 1: the batch padded whole, as the recipes before it were built
    micro_batches: int = 1
    # optimizer steps of the warm start, fixed (the earlier stop-on-sampled-probe rule reached a probe
    # pass rate of 0.4 and meta parse 0.9 at step 850-1050; docs/toy.md)
    steps: int = 1000
    # the final probe (recorded in artifacts.json, not a stopping rule): n_probe train prompts,
    # probe_samples samples each at T=1
    n_probe: int = 32
    probe_samples: int = 4

    def __post_init__(self) -> None:
        p: list[str] = []
        check(bool(self.name) and self.name.replace("-", "").isalnum(), "name", "must be a non-empty slug", p)
        check(self.n_warm_extra >= 0, "n_warm_extra", "must be >= 0", p)
        check(self.task == "columns" or not self.n_warm_extra, "n_warm_extra", "needs task columns", p)
        for k in ("n_train", "n_heldout", "n_solution", "max_response_tokens", "batch_size", "steps",
                  "n_probe", "probe_samples", "warmup_steps", "n_layers"):
            check(getattr(self, k) >= 1, k, "must be >= 1", p)
        check(1 <= self.max_digits <= 4, "max_digits", "must be in 1..4", p)
        check(1 <= self.max_mul_digits <= 4, "max_mul_digits", "must be in 1..4", p)
        check(self.task in TASKS, "task", f"must be one of {TASKS}", p)
        check(1 <= self.max_ops <= 4, "max_ops", "must be in 1..4", p)
        check(self.meta_reasoning in META_REASONING, "meta_reasoning", f"must be one of {META_REASONING}", p)
        # the chain task's problems have no analysis line or short reasoning
        check(self.task == "columns" or not self.solution_analysis, "solution_analysis", "needs task columns", p)
        check(self.task == "columns" or self.meta_reasoning != "short", "meta_reasoning",
              "'short' needs task columns", p)
        check(0 <= self.wander < 1, "wander", "must be in [0, 1)", p)
        check(self.task == "columns" or not self.wander, "wander", "needs task columns", p)
        check(self.n_probe <= self.n_train, "n_probe", f"must be <= n_train ({self.n_train})", p)
        check(self.max_model_len > self.max_response_tokens, "max_model_len", "must exceed max_response_tokens", p)
        check(self.vocab_size >= 259, "vocab_size", "must be >= 259 (256 bytes + 3 special tokens)", p)
        check(self.head_dim in VLLM_HEAD_DIMS, "head_dim", f"must be one of {VLLM_HEAD_DIMS} (vLLM CPU)", p)
        check(self.hidden_size % self.head_dim == 0, "hidden_size", "must be a multiple of head_dim", p)
        check(self.lr > 0, "lr", "must be > 0", p)
        check(self.meta_every == 0 or self.meta_every >= 2, "meta_every", "must be 0 (no meta) or >= 2", p)
        check(0 <= self.final_lr_ratio <= 1, "final_lr_ratio", "must be in [0, 1]", p)
        check(1 <= self.micro_batches <= self.batch_size, "micro_batches", f"must be in 1..batch_size ({self.batch_size})", p)
        raise_if(p)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """16 hex digits over the recipe's values and CODE_VERSION (the cache key)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
        blob = json.dumps({"code_version": CODE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


TOY = ToyRecipe()
# Same model shape and formats as TOY, so the pipeline's smoke run exercises the same code paths; it is
# barely trained (it writes the formats only now and then), which is enough for plumbing tests.
# Its G and token budget are those of the `smoke` preset, so `masa toy build --recipe smoke` is the
# build the pipeline's smoke run uses (the pipeline replaces them with the run's values).
SMOKE = dataclasses.replace(TOY, name="smoke", n_solution=4, max_response_tokens=128, n_train=128,
                            n_heldout=32, steps=30, n_probe=4, probe_samples=2)
# The chain task (issue 15): solutions of 1-3 steps, ~80-250 tokens, against ~30-token predictions.
# Longer sequences per example, so half the batch of TOY for about the same seconds per step.
CHAIN = dataclasses.replace(TOY, name="chain", task="chain", max_ops=3, max_digits=3, key_tokens=True,
                            max_response_tokens=384, max_model_len=640, batch_size=32, steps=900)
# Issue 15's shorter predictions (docs/toy.md, "Shorter predictions"): the `columns` task with a
# prediction of ~20 tokens instead of ~46 (its keys one token each, no reasoning), then with an analysis
# line opening each solution, then with a short reasoning line back in the prediction: `reasoned`, the
# `toy` preset's model from 2026-12-05 to 2026-12-07 (meta path ~15% of a round at 4 meta samples;
# `toy`'s was 41% at 8).
TERSE = dataclasses.replace(TOY, name="terse", key_tokens=True, meta_reasoning="none")
ANALYSED = dataclasses.replace(TERSE, name="analysed", solution_analysis=True)
REASONED = dataclasses.replace(ANALYSED, name="reasoned", meta_reasoning="short")
# `reasoned` whose warm start also holds solutions that take a wrong turn at a carry or borrow (one in
# ten such columns) and end wrong: failing samples run long, so early cutoff has work to do (issue 15;
# docs/toy.md, "Failing samples that run long"). Not the preset's: measured beside it
WANDERING = dataclasses.replace(REASONED, name="wandering", wander=0.1)
# `reasoned` whose warm start draws from 20,000 problems instead of the train split's 4,000, so that the
# build seed no longer decides whether the model learns the long columns (issue 15; docs/toy.md, "The
# build seed's spread"): the `toy` preset's model since 2026-12-07
BROAD = dataclasses.replace(REASONED, name="broad", n_warm_extra=16000)
# `broad` with `wandering`'s wrong turns at half its rate (0.1 cost two build seeds of three half their
# base accuracy), each batch run in 4 length-sorted pieces so that the few long ones do not pad it whole
# (`wandering` took 320-341 s to build, over issue 15's 4 minutes): a toy with all three of the issue's
# cost shapes (docs/toy.md, "Wrong turns within the build budget")
WANDERING_BROAD = dataclasses.replace(BROAD, name="wandering-broad", wander=0.05, micro_batches=4)
RECIPES = {"toy": TOY, "smoke": SMOKE, "chain": CHAIN, "terse": TERSE, "analysed": ANALYSED, "reasoned": REASONED,
           "wandering": WANDERING, "broad": BROAD, "wandering-broad": WANDERING_BROAD}


def get_recipe(name: str) -> ToyRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown toy recipe {name!r}; valid: {', '.join(sorted(RECIPES))}") from None
