"""bench/toy_run_time.py: a finished run's time split and the tokens its training computes on, on a
hand-made one-round run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from masa.config import load_config

_SPEC = importlib.util.spec_from_file_location("toy_run_time", Path(__file__).parents[1] / "bench" / "toy_run_time.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _row(path: str, prompt: int, response: int, advantage: float) -> dict:
    return {"path": path, "prompt_token_ids": [5] * prompt, "response_token_ids": [6] * response,
            "logprobs": [-1.0] * response, "advantage": advantage}


# the smoke preset: 2 ranks, 1 optimizer step a round, 8,192 tokens a micro-batch, inert samples skipped;
# a response cap of 128 tokens
ROWS = [_row("solution", 3, 8, 1.0), _row("solution", 3, 3, -1.0), _row("solution", 2, 9, 0.5),
        _row("solution", 3, 128, 0.0)]


def _run(tmp_path: Path) -> Path:
    cfg = load_config("smoke", ["rounds=1"])
    (tmp_path / "config.json").write_text(cfg.to_json())
    for branch, rows in (("grpo", ROWS), ("masa-efficient", [*ROWS, _row("meta", 4, 2, 1.0)])):
        d = tmp_path / "store" / "smoke-x" / branch / "round-000" / "scored"
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "scored.parquet")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(json.dumps({
        "timing": {"total_s": 100.0, "overhead_s": 10.0,
                   "by_kind": {"rollout": {"compute_s": 30.0}, "benchmark": {"compute_s": 20.0}}},
        "rounds": {"grpo": [{"generation_s": 10.0, "training_s": 5.0, "rollout_tokens": 100,
                             "zero_variance_share": 0.25}],
                   "masa": [{"generation_s": 12.0, "training_s": 6.0, "rollout_tokens": 120}]}}))
    return tmp_path


def test_the_time_split_and_the_tokens_training_computes_on(tmp_path: Path) -> None:
    f = bench.figures(_run(tmp_path))
    assert (f["run_s"], f["overhead_s"], f["bench_s"], f["zero_var"]) == (100.0, 10.0, 20.0, 0.25)
    assert f["check_s"] == pytest.approx(30.0 - 10.0 - 12.0)  # the rollout steps' work less generation
    # GRPO: the 131-token sample has advantage 0 (inert), so it is not computed on: 11 + 6 + 11 = 28 tokens.
    # Longest first, each to the lighter rank (a tie to rank 0): 11 -> r0, 11 -> r1, 6 -> r0. Rank 0's
    # micro-batch [11, 6] is padded to 11: 2 x 11 + 11 = 33 computed
    assert f["trained.grpo"] == 28 and f["padded.grpo"] == pytest.approx(33 / 28)
    # MASA adds a 6-token meta sample, which goes to rank 1 (17 against 11): [11, 6] on each rank, 44
    assert f["trained.masa"] == 34 and f["padded.masa"] == pytest.approx(44 / 34)
    assert f["at_cap"] == pytest.approx(2 / 8)  # one solution of four in each branch stopped at 128
    assert (f["gen_s.grpo"], f["train_s.masa"], f["tokens.masa"]) == (10.0, 6.0, 120)


def test_a_directory_without_a_report_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no report/report.json"):
        bench.figures(tmp_path)
