"""Scoring-step costs on a synthetic round, and vectorised vs loop forms side by side.

Builds B prompts x (G solution + Gm meta) rollouts with solution texts of realistic length, then times
the phases of scoring: verification (worker pool), meta parsing, notion rewards (texts normalised once
per prompt vs once per prediction), and advantages (vectorised vs a per-group loop).

    .venv/bin/python bench/bench_scoring.py                 # B=64, G=Gm=8
    .venv/bin/python bench/bench_scoring.py --b 256 --chars 8000 --workers 8
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from masa.algo.advantages import group_advantages
from masa.algo.meta import format_meta_completion, parse_meta
from masa.algo.rewards import normalize_notions, normalize_words, notion_rewards

WORDS = ("the sum of fractions common denominator multiply both sides prime factor modular arithmetic "
         "triangle area angle bisector quadratic formula roots integer parity").split()


def solution_text(rng: random.Random, chars: int, answer: int) -> str:
    words = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words) + f" so the answer is \\boxed{{{answer}}}"


def timed(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def notion_rewards_naive(preds, problem, texts, correct):
    """Normalises every solution text again for every prediction (what a per-row reward fn does)."""
    out = []
    for notions in preds:
        kept = normalize_notions(notions or (), problem)
        norm = [normalize_words(t) for t in texts]
        scores = [sum((1 if ok else -1) for t, ok in zip(norm, correct, strict=True) if f" {n} " in t)
                  for n in kept]
        out.append(sum(s > 0 for s in scores) / len(kept) if kept else 0.0)
    return torch.tensor(out)


def advantages_loop(r: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(r)
    for b in range(r.shape[0]):
        s = r[b].std()
        out[b] = 0 if float(s) <= 1e-6 else (r[b] - r[b].mean()) / (s + 1e-6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--b", type=int, default=64)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--gm", type=int, default=8)
    ap.add_argument("--chars", type=int, default=3000, help="characters per solution text")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    rng = random.Random(0)
    texts = [[solution_text(rng, a.chars, rng.randint(1, 3)) for _ in range(a.g)] for _ in range(a.b)]
    correct = [[t.endswith("{1}") for t in ts] for ts in texts]
    metas = [[format_meta_completion("reasoning " * 40, notions=rng.sample(WORDS, 3), pass_rate=rng.randint(0, a.g),
                                     solution_length=rng.randint(1, 4096)) for _ in range(a.gm)] for _ in range(a.b)]

    from masa.algo.verifier import verify_batch

    pairs = [(t, "1") for ts in texts for t in ts]
    t_verify = timed(lambda: verify_batch(pairs, workers=a.workers), reps=1)
    t_parse = timed(lambda: [parse_meta(m, n_solution=a.g, max_response_tokens=4096) for ms in metas for m in ms])
    preds = [[parse_meta(m, n_solution=a.g, max_response_tokens=4096).notions for m in ms] for ms in metas]
    t_notion = timed(lambda: [notion_rewards(p, problem="Find x.", solution_texts=t, solution_correct=c)
                              for p, t, c in zip(preds, texts, correct, strict=True)])
    t_notion_naive = timed(lambda: [notion_rewards_naive(p, "Find x.", t, c)
                                    for p, t, c in zip(preds, texts, correct, strict=True)], reps=1)
    r = (torch.rand(a.b * 2, a.g) < 0.5).float()
    t_adv = timed(lambda: group_advantages(r), reps=20)
    t_adv_loop = timed(lambda: advantages_loop(r), reps=5)

    n_sol, n_meta = a.b * a.g, a.b * a.gm
    print(f"B={a.b} G={a.g} Gm={a.gm} chars/solution={a.chars} verifier workers={a.workers}")
    print(f"verify          {t_verify * 1e3:9.1f} ms  ({n_sol / t_verify:8.0f} solution rows/s)")
    print(f"parse_meta      {t_parse * 1e3:9.1f} ms  ({n_meta / t_parse:8.0f} meta rows/s)")
    print(f"notion rewards  {t_notion * 1e3:9.1f} ms  shared normalisation; per-prediction: "
          f"{t_notion_naive * 1e3:.1f} ms  -> {t_notion_naive / t_notion:.1f}x")
    print(f"advantages      {t_adv * 1e3:9.3f} ms  vectorised; loop: {t_adv_loop * 1e3:.3f} ms  -> "
          f"{t_adv_loop / t_adv:.1f}x")


if __name__ == "__main__":
    main()
