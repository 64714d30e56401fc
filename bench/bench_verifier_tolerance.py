"""What the paper's lenient grading would change on the MATH test split (issue 14, item 9).

The released grader (`akatigre/MASA-RL`, `verl/utils/reward_score/grader.py`, DeepSeek-Math's `math_equal`)
accepts two numbers within 1e-4 relative tolerance and a percent either way (`50` = `0.5` = `5000`); ours
compares rationals exactly and other values at 1e-11 (docs/verifier.md). We keep ours as the default. This
script measures how many verdicts the released leniency would flip, on the cases of bench/bench_verifier.py
(every MATH test solution against its own target and against another problem's target, an equivalent
respelling of each target, the target with its last digit changed) plus, for every target whose value is a
non-integer number, the decimal a model would write: rounded to 4 significant digits (3.1416 for pi) and,
for values in (0, 1), as a percent.

"Lenient" here is our verdict OR the released rule on the two values: both sides read by our parser to a real
constant, |a - b| <= 1e-4 * max(|a|, |b|) for b in {gold, gold/100, gold*100}. (The released code also does
string and sympy comparisons; those are at least as strict as ours on these cases, see docs/verifier.md.)

    .venv/bin/python bench/bench_verifier_tolerance.py [--limit N]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

from masa.algo.verifier import verify
from masa.algo.verifier.evaluate import exact, free_symbols, numeric
from masa.algo.verifier.extract import extract_answer
from masa.algo.verifier.judge import to_ast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verifier import DATA, load_cases  # noqa: E402 - a sibling bench script, not a package

REL_TOL = 1e-4
PERCENT = (1.0, 0.01, 100.0)


def value(answer: str) -> float | None:
    """The answer's value when it is a real constant our parser reads, else None."""
    try:
        node = to_ast(answer)
        if node[0] in ("text", "based", "rel") or free_symbols(node):
            return None
        q = exact(node)
        v = complex(q) if q is not None else numeric(node, {})
    except Exception:  # noqa: BLE001 - anything we cannot read is simply not a number here
        return None
    return v.real if abs(v.imag) <= 1e-12 * max(1.0, abs(v)) and math.isfinite(v.real) else None


def released_numeric_equal(pred: str, gold: str) -> bool:
    a, b = value(pred), value(gold)
    if a is None or b is None:
        return False
    return any(abs(a - b * f) <= REL_TOL * max(abs(a), abs(b * f)) for f in PERCENT)


def rounded_variants(gold: str) -> list[tuple[str, str]]:
    """(kind, boxed answer) a model might write for a non-integer numeric target."""
    v = value(gold)
    if v is None or v == int(v):
        return []
    out = [("rounded-4sig", f"{v:.4g}")]
    if 0 < v < 1:
        out.append(("percent", f"{100 * v:.4g}\\%"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="use the first N MATH rows (default all)")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"MATH test data not found at {DATA} (see ../shared/data/README.md)")
    pairs, labels = load_cases(args.limit)
    kinds = _kinds(pairs, labels)
    golds = sorted({g for (_, g), k in zip(pairs, kinds, strict=True) if k == "own"})
    for gold in golds:
        for kind, made in rounded_variants(gold):
            pairs.append((f"Thus the result is $\\boxed{{{made}}}$.", gold))
            labels.append(True)  # right by the released rule; a matter of policy by ours
            kinds.append(kind)
    counts: Counter = Counter()
    flips = []
    for (response, gold), kind in zip(pairs, kinds, strict=True):
        ours = verify(response, gold).correct
        pred = extract_answer(response)
        lenient = ours or (pred is not None and released_numeric_equal(pred, gold))
        counts[kind, "cases"] += 1
        counts[kind, "ours"] += ours
        counts[kind, "lenient"] += lenient
        if lenient != ours:
            flips.append((kind, pred, gold))
    print(f"{'case kind':14s} {'cases':>6s} {'ours accepts':>13s} {'lenient accepts':>16s} {'flipped':>8s}")
    for kind in dict.fromkeys(kinds):
        c = counts[kind, "cases"]
        print(f"{kind:14s} {c:6d} {counts[kind, 'ours']:13d} {counts[kind, 'lenient']:16d} "
              f"{counts[kind, 'lenient'] - counts[kind, 'ours']:8d}")
    print(f"flipped in all: {len(flips)} of {len(pairs)}; examples:")
    shown: Counter = Counter()
    for kind, pred, gold in flips:
        if shown[kind] < 5:
            shown[kind] += 1
            print(f"  {kind:14s} answer={pred!r:24s} reference={gold!r}")


def _kinds(pairs: list[tuple[str, str]], labels: list[bool]) -> list[str]:
    """Name each case of bench_verifier.load_cases by how it was made (its order: own, other, rewrites)."""
    kinds = []
    for (response, _), label in zip(pairs, labels, strict=True):
        rewrite = response.startswith("Thus the result is")
        if not rewrite and label:
            kinds.append("own")
        elif not rewrite:
            kinds.append("other")
        else:
            kinds.append("respelled" if label else "last-digit")
    return kinds


if __name__ == "__main__":
    main()
