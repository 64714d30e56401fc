"""Toy warm start on 1 vs N torch threads, side by side: why `masa.toy.build` runs on two threads.

Times `--steps` warm-start steps (batch 64 of toy solution examples, deterministic algorithms on, as
the build runs) and one probe (32 prompts x 4 samples at T=1, transformers generate) on the same
model, first with 1 thread then with `--threads`, and prints CPU and wall seconds, the ratios, and
whether the trained weights are the same bits. On an idle machine N threads win on wall time; on a
shared machine (other jobs on the cores) extra OpenMP threads spin-wait and lose on both.

    .venv/bin/python bench/bench_toy_threads.py [--threads 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import torch

from masa.toy.model import make_model
from masa.toy.task import generate_splits
from masa.toy.tokenizer import train_tokenizer
from masa.toy.warmstart import collate, encode, sample


def measure(threads: int, steps: int, tok, examples, prompts) -> tuple[tuple[float, float, float, float], str]:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model = make_model(vocab_size=len(tok), hidden_size=64, n_layers=2, head_dim=32, intermediate_size=256,
                       max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, mask, labels = collate(examples, tok.pad_token_id)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_cpu, step_wall = (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    cpu, wall = time.process_time(), time.perf_counter()
    sample(model, tok, prompts, n=4, max_new_tokens=64, seed=0)
    return (step_cpu, step_wall, time.process_time() - cpu, time.perf_counter() - wall), weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    train, _ = generate_splits(512, 0, seed=0)
    tok = train_tokenizer([t for p in train for t in (p.question, p.solution)], vocab_size=512)
    examples = [encode(tok, p.question, p.solution) for p in train[:64]]
    prompts = [p.question for p in train[:32]]
    print(f"cores visible: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    one, w1 = measure(1, args.steps, tok, examples, prompts)
    many, wn = measure(args.threads, args.steps, tok, examples, prompts)
    names = ("train step CPU s", "train step wall s", "probe CPU s", "probe wall s")
    print(f"{'':18} {'1 thread':>10} {f'{args.threads} threads':>11} {'ratio':>7}")
    for name, a, b in zip(names, one, many, strict=True):
        print(f"{name:18} {a:10.3f} {b:11.3f} {b / a:7.2f}")
    print(f"weights after {args.steps} steps: {'the same bits' if w1 == wn else 'DIFFERENT'} "
          f"({w1[:12]} / {wn[:12]})")


if __name__ == "__main__":
    main()
