"""Supervised warm start of the toy policy, stopped on a measured *sampled* pass rate.

A plain torch loop (no DeepSpeed: the model is tiny and single-process is fastest on 2 cores). It trains
on two kinds of examples, the loss on completion tokens only:

- solution examples: chat(question) -> digit-by-digit solution ending in ``\\boxed{N}``;
- meta examples: chat(render_meta_prompt(question)) -> ``format_meta_completion`` with the right notions
  but *random* pass_rate (uniform 0..G) and solution_length (uniform over a plausible range). The model
  learns to write parseable meta JSON but not to be calibrated: MASA has to earn the calibration.

Why stop on the sampled pass rate and not on a step count: GRPO learns only from groups whose rewards
differ. A checkpoint that is right greedily but wrong when sampled at temperature 1 (or always right)
gives it no signal, so every `probe_every` steps we sample `probe_samples` completions at T=1 for a
fixed probe set and stop once their mean pass rate reaches `target_pass_rate` (and the sampled meta
responses parse at `target_meta_parse_rate`).
"""

from __future__ import annotations

import dataclasses
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
    stopped: str  # "target" (probe pass rate reached) or "max_steps"
    final: ProbeStats
    history: tuple[ProbeStats, ...] = field(repr=False, default=())


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


def _lr_at(step: int, *, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup)


def warm_start(model, tokenizer, solutions: Sequence[Example], metas: Sequence[Example],
               probe_fn: Callable[[int], ProbeStats], meta_fn: Callable[[int], float] | None, *, lr: float,
               batch_size: int, meta_every: int, warmup_steps: int, probe_every: int, target_pass_rate: float,
               target_meta_parse_rate: float, max_steps: int, seed: int,
               log: Callable[[str], None] = lambda s: None) -> WarmStartStats:
    """Train until `probe_fn(step).pass_rate >= target_pass_rate` (checked every `probe_every` steps)
    and then `meta_fn(step) >= target_meta_parse_rate` (checked only once the first holds: it is the
    faster to learn, and probing it costs as much as the solution probe).

    Every `meta_every`-th batch is all meta examples, the others all solutions: meta prompts are about
    twice as long as solution examples, and mixing them would pad every batch to the meta length.
    """
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    history: list[ProbeStats] = []
    start, step, stopped = time.perf_counter(), 0, "max_steps"
    model.train()
    while step < max_steps:
        is_meta = bool(metas) and meta_every > 0 and step % meta_every == meta_every - 1
        batch = rng.sample(metas if is_meta else solutions, batch_size)
        ids, mask, labels = collate(batch, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, lr=lr, warmup=warmup_steps)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % probe_every == 0 or step == max_steps:
            stats = probe_fn(step)
            if stats.pass_rate >= target_pass_rate and meta_fn is not None:
                stats = dataclasses.replace(stats, meta_parse_rate=meta_fn(step))
            history.append(stats)
            log(f"step {step} loss {loss.item():.3f} sampled pass rate {stats.pass_rate:.3f} "
                f"mixed {stats.mixed_fraction:.2f} meta parse {stats.meta_parse_rate} "
                f"({time.perf_counter() - start:.0f}s)")
            if stats.pass_rate >= target_pass_rate and (meta_fn is None
                                                        or stats.meta_parse_rate >= target_meta_parse_rate):
                stopped = "target"
                break
    model.eval()
    return WarmStartStats(steps=step, seconds=time.perf_counter() - start, stopped=stopped,
                          final=history[-1], history=tuple(history))
