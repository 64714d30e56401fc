"""Cost of telemetry on the training hot path and of a scrape, measured side by side in one run.

    .venv/bin/python bench/bench_telemetry.py [--rounds 20] [--branches 3] [--repeat 2000]

Prints: per optimizer-step cost of `observe_train_step` next to the cost of decoding the metrics line
that `train_round` already pays for every step (ratio), and the size/time of one /metrics exposition of
a registry filled for `branches` x `rounds` rounds (what Prometheus pulls every scrape).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from prometheus_client import CollectorRegistry, generate_latest

from masa.runner.rollout import RolloutStats
from masa.telemetry import Telemetry
from masa.train.metrics import KEYS, StepAccumulator


def train_row(step: int) -> dict:
    acc = StepAccumulator()
    acc.lr, acc.grad_norm = 1e-6, torch.tensor(0.5)
    acc.add({k: torch.tensor(1.0 + i, dtype=torch.float64) for i, k in enumerate(KEYS[2:])},
            loss=torch.tensor(0.1, dtype=torch.float64), tokens=1000)
    return acc.reduce(step=step, step_in_round=step, seconds=0.3, gap=None, device="cpu")


def per_call_us(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for i in range(repeat):
        fn(i)
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--branches", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2000)
    a = ap.parse_args()

    row = train_row(1)
    line = json.dumps(row)
    tel = Telemetry("bench", "masa", registry=CollectorRegistry())
    decode = per_call_us(lambda i: json.loads(line), a.repeat)
    observe = per_call_us(lambda i: tel.observe_train_step(0, row), a.repeat)
    print(f"json.loads of the step's metrics line : {decode:8.1f} us/step")
    print(f"observe_train_step                    : {observe:8.1f} us/step  ({observe / decode:.1f}x the decode)")

    stats = {**RolloutStats(prompts=64, samples=1024, meta_samples=512, solution_samples=512, tokens=400_000,
                            wall_s=30.0, samples_per_s=34.0, tokens_per_s=13_000.0).__dict__, "reused": False}
    scoring = {"n_solution_rows": 512, "n_meta_rows": 512, "solution_tokens": 300_000, "meta_tokens": 100_000,
               "train_accuracy": 0.4, "meta_reward_mean": 0.5, "meta_reward_pass_rate_mean": 0.6,
               "meta_reward_length_mean": 0.4, "meta_reward_notion_mean": 0.3, "reused": False,
               "verifier_outcomes": {"correct": 200, "incorrect": 300, "no_answer": 10, "timeout": 2}}
    full = Telemetry("bench", registry=CollectorRegistry())
    for b in range(a.branches):
        full.branch = f"branch{b}"  # one registry holding every branch's series, as Prometheus sees a run
        for r in range(a.rounds):
            full.observe_rollout(r, stats)
            full.observe_scoring(r, scoring)
            for s in range(4):
                full.observe_train_step(r, train_row(s + 1))
    t0 = time.perf_counter()
    n = 20
    for _ in range(n):
        text = generate_latest(full.registry)
    scrape_ms = (time.perf_counter() - t0) / n * 1e3
    series = sum(1 for ln in text.decode().splitlines() if ln and not ln.startswith("#"))
    print(f"exposition, {a.branches} branches x {a.rounds} rounds: {series} series, {len(text) / 1024:.0f} KiB, "
          f"{scrape_ms:.1f} ms to render")


if __name__ == "__main__":
    main()
