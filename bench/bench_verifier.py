"""Throughput and agreement of our verifier against math-verify on the same MATH cases, in one run.

Cases: every MATH test solution against its own target (expected correct) and against a random other
problem's target spelled differently (expected wrong); then boxed REWRITES of each target: an
equivalent respelling (`\\dfrac`, `a/b` or a decimal for a fraction, digit grouping, `x = `, `\\left(`,
list order reversed; expected correct) and the target with its last digit changed (expected wrong;
the label is approximate: a changed digit can leave the value equal, e.g. in `1^{3}`).  Timed side by side:
  ours-pool    verify_batch(pairs)             worker processes over all cores, per-item time limit
  ours-1proc   verify(response, answer) loop   one process, no limit (like-for-like with math-verify)
  math-verify  verify(parse(gold), parse(response)) loop, one process (its own signal-based timeouts)
Prints cases/s, the ratios, each verifier's accuracy against the expected labels, the agreement between
the two, and a sample of disagreements.

    .venv/bin/python bench/bench_verifier.py [--limit N] [--workers W]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

from masa.algo.verifier import verify, verify_batch
from masa.algo.verifier.judge import canonical_string

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "test.parquet"


_FRACTION = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")


def respell(target: str) -> str | None:
    """An equivalent spelling of a MATH target, or None when we have no safe rewrite."""
    m = _FRACTION.fullmatch(target)
    if m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        q = Fraction(a, b)
        scaled = q * 10**6
        return f"{sign}{float(q)}" if scaled.denominator == 1 else f"{sign}{a}/{b}"
    if re.fullmatch(r"\d{4,}", target):
        return f"{int(target):,}".replace(",", "{,}")
    if re.fullmatch(r"-?\d+(\.\d+)?", target):
        return f"x = {target}"
    if target.startswith("(") and target.endswith(")") and "(" not in target[1:]:
        return "\\left( " + target[1:-1].replace(",", ", ") + " \\right)"
    if "," in target and not re.search(r"[()\[\]{}\\]|,\d{3}", target):
        return ", ".join(reversed(target.split(",")))
    if "\\frac" in target:
        return target.replace("\\frac", "\\dfrac")
    return None


def mutate(target: str) -> str | None:
    digits = [k for k, c in enumerate(target) if c.isdigit()]
    if not digits:
        return None
    k = digits[-1]
    return target[:k] + str((int(target[k]) + 1) % 10) + target[k + 1 :]


def load_cases(limit: int | None) -> tuple[list[tuple[str, str]], list[bool]]:
    import pyarrow.parquet as pq

    col = pq.read_table(DATA, columns=["reward_model"]).column("reward_model").to_pylist()
    rows = [(r["ground_truth"]["solution"], r["ground_truth"]["target"]) for r in col][:limit]
    rng = random.Random(0)
    pairs, labels = list(rows), [True] * len(rows)
    for solution, gold in rows:
        other = rows[rng.randrange(len(rows))][1]
        if canonical_string(other) != canonical_string(gold):
            pairs.append((solution, other))
            labels.append(False)
    for _, gold in rows:
        for made, label in ((respell(gold), True), (mutate(gold), False)):
            if made is not None:
                pairs.append((f"Thus the result is $\\boxed{{{made}}}$.", gold))
                labels.append(label)
    return pairs, labels


def math_verify_all(pairs: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse
    from math_verify import verify as mv_verify

    out = []
    for response, gold in pairs:
        try:
            out.append(bool(mv_verify(parse("\\boxed{" + gold + "}"), parse(response))))
        except Exception:  # noqa: BLE001 - a crash counts as "not verified", as in its own reward fn
            out.append(False)
    return out


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU time of the
    in-process runs is the steadier figure; the pool's work is in its children, so only wall counts."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="use the first N MATH rows (default all)")
    ap.add_argument("--workers", type=int, default=None, help="verify_batch workers (default all cores)")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    pairs, labels = load_cases(args.limit)
    n = len(pairs)
    print(f"{n} cases ({sum(labels)} expected correct, {n - sum(labels)} expected wrong), {os.cpu_count()} cores")

    pool, t_pool, _ = timed(lambda: [v.correct for v in verify_batch(pairs, workers=args.workers)])
    one, t_one, c_one = timed(lambda: [verify(r, a).correct for r, a in pairs])
    mv, t_mv, c_mv = timed(math_verify_all, pairs)
    assert pool == one, "pool and in-process verdicts differ"

    print(f"{'ours-pool':12s} {n / t_pool:10.0f} cases/s wall ({t_pool:.2f} s)")
    for name, secs, cpu in (("ours-1proc", t_one, c_one), ("math-verify", t_mv, c_mv)):
        print(f"{name:12s} {n / secs:10.0f} cases/s wall ({secs:.2f} s)   {n / cpu:10.0f} cases/s CPU ({cpu:.2f} s)")
    print(f"ratio ours-1proc / math-verify: {t_mv / t_one:.1f}x wall, {c_mv / c_one:.1f}x CPU;  "
          f"ours-pool / math-verify: {t_mv / t_pool:.1f}x wall")
    for name, got in (("ours", one), ("math-verify", mv)):
        own = sum(g for g, lab in zip(got, labels, strict=True) if lab) / sum(labels)
        other = sum(not g for g, lab in zip(got, labels, strict=True) if not lab) / (n - sum(labels))
        print(f"accuracy {name:12s} expected-correct {own:.4f}   expected-wrong {other:.4f}")
    disagree = [k for k in range(n) if one[k] != mv[k]]
    print(f"agreement ours vs math-verify: {1 - len(disagree) / n:.4f} ({len(disagree)} of {n} differ)")
    kinds = Counter((one[k], mv[k], labels[k]) for k in disagree)
    for (ours, theirs, expected), count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {count:5d} x ours={ours!s:5} math-verify={theirs!s:5} expected={expected}")
    # Cases where we miss the expected label first: those are ours to fix.
    for k in sorted(disagree, key=lambda k: one[k] == labels[k])[:25]:
        response, gold = pairs[k]
        print(f"  ours={one[k]!s:5} mv={mv[k]!s:5} expected={labels[k]!s:5} "
              f"box={response[response.rfind('boxed'):][:60]!r} gold={gold!r}")


if __name__ == "__main__":
    main()
