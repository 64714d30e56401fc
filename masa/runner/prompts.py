"""A round's prompts: the data filter's problems, sliced per round from one seeded permutation."""

from __future__ import annotations

import random

import pyarrow.parquet as pq

from masa.data.records import Problem, rows_to_problems


def read_problems(path: str) -> list[Problem]:
    """Problems of a parquet Dataset artifact written by the data filter (KFP paths carry no suffix)."""
    problems, rejected = rows_to_problems(pq.read_table(path).to_pylist(), source=path)
    if rejected:
        raise ValueError(f"{path}: {len(rejected)} rows are not problems (first: {rejected[0]})")
    return problems


def round_prompts(prompts_path: str, round_idx: int, n: int, seed: int) -> list[Problem]:
    """The round's prompts: consecutive slices of one seeded permutation (wrapping), so every
    prompt is seen once before any is seen twice, and all branches get the same ones."""
    problems = read_problems(prompts_path)
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    start = (round_idx * n) % len(order)
    idx = [order[(start + i) % len(order)] for i in range(min(n, len(order)))]
    return [problems[i] for i in idx]
