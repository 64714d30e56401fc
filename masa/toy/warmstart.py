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
from collections.abc import Callable, Sequence
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


def backward_in_pieces(model, batch: Sequence[Example], pad_id: int, pieces: int) -> float:
    """Backpropagate the batch's mean token loss, computed as `pieces` length-sorted pieces; the loss.

    A batch padded to its longest example spends its compute on padding when a few examples are long
    (recipe `wandering`: one solution in ten takes a wrong turn twice as long, so nearly every batch of
    64 is padded to one). Each piece is padded to its own longest, and its summed token loss is divided
    by the whole batch's token count: the same loss and gradient as the padded batch, up to the order of
    float sums (max difference 1e-7 against gradients of 0.24, measured), with the same examples in the
    same step. Sorting which examples share a step, instead, changes what the warm start learns
    (docs/toy.md, "Wrong turns within the build budget"). `pieces` 1 is the padded batch itself, through
    the model's own loss, so the recipes built before this came keep their weights bit for bit.
    """
    import torch.nn.functional as F

    if pieces == 1:
        ids, mask, labels = collate(batch, pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.item()
    order = sorted(batch, key=lambda e: len(e.ids))
    n_tokens = sum(len(e.ids) - e.n_prompt for e in batch)  # the labels after the shift: completion + eos
    size = -(-len(order) // pieces)
    total = 0.0
    for i in range(0, len(order), size):
        ids, mask, labels = collate(order[i: i + size], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum") / n_tokens
        loss.backward()
        total += loss.item()
    return total


def warm_start(model, tokenizer, solutions: Sequence[Example], metas: Sequence[Example], *, lr: float,
               batch_size: int, meta_every: int, warmup_steps: int, final_lr_ratio: float, steps: int, seed: int,
               micro_batches: int = 1, on_step: Callable[[int, float], None] = lambda step, loss: None) -> WarmStartStats:
    """Train for exactly `steps` optimizer steps; `on_step(step, loss)` after each (progress).

    Every `meta_every`-th batch is all meta examples, the others all solutions: meta prompts are about
    twice as long as solution examples, and mixing them would pad every batch to the meta length.
    Each batch is run in `micro_batches` length-sorted pieces (`backward_in_pieces`): the same gradient
    with less padding.
    """
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    start = time.perf_counter()
    loss = float("nan")
    model.train()
    for step in range(steps):
        is_meta = bool(metas) and meta_every > 0 and step % meta_every == meta_every - 1
        batch = rng.sample(metas if is_meta else solutions, batch_size)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr=lr, warmup=warmup_steps, total=steps, final_ratio=final_lr_ratio)
        opt.zero_grad(set_to_none=True)
        loss = backward_in_pieces(model, batch, tokenizer.pad_token_id, micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        on_step(step + 1, loss)
    model.eval()
    return WarmStartStats(steps=steps, seconds=time.perf_counter() - start, final_loss=loss)
