"""Supervised warm start of the toy policy: a fixed number of steps, then one sampled probe.

A plain torch loop (no DeepSpeed: the model is tiny and single-process is fastest on 2 cores). It trains
on two kinds of examples, the loss on completion tokens only:

- solution examples: chat(question) -> digit-by-digit solution ending in ``\\boxed{N}``;
- meta examples: chat(render_meta_prompt(question)) -> ``format_meta_completion`` with the right notions
  but *random* pass_rate (uniform 0..G) and solution_length (uniform over a plausible range). The model
  learns to write parseable meta JSON but not to be calibrated: MASA has to earn the calibration.

Why a fixed step count and not "stop once a sampled probe reaches a target pass rate": the probe is a
draw at T=1, so where it first crosses the target depends on the last bits of every kernel's result,
which differ between machines; the build then stopped at different steps and gave different models
for one recipe. The count is fixed, the learning rate decays (cosine) so the last steps move the
weights little, and the probe at the end only records what was built (GRPO learns only from groups
whose rewards differ, so its pass rate and mixed share are the figures to watch).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from masa.toy.task import ArithmeticProblem, extract_boxed_int
from masa.toy.tokenizer import chat_prompt


@dataclass(frozen=True)
class Example:
    """One tokenized training example: `ids` = prompt + completion + eos; loss on ids[n_prompt:]."""

    ids: tuple[int, ...]
    n_prompt: int


@dataclass(frozen=True)
class ProbeStats:
    """Sampled (T=1) statistics of the policy on a probe set (P prompts, n samples each)."""

    step: int
    pass_rate: float  # mean over P*n samples
    mixed_fraction: float  # share of prompts with 0 < correct < n
    meta_parse_rate: float | None  # share of meta samples that parse, None if not probed
    correct_counts: tuple[int, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class WarmStartStats:
    steps: int
    seconds: float
    final_loss: float  # loss of the last batch


def encode(tokenizer, prompt: str, completion: str) -> Example:
    p = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return Example(tuple(p + c + [tokenizer.eos_token_id]), len(p))


def collate(batch: Sequence[Example], pad_id: int):
    """Right-padded input_ids [B, T], attention_mask [B, T], labels [B, T] (-100 off the completion)."""
    import torch

    t = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), t), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), t), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), t), dtype=torch.long)
    for i, e in enumerate(batch):
        row = torch.tensor(e.ids)
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        labels[i, e.n_prompt: len(row)] = row[e.n_prompt:]
    return ids, mask, labels


def sample(model, tokenizer, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    """`n` completions per user-turn text at temperature 1 with no top-k/top-p (as the rollouts sample)."""
    import torch
    from transformers import GenerationConfig

    texts = [chat_prompt(tokenizer, p) for p in prompts for _ in range(n)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    gen = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=gen)
    model.train(was_training)
    decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [decoded[i * n: (i + 1) * n] for i in range(len(prompts))]


def probe(model, tokenizer, problems: Sequence[ArithmeticProblem], *, n: int, max_new_tokens: int, seed: int,
          step: int) -> ProbeStats:
    """Sampled pass rate (boxed integer == answer) of `n` samples per problem."""
    outs = sample(model, tokenizer, [p.question for p in problems], n=n, max_new_tokens=max_new_tokens, seed=seed)
    counts = tuple(sum(extract_boxed_int(t) == p.answer for t in group)
                   for p, group in zip(problems, outs, strict=True))
    return ProbeStats(step=step, pass_rate=sum(counts) / (n * len(problems)),
                      mixed_fraction=sum(0 < c < n for c in counts) / len(problems),
                      meta_parse_rate=None, correct_counts=counts)


def meta_parse_rate(model, tokenizer, meta_prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int,
                    parses: Callable[[str], bool]) -> float:
    """Share of `n` sampled meta responses per prompt that `parses` accepts."""
    outs = sample(model, tokenizer, meta_prompts, n=n, max_new_tokens=max_new_tokens, seed=seed)
    flat = [t for group in outs for t in group]
    return sum(map(parses, flat)) / len(flat)


def lr_at(step: int, *, lr: float, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to lr * final_ratio at step `total` - 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - 1 - warmup)
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def pooled_batches(rng: random.Random, examples: Sequence[Example], batch_size: int, pool: int) -> Iterator[list[Example]]:
    """Endless batches, `pool` batches' worth drawn at once (without replacement): the longest
    `batch_size` examples of the draw make one batch, the others are cut into random batches; all are
    served in a random order. Each example is as likely to be drawn as with one batch at a time, and the
    few long ones pad only their own batch: a warm start in which one solution in ten takes a wrong turn
    twice as long (recipe `wandering`) pads nearly every batch of 64 to it otherwise. Only the longest are
    set apart: batches sorted by length throughout are each of one kind of problem, and cost `broad`'s
    warm start 8 points of base accuracy (seed 0: 0.126 against 0.211; docs/toy.md)."""
    while True:
        drawn = rng.sample(examples, batch_size * pool)
        by_length = sorted(range(len(drawn)), key=lambda i: len(drawn[i].ids))  # stable: ties in draw order
        longest = set(by_length[-batch_size:])
        batches = [[drawn[i] for i in sorted(longest)]]
        rest = [e for i, e in enumerate(drawn) if i not in longest]  # already in random order: rng.sample
        batches += [rest[i * batch_size: (i + 1) * batch_size] for i in range(pool - 1)]
        rng.shuffle(batches)  # of one batch (pool 1): no random call, so one rng.sample per batch as before
        yield from batches


def warm_start(model, tokenizer, solutions: Sequence[Example], metas: Sequence[Example], *, lr: float,
               batch_size: int, meta_every: int, warmup_steps: int, final_lr_ratio: float, steps: int, seed: int,
               length_pool: int = 1, on_step: Callable[[int, float], None] = lambda step, loss: None) -> WarmStartStats:
    """Train for exactly `steps` optimizer steps; `on_step(step, loss)` after each (progress).

    Every `meta_every`-th batch is all meta examples, the others all solutions: meta prompts are about
    twice as long as solution examples, and mixing them would pad every batch to the meta length.
    The solution batches come from `pooled_batches`; at `length_pool` 1 it draws each batch alone, with
    the same random calls as before `length_pool` came, so the earlier recipes build the same weights.
    """
    import torch

    rng = random.Random(seed)
    pooled = pooled_batches(rng, solutions, batch_size, length_pool)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    start = time.perf_counter()
    loss = torch.tensor(float("nan"))
    model.train()
    for step in range(steps):
        is_meta = bool(metas) and meta_every > 0 and step % meta_every == meta_every - 1
        batch = rng.sample(metas, batch_size) if is_meta else next(pooled)
        ids, mask, labels = collate(batch, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr=lr, warmup=warmup_steps, total=steps, final_ratio=final_lr_ratio)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        on_step(step + 1, loss.item())
    model.eval()
    return WarmStartStats(steps=steps, seconds=time.perf_counter() - start, final_loss=loss.item())
