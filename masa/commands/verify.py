"""`masa verify IN.jsonl [-o OUT.jsonl]`: judge model responses against reference answers (`-`: stdin).

Each input line is a JSON object with string fields `response` and `answer`; every other field
(e.g. `id`) is passed through.  Each output line adds `correct` (bool), `extracted` (the answer taken
from the response, or null) and `error` (null, or why the item could not be judged: `timeout`,
`bad input: ...`).  Output lines are in input order, one per non-blank input line.

Bad lines do not stop the run: they are reported on stderr with their line number and written out
with `correct: false, error: "bad input: line N: ..."`.  The exit status is non-zero (2) only when
the input file itself cannot be read or the output cannot be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TextIO

HELP = "judge model responses (JSONL with response, answer) against reference answers"
BATCH_LINES = 4096  # judged together; bounds memory on large files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="JSONL file (or - for stdin), one object per line with `response` and `answer`")
    parser.add_argument("-o", "--output", help="output JSONL file (default: stdout)")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="time limit per item (default 5)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")


def _check_line(lineno: int, text: str) -> tuple[dict, str | None]:
    """(record to emit, problem or None) for one input line."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        return {"line": lineno}, f"line {lineno}: not JSON ({e.msg})"
    if not isinstance(rec, dict):
        return {"line": lineno}, f"line {lineno}: expected a JSON object, got {type(rec).__name__}"
    for key in ("response", "answer"):
        if key not in rec:
            return rec, f"line {lineno}: missing field {key!r}"
        if not isinstance(rec[key], str):
            return rec, f"line {lineno}: field {key!r} must be a string, got {type(rec[key]).__name__}"
    return rec, None


def _batches(lines: TextIO) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for lineno, text in enumerate(lines, start=1):
        if text.strip():
            batch.append((lineno, text))
        if len(batch) >= BATCH_LINES:
            yield batch
            batch = []
    if batch:
        yield batch


def _judge_batch(batch: list[tuple[int, str]], args: argparse.Namespace, out: TextIO) -> int:
    from masa.algo.verifier import verify_batch

    checked = [_check_line(lineno, text) for lineno, text in batch]
    good = [rec for rec, problem in checked if problem is None]
    verdicts = iter(
        verify_batch([(r["response"], r["answer"]) for r in good], timeout_s=args.timeout_s, workers=args.workers)
    )
    for rec, problem in checked:
        if problem is None:
            v = next(verdicts)
            rec.update(correct=v.correct, extracted=v.extracted, error=v.error)
        else:
            print(f"masa verify: {args.input}: bad input: {problem}", file=sys.stderr)
            rec.update(correct=False, extracted=None, error=f"bad input: {problem}")
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return sum(1 for _, p in checked if p is not None)


def run(args: argparse.Namespace) -> int:
    try:
        src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        print(f"masa verify: cannot read {args.input}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    except OSError as e:
        src.close()
        print(f"masa verify: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 2
    bad = 0
    try:
        for batch in _batches(src):
            bad += _judge_batch(batch, args, out)
    except UnicodeDecodeError as e:
        print(f"masa verify: cannot read {args.input}: not UTF-8 text ({e.reason})", file=sys.stderr)
        return 2
    finally:
        if src is not sys.stdin:
            src.close()
        if out is not sys.stdout:
            out.close()
    if bad:
        print(f"masa verify: {bad} bad input line(s) marked with error 'bad input'", file=sys.stderr)
    return 0
