"""Verifier outcome of each solution sample, counted for `masa_verifier_outcomes_total`.

The scoring step's stats only count `verifier_errors`; the scored shard keeps, per solution row,
`correct` and `verifier_error` (docs/rollout-shard.md), which together with the response text tell
the outcomes apart:

    correct      verified correct
    timeout      the verifier's worker was killed at its time limit (verifier_error == "timeout")
    parse_error  the reference answer could not be parsed, or the parser hit a size limit
    error        any other verifier failure (e.g. a worker that died)
    no_answer    judged without error, but the response has no final answer to extract (format failure)
    incorrect    an extracted answer that is not equivalent to the reference
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from masa.algo.verifier.extract import extract_answer
from masa.schemas import OUTCOME_NEEDS
from masa.telemetry.metrics import VERIFIER_OUTCOMES


def outcome(correct: bool | None, error: str | None, text: str) -> str:
    """The outcome label of one solution sample (see the module docstring)."""
    if error is not None:
        if error == "timeout":
            return "timeout"
        if error.startswith(("cannot parse", "limit")):
            return "parse_error"
        return "error"
    if correct:
        return "correct"
    return "no_answer" if extract_answer(text) is None else "incorrect"


def count_outcomes(rows: Iterable[tuple[bool | None, str | None, str]]) -> dict[str, int]:
    """{outcome: count} over (correct, verifier_error, text) triples; every outcome is present."""
    counts = dict.fromkeys(VERIFIER_OUTCOMES, 0)
    for correct, error, text in rows:
        counts[outcome(correct, error, text)] += 1
    return counts


def verifier_outcomes(scored_path: str | Path) -> dict[str, int]:
    """Outcome counts of the solution rows of a scored shard (`scored.parquet`)."""
    import pyarrow.parquet as pq

    cols = pq.read_table(scored_path, columns=list(OUTCOME_NEEDS)).to_pydict()
    sol = [i for i, p in enumerate(cols["path"]) if p == "solution"]
    return count_outcomes((cols["correct"][i], cols["verifier_error"][i], cols["text"][i] or "") for i in sol)
