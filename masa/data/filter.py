"""Data filtering before training: exact and near duplicates, benchmark overlap, prompt length.

Where we differ from the paper's pipeline: the paper trains on DeepScaleR as released and filters
zero-variance prompts online (dynamic sampling). We additionally decontaminate against the benchmark
sets with word n-gram overlap (as GPT-3 / Llama reports do), drop near duplicates (Jaccard over word
shingles), and offer the zero-variance filter offline (`masa.steps.data`), estimated from a few base
model samples per prompt.

A near duplicate must also have the same reference answer (`answer_key`). Word shingles cannot
tell a reworded problem from a *new* one built on the same template: on MATH train, each of the
12 pairs above Jaccard 0.8 that we inspected differed in a number or in what is asked ("Find $a$" vs "Find
$a+b+c$") and had a different answer, i.e. was a distinct training signal. Decontamination keeps
the plain n-gram rule: a benchmark problem with its numbers changed still leaks its method.

Every dropped row is counted by reason and cites its source row (`Problem.row`) and prompt id;
nothing here raises on bad rows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from masa.data.records import Problem, Rejected

_WORD = re.compile(r"\w+|[^\w\s]")
# LaTeX spellings that do not change an answer's value: spacing, sizing, display style
_ANSWER_NOISE = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\$|\s+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n is one shingle (so short texts still compare)."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def answer_key(answer: str) -> str:
    """The answer with layout-only LaTeX removed (`\\dfrac`/`\\tfrac` -> `\\frac`): a cheap equality
    test for "same answer", not a verifier."""
    return _ANSWER_NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def _rejected(p: Problem, i: int, reason: str, detail: str) -> Rejected:
    return Rejected(p.row if p.row >= 0 else i, reason, detail, p.prompt_id)


def drop_exact_duplicates(problems: Sequence[Problem]) -> tuple[list[Problem], list[Rejected]]:
    """Keep the first of problems whose word sequence is identical (case, spacing and punctuation
    spacing ignored). Answers may differ: then the data is contradictory, and the first wins."""
    seen: dict[str, Problem] = {}
    kept, dropped = [], []
    for i, p in enumerate(problems):
        key = " ".join(words(p.problem))
        first = seen.setdefault(key, p)
        if first is p:
            kept.append(p)
        else:
            dropped.append(_rejected(p, i, "duplicate", f"same text as row {first.row} ({first.prompt_id})"))
    return kept, dropped


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def drop_near_duplicates(
    problems: Sequence[Problem], *, n: int = 5, threshold: float = 0.8
) -> tuple[list[Problem], list[Rejected]]:
    """Drop a problem whose word n-gram Jaccard similarity to an earlier kept problem *with the same
    answer key* is >= threshold.

    Candidates come from an inverted index of (answer key, shingle), so cost grows with shared
    shingles among same-answer problems, not with n^2.
    """
    index: dict[tuple[str, tuple[str, ...]], list[int]] = defaultdict(list)
    shingles: list[set[tuple[str, ...]]] = []
    kept, dropped = [], []
    for i, p in enumerate(problems):
        s, ak = ngrams(words(p.problem), n), answer_key(p.answer)
        counts: dict[int, int] = defaultdict(int)
        for g in s:
            for j in index.get((ak, g), ()):
                counts[j] += 1
        best = max(((c / (len(s) + len(shingles[j]) - c), j) for j, c in counts.items()), default=(0.0, -1))
        if s and best[0] >= threshold:
            other = kept[best[1]]
            dropped.append(_rejected(p, i, "near_duplicate", f"Jaccard {best[0]:.2f} with row {other.row} "
                                     f"({other.prompt_id}), same answer"))
            continue
        k = len(kept)
        kept.append(p)
        shingles.append(s)
        for g in s:
            index[(ak, g)].append(k)
    return kept, dropped


def overlap_share(text: str, bench: set[tuple[str, ...]], n: int) -> float:
    """Share of `text`'s word n-grams found in the benchmark n-gram set (0 for an empty text)."""
    s = ngrams(words(text), n)
    return len(s & bench) / len(s) if s else 0.0


def drop_benchmark_overlap(
    problems: Sequence[Problem], benchmark_texts: Iterable[str], *, n: int = 8, threshold: float = 0.5
) -> tuple[list[Problem], list[Rejected]]:
    """Drop training problems sharing >= threshold of their word n-grams with the benchmark problems."""
    bench: set[tuple[str, ...]] = set()
    for t in benchmark_texts:
        bench |= ngrams(words(t), n)
    kept, dropped = [], []
    for i, p in enumerate(problems):
        share = overlap_share(p.problem, bench, n)
        if share > 0 and share >= threshold:
            dropped.append(_rejected(p, i, "benchmark_overlap", f"{share:.0%} of {n}-grams appear in a benchmark"))
        else:
            kept.append(p)
    return kept, dropped


def drop_long_prompts(
    problems: Sequence[Problem], count_tokens: Callable[[str], int], *, max_tokens: int
) -> tuple[list[Problem], list[Rejected]]:
    """Drop problems whose prompt, as `count_tokens` renders it (chat template included), exceeds max_tokens."""
    kept, dropped = [], []
    for i, p in enumerate(problems):
        n = count_tokens(p.problem)
        if n > max_tokens:
            dropped.append(_rejected(p, i, "too_long", f"{n} prompt tokens > {max_tokens}"))
        else:
            kept.append(p)
    return kept, dropped
