"""Data filtering before training: exact and near duplicates, benchmark overlap, prompt length.

Where we differ from the paper's pipeline: the paper trains on DeepScaleR as released and filters
zero-variance prompts online (dynamic sampling). We additionally decontaminate against the benchmark
sets with word n-gram overlap (as GPT-3 / Llama reports do), drop near duplicates (Jaccard over word
shingles), and offer the zero-variance filter offline (`masa.steps.data`), estimated from a few base
model samples per prompt.

Every dropped row is counted by reason; nothing here raises on bad rows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from masa.data.records import Problem, Rejected

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def drop_exact_duplicates(problems: Sequence[Problem]) -> tuple[list[Problem], list[Rejected]]:
    """Keep the first of problems whose normalised text is identical (answers may differ: then the
    data is contradictory, and the first occurrence wins)."""
    seen: dict[str, int] = {}
    kept, dropped = [], []
    for i, p in enumerate(problems):
        key = " ".join(words(p.problem))
        if key in seen:
            dropped.append(Rejected(i, "duplicate", f"same text as row {seen[key]}"))
        else:
            seen[key] = i
            kept.append(p)
    return kept, dropped


def drop_near_duplicates(
    problems: Sequence[Problem], *, n: int = 5, threshold: float = 0.8
) -> tuple[list[Problem], list[Rejected]]:
    """Drop a problem whose word n-gram Jaccard similarity to an earlier kept one is >= threshold.

    Candidates come from an inverted index of shingles, so cost grows with shared shingles, not n^2.
    """
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    shingles: list[set[tuple[str, ...]]] = []
    kept, dropped = [], []
    for i, p in enumerate(problems):
        s = ngrams(words(p.problem), n)
        counts: dict[int, int] = defaultdict(int)
        for g in s:
            for j in index.get(g, ()):
                counts[j] += 1
        best = max(((c / (len(s) + len(shingles[j]) - c), j) for j, c in counts.items()), default=(0.0, -1))
        if s and best[0] >= threshold:
            dropped.append(Rejected(i, "near_duplicate", f"Jaccard {best[0]:.2f} with kept problem {kept[best[1]].prompt_id}"))
            continue
        k = len(kept)
        kept.append(p)
        shingles.append(s)
        for g in s:
            index[g].append(k)
    return kept, dropped


def drop_benchmark_overlap(
    problems: Sequence[Problem], benchmark_texts: Iterable[str], *, n: int = 8, threshold: float = 0.5
) -> tuple[list[Problem], list[Rejected]]:
    """Drop training problems sharing >= threshold of their word n-grams with any benchmark problem."""
    bench: set[tuple[str, ...]] = set()
    for t in benchmark_texts:
        bench |= ngrams(words(t), n)
    kept, dropped = [], []
    for i, p in enumerate(problems):
        s = ngrams(words(p.problem), n)
        share = len(s & bench) / len(s) if s else 0.0
        if s and share >= threshold:
            dropped.append(Rejected(i, "benchmark_overlap", f"{share:.0%} of {n}-grams appear in a benchmark"))
        else:
            kept.append(p)
    return kept, dropped


def drop_long_prompts(
    problems: Sequence[Problem], count_tokens: Callable[[str], int], *, max_tokens: int
) -> tuple[list[Problem], list[Rejected]]:
    kept, dropped = [], []
    for i, p in enumerate(problems):
        n = count_tokens(p.problem)
        if n > max_tokens:
            dropped.append(Rejected(i, "too_long", f"{n} prompt tokens > {max_tokens}"))
        else:
            kept.append(p)
    return kept, dropped
