"""Benchmark fan-out: one checkpoint's benchmarks sampled by `resources.benchmark_shards` pods, then one merge.

Shard k of N samples and judges a contiguous slice of each benchmark's problems
(`masa.engines.replicated.chunks`) and hands on what each problem did (`ProblemOutcome`), not figures;
the merge concatenates the slices in shard order, which is problem order, and takes the figures
(`masa.runner.evaluate.figures`) over the whole list. The figures equal an unsharded benchmark's: a
problem's samples depend only on its own seed (a function of the run seed and the problem), and the
figures' sums run over the problems in the same order. Times are the slowest shard's (they run side
by side); counts add up.

How we differ from the paper's code: it evaluates on the trainer's own workers (verl's validation
loop), so it never shards over pods; a pipeline benchmark step can, which is what a user with more
than one node's GPUs for a 6-benchmark x avg@32 evaluation wants.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from masa.engines import Engine
from masa.engines.replicated import chunks
from masa.runner.evaluate import ProblemOutcome, Sampled, figures, load_benchmark, sample_outcomes
from masa.runner.settings import EvalSettings

SHARD_FORMAT = 1  # bump when the shard JSON below changes


def sample_shard(engine: Engine, sources: Sequence[str], names: Sequence[str], s: EvalSettings, *, shard: int,
                 shards: int) -> dict[str, Any]:
    """Shard `shard` of `shards`: each benchmark's slice of problems, sampled and judged (JSON-ready).

    A slice may be empty (more shards than problems) or hold only prompts that do not fit: the merge,
    which sees every slice, decides whether the benchmark has a problem at all."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    t0, out = time.monotonic(), {}
    for src, name in zip(sources, names, strict=True):
        problems, rejected = load_benchmark(src, s)
        mine = [problems[i] for i in chunks(len(problems), shards)[shard]]
        t = time.monotonic()
        got = sample_outcomes(engine, mine, s)
        out[name] = {"outcomes": [o.to_dict() for o in got.outcomes], "n_skipped": got.n_skipped,
                     "skipped_reason": got.skipped_reason, "longest_prompt": got.longest_prompt,
                     "context": got.context, "generation_s": round(got.generation_s, 3),
                     "wall_s": round(time.monotonic() - t, 3), "source": src, "rejected_rows": len(rejected)}
    return {"format": SHARD_FORMAT, "shard": shard, "shards": shards, "benchmarks": out,
            "wall_s": round(time.monotonic() - t0, 3)}


def merge_shards(parts: Sequence[dict[str, Any]], s: EvalSettings) -> dict[str, Any]:
    """The figures of `run_benchmarks` from every shard of one checkpoint's benchmarks (any order)."""
    parts = sorted(parts, key=lambda p: p["shard"])
    n = parts[0]["shards"] if parts else 0
    got = [(p.get("format"), p["shard"], p["shards"]) for p in parts]
    if got != [(SHARD_FORMAT, k, n) for k in range(n)] or not parts:
        raise ValueError(f"benchmark shards: got (format, shard, of) {got}, expected {SHARD_FORMAT} and 0..{n - 1} of {n}")
    results = {}
    for name in parts[0]["benchmarks"]:
        bs = [p["benchmarks"][name] for p in parts]
        outcomes = [ProblemOutcome.from_dict(o) for b in bs for o in b["outcomes"]]
        skipped = sum(b["n_skipped"] for b in bs)
        if not outcomes:
            raise Sampled([], n_skipped=skipped, skipped_reason=bs[0]["skipped_reason"],
                          longest_prompt=max(b["longest_prompt"] for b in bs), context=bs[0]["context"],
                          generation_s=0.0).no_fit_error()
        results[name] = {**figures(outcomes, s, meta=True, n_skipped=skipped, skipped_reason=bs[0]["skipped_reason"],
                                   generation_s=max(b["generation_s"] for b in bs)),
                         "wall_s": max(b["wall_s"] for b in bs), "source": bs[0]["source"],
                         "rejected_rows": bs[0]["rejected_rows"], "shards": n}
    return {"benchmarks": results, "wall_s": max(p["wall_s"] for p in parts), "shards": n}
