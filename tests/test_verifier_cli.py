"""`masa verify` through a real subprocess: file output, stdout, pass-through fields, bad lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LINES = [
    {"id": "a", "response": r"so $\boxed{\dfrac{1}{2}}$", "answer": "0.5", "extra": [1, 2]},
    {"id": "b", "response": "The answer is 7.", "answer": "8"},
    {"id": "c", "response": r"\boxed{(1,2]}", "answer": "(1,2)"},
    {"id": "d", "response": "no answer", "answer": "1"},
]


def _masa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "masa.cli", "verify", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec in LINES), encoding="utf-8")
    return path


def _check(records: list[dict]) -> None:
    assert [r["id"] for r in records] == ["a", "b", "c", "d"]
    assert [r["correct"] for r in records] == [True, False, False, False]
    assert [r["extracted"] for r in records] == [r"\dfrac{1}{2}", "7", "(1,2]", None]
    assert all(r["error"] is None for r in records)
    assert records[0]["extra"] == [1, 2] and records[0]["response"] == LINES[0]["response"]


def test_writes_output_file(jsonl, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = _masa(str(jsonl), "-o", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    _check([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])


def test_writes_stdout_without_output_option(jsonl):
    proc = _masa(str(jsonl))
    assert proc.returncode == 0, proc.stderr
    _check([json.loads(line) for line in proc.stdout.splitlines()])


def test_reads_stdin_with_dash(jsonl):
    proc = _masa("-", stdin=jsonl.read_text(encoding="utf-8"))
    assert proc.returncode == 0, proc.stderr
    _check([json.loads(line) for line in proc.stdout.splitlines()])


def test_bad_lines_are_reported_by_number_and_the_rest_is_judged(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": 1, "response": r"\boxed{3}", "answer": "3"}),
                "{not json",
                json.dumps({"id": 3, "response": r"\boxed{3}"}),
                json.dumps({"id": 4, "response": 3, "answer": "3"}),
                json.dumps([1, 2]),
                json.dumps({"id": 6, "response": r"\boxed{4}", "answer": "4"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    proc = _masa(str(path))
    assert proc.returncode == 0
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["correct"] for r in out] == [True, False, False, False, False, True]
    assert out[1]["error"].startswith("bad input: line 2: not JSON")
    assert out[2]["error"] == "bad input: line 3: missing field 'answer'" and out[2]["id"] == 3
    assert out[3]["error"] == "bad input: line 4: field 'response' must be a string, got int"
    assert out[4]["error"] == "bad input: line 5: expected a JSON object, got list"
    for n in (2, 3, 4, 5):
        assert f"line {n}:" in proc.stderr


def test_unreadable_file_exits_non_zero(tmp_path):
    proc = _masa(str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "missing.jsonl" in proc.stderr


def test_non_utf8_file_exits_non_zero(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"response": "caf\xe9", "answer": "1"}\n')
    proc = _masa(str(path))
    assert proc.returncode == 2
    assert "not UTF-8" in proc.stderr
