"""Does teaching the meta path's pass-rate readout disturb the solutions through shared digit tokens? (issue 15)

    MASA_CACHE_DIR=... .venv/bin/python bench/probe_meta_interference.py [--recipe toy] [--seeds 0 1 2]

The toy writes a meta prediction's pass rate as one digit token (0..G), the same tokens the solutions
are written in, and its embeddings are tied (one row per token serves as input and output). On the
toy runs, pushing the meta readout hard (meta SFT at 15x the policy's learning rate) cost held-out
accuracy (docs/toy.md). This bench asks whether the shared tokens are the channel. From the built
toy's base model, the same problems, targets, batches and optimizer, four arms train the readout
alone (supervised, the loss on the pass-rate value token only, after the true reasoning and notions):

- digits   the value written as the recipe writes it (`"pass_rate": 5`)
- letters  the same value written with one of G+1 tokens the reference solutions never use
- frozen   digits, with the (tied) embedding matrix held fixed: only the transformer layers move
- anchored digits, plus KL(base || model) on a batch of the training problems' reference solutions
           each step (weight 1): the readout made to share the layers without moving the solutions

The target is each problem's pass count among G samples of the base model at T=1 (what the meta
reward scores against). Printed per arm, before and after, on held-out problems:

- readout  Spearman of the expected value under the model's distribution over the arm's G+1 value
           tokens against the target, and the probability mass on those tokens
- NLL      teacher-forced on the reference solutions, at digit-token and at other positions
- pass     sampled (T=1) pass rate of G solutions per held-out problem, the same seeds before/after

If `digits` loses solution NLL and pass rate at digit positions where `letters` does not, at a
comparable readout, the shared tokens carry the damage; if `anchored` keeps the pass rate where the
others lose it, the shared layers do.
"""

from __future__ import annotations

import argparse
import copy
import random
from typing import NamedTuple

import numpy as np
import pandas as pd


def spearman(a, b) -> float:
    """`masa.algo.evaluation.spearman` of two sequences, as a float (nan where either side is constant)."""
    import torch

    from masa.algo.evaluation import spearman as rank_corr

    return float(rank_corr(torch.as_tensor(np.asarray(a, dtype=float)), torch.as_tensor(np.asarray(b, dtype=float))))


def readout(logits, value_ids: list[int]) -> tuple:
    """Expected value and probability mass of the value tokens (index k = value k).

    logits (B, V) at the position where the value is written. Returns (expected (B,), mass (B,)):
    expected = sum_k k * p_k / sum_k p_k over the value tokens only, mass = sum_k p_k over the full vocab.
    """
    import torch

    p = torch.softmax(logits.float(), -1)[:, value_ids]
    k = torch.arange(len(value_ids), dtype=p.dtype)
    return (p * k).sum(-1) / p.sum(-1), p.sum(-1)


def split_nll(logits, labels, is_digit) -> tuple[float, float]:
    """Mean next-token NLL at digit-token targets and at the other targets.

    logits (B, T, V) of input ids (B, T); labels (B, T) with -100 where no loss; is_digit (V,) bool.
    Position t predicts labels[:, t + 1], as in a causal LM's own loss.
    """
    import torch

    lg, lb = logits[:, :-1].float(), labels[:, 1:]
    keep = lb != -100
    nll = torch.nn.functional.cross_entropy(lg[keep], lb[keep], reduction="none")
    dig = is_digit[lb[keep]]
    return float(nll[dig].mean()), float(nll[~dig].mean())


class Readout(NamedTuple):
    """One meta example cut at the pass-rate value: ids up to `"pass_rate": `, then the target value."""

    ids: tuple[int, ...]
    value: int


def meta_prefixes(tokenizer, recipe, problems, values) -> list[Readout]:
    from masa.algo.meta import format_meta_completion, render_meta_prompt
    from masa.toy.build import _meta_reasoning
    from masa.toy.tokenizer import chat_prompt

    out = []
    for p, v in zip(problems, values, strict=True):
        text = format_meta_completion(_meta_reasoning(p, recipe.meta_reasoning), notions=p.notions,
                                      pass_rate=0, solution_length=1)
        head = text[: text.index('"pass_rate": ') + len('"pass_rate": ')]
        prompt = chat_prompt(tokenizer, render_meta_prompt(p.question, n_solution=recipe.n_solution,
                                                           max_response_tokens=recipe.max_response_tokens))
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + \
            tokenizer(head, add_special_tokens=False)["input_ids"]
        out.append(Readout(tuple(ids), int(v)))
    return out


def last_logits(model, batch: list[Readout], pad_id: int):
    """Logits (B, V) at each example's last position (right-padded batch)."""
    import torch

    t = max(len(r.ids) for r in batch)
    ids = torch.full((len(batch), t), pad_id)
    mask = torch.zeros((len(batch), t), dtype=torch.long)
    for i, r in enumerate(batch):
        ids[i, : len(r.ids)], mask[i, : len(r.ids)] = torch.tensor(r.ids), 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    return logits[torch.arange(len(batch)), mask.sum(1) - 1]


def unused_tokens(tokenizer, solution_ids, n: int) -> list[int]:
    """`n` single-letter tokens (A-Z, a-z) that no reference solution uses (lowest ids): not digits, and
    not punctuation that the meta JSON itself is written in."""
    used = {t for ids in solution_ids for t in ids}
    special = set(tokenizer.all_special_ids)
    out = [i for i in range(len(tokenizer)) if i not in used and i not in special
           and len(s := tokenizer.decode([i])) == 1 and s.isascii() and s.isalpha()]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} unused single-letter tokens, need {n}")
    return out[:n]


def anchor_kl(model, base, batch):
    """KL(base || model) per completion token, averaged (a 0-d tensor with its gradient): how far the
    solutions' next-token distributions have moved. batch = (ids, mask, labels) (B, T) of reference
    solutions."""
    import torch

    ids, mask, labels = batch
    keep = labels[:, 1:] != -100
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float(), -1)
    with torch.no_grad():
        logq = torch.log_softmax(base(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float(), -1)
    return (logq.exp() * (logq - logp)).sum(-1).mean()


def train_readout(model, data: list[Readout], value_ids: list[int], *, steps: int, lr: float, batch_size: int,
                  freeze_embeddings: bool, seed: int, pad_id: int, on_step, anchor=None) -> None:
    """`steps` AdamW steps on the value token's cross-entropy. `anchor` = (base model, solution Examples,
    weight): adds weight x `anchor_kl` on a batch of those solutions each step."""
    import torch

    from masa.toy.warmstart import collate

    rng = random.Random(seed)
    emb = model.get_input_embeddings().weight
    params = [p for p in model.parameters() if not (freeze_embeddings and p is emb)]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    for step in range(steps):
        batch = rng.sample(data, batch_size)
        model.train()
        logits = last_logits(model, batch, pad_id)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([value_ids[r.value] for r in batch]))
        if anchor is not None:
            base, solutions, weight = anchor
            loss = loss + weight * anchor_kl(model, base, collate(rng.sample(solutions, batch_size), pad_id))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        model.eval()
        on_step(step + 1)


def measure(model, held: list[Readout], value_ids, sol_batch, is_digit, pad_id) -> dict:
    import torch

    with torch.no_grad():
        exp, mass = readout(last_logits(model, held, pad_id), value_ids)
        ids, mask, labels = sol_batch
        dig, other = split_nll(model(input_ids=ids, attention_mask=mask).logits, labels, is_digit)
    return {"spearman": spearman(exp.numpy(), [r.value for r in held]), "mass": float(mass.mean()),
            "nll_digit": dig, "nll_other": other}


def pass_rate(model, tokenizer, problems, *, g: int, max_new: int, seed: int) -> float:
    from masa.toy.warmstart import probe

    return probe(model, tokenizer, problems, n=g, max_new_tokens=max_new, seed=seed, step=0).pass_rate


def setup(recipe_name: str, n_train: int, n_held: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from masa.toy import task
    from masa.toy.build import build
    from masa.toy.recipe import get_recipe
    from masa.toy.warmstart import collate, encode, probe

    art = build(get_recipe(recipe_name), progress=False)
    recipe = art.recipe
    tok = AutoTokenizer.from_pretrained(art.model_dir)
    model = AutoModelForCausalLM.from_pretrained(art.model_dir, dtype=torch.float32).eval()
    train, heldout = task.generate_splits(recipe.n_train, recipe.n_heldout, seed=recipe.seed,
                                          max_digits=recipe.max_digits, max_mul_digits=recipe.max_mul_digits)
    train, heldout = train[:n_train], heldout[:n_held]
    max_new = min(recipe.max_response_tokens, art.warm_start.meta_length_range[1] + 16)
    g = recipe.n_solution
    counts = {name: probe(model, tok, ps, n=g, max_new_tokens=max_new, seed=1000 + i, step=0).correct_counts
              for i, (name, ps) in enumerate((("train", train), ("held", heldout)))}
    sols = [encode(tok, p.question, f"{p.analysis}\n{p.solution}" if recipe.solution_analysis else p.solution)
            for p in heldout]
    is_digit = torch.tensor([tok.decode([i]).strip().isdigit() for i in range(len(tok))])
    prefixes = {name: meta_prefixes(tok, recipe, ps, counts[name]) for name, ps in (("train", train), ("held", heldout))}
    return dict(art=art, recipe=recipe, tok=tok, model=model, train=train, heldout=heldout, max_new=max_new,
                train_prefixes=prefixes["train"], held_prefixes=prefixes["held"],
                g=g, counts=counts, sol_batch=collate(sols, tok.pad_token_id), is_digit=is_digit,
                sol_ids=[e.ids[e.n_prompt:] for e in sols],
                train_sols=[encode(tok, p.question, f"{p.analysis}\n{p.solution}" if recipe.solution_analysis
                                   else p.solution) for p in train])


ARMS = ("digits", "letters", "frozen", "anchored")


def run_arm(s: dict, arm: str, *, seed: int, steps: int, lr: float, batch_size: int, every: int) -> list[dict]:
    """Rows (step, readout, NLL) every `every` steps, and the held-out pass rate at the end."""
    tok, g = s["tok"], s["g"]
    digit_ids = [tok.convert_tokens_to_ids(str(k)) for k in range(g + 1)]
    value_ids = s["letters"] if arm == "letters" else digit_ids
    train, held = s["train_prefixes"], s["held_prefixes"]
    model = copy.deepcopy(s["model"])
    rows = []

    def record(step: int) -> None:
        if step % every == 0 or step == steps:
            rows.append({"seed": seed, "arm": arm, "step": step,
                         **measure(model, held, value_ids, s["sol_batch"], s["is_digit"], tok.pad_token_id)})

    record(0)
    train_readout(model, train, value_ids, steps=steps, lr=lr, batch_size=batch_size,
                  freeze_embeddings=arm == "frozen", seed=seed, pad_id=tok.pad_token_id, on_step=record,
                  anchor=(s["model"], s["train_sols"], 1.0) if arm == "anchored" else None)
    rows[-1]["pass"] = pass_rate(model, tok, s["heldout"], g=g, max_new=s["max_new"], seed=seed)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="toy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--train-problems", type=int, default=384)
    ap.add_argument("--held-problems", type=int, default=128)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    s = setup(a.recipe, a.train_problems, a.held_problems)
    s["letters"] = unused_tokens(s["tok"], s["sol_ids"], s["g"] + 1)
    print(f"recipe {a.recipe} ({s['art'].recipe_hash}), G={s['g']}, base pass rate train "
          f"{np.mean(s['counts']['train']) / s['g']:.3f} / held-out {np.mean(s['counts']['held']) / s['g']:.3f}; "
          f"letters arm writes values as {[s['tok'].decode([i]) for i in s['letters']]}")
    rows = []
    for seed in a.seeds:
        base = pass_rate(s["model"], s["tok"], s["heldout"], g=s["g"], max_new=s["max_new"], seed=seed)
        for arm in ARMS:
            rows += run_arm(s, arm, seed=seed, steps=a.steps, lr=a.lr, batch_size=a.batch_size, every=a.every)
            rows[-1]["pass_before"] = base
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(df.groupby(["arm", "step"])[["spearman", "mass", "nll_digit", "nll_other"]]
          .agg(["mean", "min", "max"]).round(3).to_string())
    end = df.dropna(subset=["pass"]).assign(d_pass=lambda d: d["pass"] - d.pass_before)
    print("\nheld-out pass rate (T=1, G samples), after minus before, per seed:")
    print(end.pivot(index="seed", columns="arm", values="d_pass").round(3).to_string())
    print(end.groupby("arm").d_pass.agg(["mean", "min", "max"]).round(3).to_string())


if __name__ == "__main__":
    main()
