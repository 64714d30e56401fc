"""bench/toy_cutoff_twins.py: round 0's cutoff counted against the GRPO twins, on a hand-made run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

_SPEC = importlib.util.spec_from_file_location("toy_cutoff_twins",
                                               Path(__file__).parents[1] / "bench" / "toy_cutoff_twins.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _write(run: Path, branch: str, part: str, name: str, rows: list[dict]) -> None:
    d = run / "store" / "toy-x" / branch / "round-000" / part
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / name)


def _run(tmp_path: Path, masa_first: int) -> Path:
    # one prompt, three samples; GRPO's twins: 10, 4 and 12 tokens, the first and the last passing
    twins = [list(range(10)), [7, 7, 7, 7], list(range(12))]
    _write(tmp_path, "grpo", "rollouts", "rollouts.parquet",
           [{"prompt_id": "p", "sample_idx": i, "response_token_ids": t} for i, t in enumerate(twins)])
    _write(tmp_path, "grpo", "scored", "scored.parquet",
           [{"prompt_id": "p", "response_token_ids": t, "reward": r} for t, r in zip(twins, (1.0, 0.0, 1.0), strict=True)])
    # MASA: sample 0 cut after 6 tokens, sample 1 whole, sample 2 cut after 5; and a meta row, ignored
    lengths, reasons = (6, 4, 5), ("cutoff", "stop", "cutoff")
    # (`masa_first`: sample 0's first token, 0 as its twin's)
    rows = [{"prompt_id": "p", "sample_idx": i, "path": "solution", "finish_reason": f,
             "response_token_ids": ([masa_first] + twins[i][1:n]) if i == 0 else twins[i][:n]}
            for i, (n, f) in enumerate(zip(lengths, reasons, strict=True))]
    rows.append({"prompt_id": "p", "sample_idx": 0, "path": "meta", "finish_reason": "stop", "response_token_ids": [1]})
    _write(tmp_path, "masa-efficient", "rollouts", "rollouts.parquet", rows)
    return tmp_path


def test_round_zero_cutoff_against_its_twins(tmp_path: Path) -> None:
    f = bench.twins(_run(tmp_path, masa_first=0))
    # cut: samples 0 and 2, both passing in GRPO (2 of its 2 passing samples); saved (10 - 6) + (12 - 5) = 11
    # of GRPO's 10 + 4 + 12 = 26 solution tokens
    assert f == {"samples": 3, "cut": 2, "cut_passing": 2, "of_passing": 1.0, "saved": 11,
                 "saved_share": pytest.approx(11 / 26)}


def test_a_sample_that_is_not_its_twins_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="differs from its GRPO twin"):
        bench.twins(_run(tmp_path, masa_first=5))
