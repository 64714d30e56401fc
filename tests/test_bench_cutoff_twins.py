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
    # of GRPO's 10 + 4 + 12 = 26 solution tokens; the one prompt is mixed: its failing sample's 4 tokens
    # over its passing ones' mean (10 + 12) / 2 = 11. Sample 1 was not cut (whole 0), but it fails, so the
    # prompt kept no pass of GRPO's 2 (lost 1)
    assert f == {"samples": 3, "cut": 2, "cut_passing": 2, "of_passing": 1.0, "saved": 11,
                 "saved_share": pytest.approx(11 / 26), "whole": 0, "lost": 1, "fail_mixed": pytest.approx(4 / 11)}


def test_fail_mixed_averages_over_mixed_prompts_only() -> None:
    # prompt a: failing 12 and 9 (mean 10.5) over passing 7 -> 1.5; prompt b: failing 4 over passing 8 and
    # 8 -> 0.5; prompt c, all failing, and d, all passing, give no ratio: (1.5 + 0.5) / 2 = 1.0
    rows = [("a", 12, 0), ("a", 9, 0), ("a", 7, 1), ("b", 4, 0), ("b", 8, 1), ("b", 8, 1),
            ("c", 30, 0), ("c", 31, 0), ("d", 2, 1)]
    samples = [{"prompt_id": p, "response_token_ids": list(range(i, i + n))} for i, (p, n, _) in enumerate(rows)]
    reward = {(p, tuple(range(i, i + n))): float(r) for i, (p, n, r) in enumerate(rows)}
    assert bench.fail_mixed(samples, reward) == pytest.approx(1.0)


def test_a_sample_that_is_not_its_twins_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="differs from its GRPO twin"):
        bench.twins(_run(tmp_path, masa_first=5))
