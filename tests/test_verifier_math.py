"""The verifier on the real MATH test split: every reference solution against its own target (must be
judged correct) and against another problem's target (must be judged wrong).

Threshold: at least 99.5% right in each direction, on all 5,000 rows.  The 10 own-target misses (at
the time of writing) are all corrupted targets in the data, e.g. `864^2` for `864 \\mbox{ inches}^2`,
`19{}43` for `19 \\text{ and }43`, an empty target, `\\frac{\\}{p}i4+2-\\sqrt{2}`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from masa.algo.verifier import verify_batch
from masa.algo.verifier.judge import canonical_string

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "test.parquet"
THRESHOLD = 0.995


@pytest.fixture(scope="module")
def math_rows() -> list[tuple[str, str]]:
    if not DATA.exists():
        pytest.skip(f"MATH data not found at {DATA}")
    import pyarrow.parquet as pq

    col = pq.read_table(DATA, columns=["reward_model"]).column("reward_model").to_pylist()
    return [(r["ground_truth"]["solution"], r["ground_truth"]["target"]) for r in col]


def test_every_solution_matches_its_own_target(math_rows):
    verdicts = verify_batch(math_rows, timeout_s=5.0)
    right = sum(v.correct for v in verdicts)
    misses = [(v.extracted, gold) for v, (_, gold) in zip(verdicts, math_rows, strict=True) if not v.correct]
    print(f"\nMATH own target: {right}/{len(math_rows)} = {right / len(math_rows):.4f}; misses: {misses}")
    assert right / len(math_rows) >= THRESHOLD, misses


def test_solutions_do_not_match_other_targets(math_rows):
    # Pair row i with a random other row whose target is spelled differently after normalisation;
    # a few such pairs may still be mathematically equal (then "wrong" here is right), hence the threshold.
    rng = random.Random(0)
    pairs = []
    for solution, gold in math_rows:
        other = math_rows[rng.randrange(len(math_rows))][1]
        if canonical_string(other) != canonical_string(gold):
            pairs.append((solution, other))
    verdicts = verify_batch(pairs, timeout_s=5.0)
    right = sum(not v.correct for v in verdicts)
    accepted = [(v.extracted, gold) for v, (_, gold) in zip(verdicts, pairs, strict=True) if v.correct]
    print(f"\nMATH other target: {right}/{len(pairs)} = {right / len(pairs):.4f}; accepted: {accepted}")
    assert len(pairs) >= 4900
    assert right / len(pairs) >= THRESHOLD, accepted
