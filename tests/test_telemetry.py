"""Telemetry: step stats → Prometheus series, served over real HTTP and parsed with prometheus_client.

The stats fed here come from the producers' own types (RolloutStats, a real StepAccumulator row, a real
`score_shard` run on a small shard), so a renamed stats key breaks these tests, not the dashboards.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from masa.runner.rollout import RolloutStats
from masa.telemetry import METRICS, Telemetry, count_outcomes, verifier_outcomes
from masa.telemetry.metrics import Metric, apply, build
from masa.telemetry.outcomes import outcome
from masa.telemetry.telemetry import env_port
from masa.train.metrics import StepAccumulator

ROOT = Path(__file__).resolve().parents[1]
L = {"run": "t1", "branch": "masa", "round": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of an endpoint, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def at(series, name, **labels) -> float:
    return series[(name, frozenset(labels.items()))]


def rollout_stats(**over) -> dict:
    s = RolloutStats(prompts=8, prompts_dropped_for_length=1, gating_active=True, gated_prompts=2, samples=52,
                     meta_samples=28, solution_samples=24, meta_parse_failures=3, cutoff_samples=5, tokens=6100,
                     engine_startup_s=12.5, wall_s=4.0, samples_per_s=13.0, tokens_per_s=1525.0, engine_calls=2)
    # what rounds.rollout_step adds around RolloutStats
    return {**dataclasses.asdict(s), "startup_s": 12.5, "heldout": {"accuracy": 0.375, "n_problems": 8},
            "reused": False, **over}


def train_row(step: int, seconds: float, gap=None) -> dict:
    """A metrics row from the trainer's own accumulator: 120 solution, 40 meta, 10 expert tokens."""
    acc = StepAccumulator()
    acc.lr, acc.grad_norm = 1e-6, torch.tensor(0.75)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    acc.add({"solution/tokens": t(120.0), "solution/pg_loss_sum": t(-0.25), "solution/clip_frac_low_sum": t(12.0),
             "solution/entropy_sum": t(60.0), "meta/tokens": t(40.0), "meta/pg_loss_sum": t(0.05),
             "meta/approx_kl_sum": t(0.4), "expert/tokens": t(10.0), "expert/bc_loss_sum": t(0.1)},
            loss=t(-0.1), tokens=170)
    return acc.reduce(step=step, step_in_round=step, seconds=seconds, gap=gap, device="cpu")


# ---------------------------------------------------------------- scoring on a real shard

G = 4


def _row(gid, path, idx, text, n_tokens, finish="stop"):
    return {"prompt_id": f"q{gid}", "group_id": gid, "path": path, "sample_idx": idx, "round": 2,
            "algorithm": "masa", "problem": "What is 2+3?", "answer": "5", "prompt_token_ids": [1, 2],
            "response_token_ids": list(range(n_tokens)), "logprobs": [-1.0] * n_tokens, "text": text,
            "finish_reason": finish, "meta_pass_rate": None, "meta_solution_length": None, "meta_notions": None,
            "meta_parse_error": None, "gated": False, "max_tokens": 64}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One prompt: solutions correct, wrong, answerless, correct-but-cut-off; two meta samples."""
    from masa.algo.config import AlgorithmConfig, ExpertConfig
    from masa.algo.meta import format_meta_completion
    from masa.runner.rollout import write_shard
    from masa.runner.scoring import score_shard

    d = tmp_path_factory.mktemp("score")
    meta = format_meta_completion("a sum", notions=["addition"], pass_rate=1, solution_length=3)
    rows = [_row(0, "solution", 0, "so \\boxed{5}", 3), _row(0, "solution", 1, "so \\boxed{6}", 4),
            _row(0, "solution", 2, "I give up", 5), _row(0, "solution", 3, "\\boxed{5}", 9, finish="cutoff"),
            _row(0, "meta", 0, meta, 6), _row(0, "meta", 1, "<meta>no</meta> {", 2)]
    write_shard(rows, d / "rollouts.parquet")
    algo = AlgorithmConfig(name="masa", n_solution=G, n_meta=2, expert=ExpertConfig(enabled=False))
    stats = score_shard(str(d / "rollouts.parquet"), str(d / "out"), tokenizer_path=str(d), algo=algo,
                        max_response_tokens=64, verifier_workers=0)
    return stats, d / "out" / "scored.parquet"


def test_verifier_outcomes_of_a_scored_shard(scored):
    _, path = scored
    # the cut-off sample is *verified* correct (its reward is 0, but that is the cutoff's doing)
    assert verifier_outcomes(path) == {"correct": 2, "incorrect": 1, "no_answer": 1, "timeout": 0,
                                       "parse_error": 0, "error": 0}


@pytest.mark.parametrize(("correct", "error", "text", "want"), [
    (False, "timeout", "\\boxed{5}", "timeout"),
    (False, "cannot parse reference answer: x", "\\boxed{5}", "parse_error"),
    (False, "limit: depth", "\\boxed{5}", "parse_error"),
    (False, "worker died", "\\boxed{5}", "error"),
    (False, None, "no box here", "no_answer"),
    (False, None, "Answer: 7", "incorrect"),  # the extractor's fallback finds an answer
    (True, None, "\\boxed{5}", "correct"),
])
def test_outcome_labels(correct, error, text, want):
    assert outcome(correct, error, text) == want
    assert count_outcomes([(correct, error, text)])[want] == 1


# ---------------------------------------------------------------- served over HTTP


def test_scrape_rollout_scoring_and_train_over_http(scored):
    stats, path = scored
    tel = Telemetry("t1", "masa")
    port = tel.serve(free_port(), addr="127.0.0.1")
    try:
        assert port is not None and tel.server.url == f"http://127.0.0.1:{port}/metrics"
        tel.observe_rollout(2, rollout_stats())
        tel.observe_scoring(2, stats, outcomes=verifier_outcomes(path))
        on_step = tel.train_hook(2)
        on_step(train_row(7, 0.5, gap=(torch.tensor(3.0), torch.tensor(6.0))))
        on_step(train_row(8, 1.5))
        s = scrape(tel.server.url)
    finally:
        tel.close()

    # rollout: counters carry the stats, per path where the stats split by path
    assert at(s, "masa_rollout_samples_total", **L, path="meta") == 28
    assert at(s, "masa_rollout_samples_total", **L, path="solution") == 24
    assert at(s, "masa_rollout_tokens_total", **L) == 6100
    assert at(s, "masa_rollout_gated_prompts_total", **L) == 2
    assert at(s, "masa_rollout_cutoff_samples_total", **L) == 5
    assert at(s, "masa_rollout_gating_active", **L) == 1.0
    assert at(s, "masa_rollout_tokens_per_second", **L) == 1525.0
    assert at(s, "masa_heldout_accuracy_ratio", **L) == 0.375
    assert at(s, "masa_step_reused", **L, step="rollout") == 0.0

    # scoring: outcomes, and the meta reward components the real scorer produced
    assert at(s, "masa_verifier_outcomes_total", **L, outcome="correct") == 2
    assert at(s, "masa_verifier_outcomes_total", **L, outcome="no_answer") == 1
    assert at(s, "masa_score_samples_total", **L, path="solution") == 4
    assert at(s, "masa_score_tokens_total", **L, path="meta") == 8  # 6 + 2
    assert at(s, "masa_score_train_accuracy_ratio", **L) == 0.25  # rewards [1, 0, 0, 0 (cut off)]
    assert at(s, "masa_score_meta_parse_ratio", **L) == 0.5
    for c in ("total", "pass_rate", "length", "notion"):
        assert at(s, "masa_score_meta_reward", **L, component=c) == pytest.approx(
            stats["meta_reward_mean" if c == "total" else f"meta_reward_{c}_mean"])

    # train: two steps; gauges hold the last, counters and the histogram the sums
    assert at(s, "masa_train_steps_total", **L) == 2
    assert at(s, "masa_train_global_step", **L) == 8
    assert at(s, "masa_train_tokens_total", **L, path="solution") == 240
    assert at(s, "masa_train_tokens_total", **L, path="expert") == 20
    assert at(s, "masa_train_policy_loss", **L) == pytest.approx(-0.2)  # -0.25 + 0.05
    assert at(s, "masa_train_pg_loss", **L, path="meta") == pytest.approx(0.05)
    assert at(s, "masa_train_bc_loss", **L) == pytest.approx(0.1)
    assert at(s, "masa_train_clip_fraction_low_ratio", **L, path="solution") == pytest.approx(0.1)  # 12/120
    assert at(s, "masa_train_entropy", **L, path="solution") == pytest.approx(0.5)  # 60/120
    assert at(s, "masa_train_approx_kl", **L, path="meta") == pytest.approx(0.01)  # 0.4/40
    assert at(s, "masa_train_grad_norm", **L) == 0.75
    assert at(s, "masa_train_logprob_gap", **L) == 0.5  # first step only: 3/6, kept by the gauge
    assert at(s, "masa_train_step_duration_seconds_count", **L) == 2
    assert at(s, "masa_train_step_duration_seconds_sum", **L) == 2.0
    assert at(s, "masa_train_step_duration_seconds_bucket", **L, le="1.0") == 1
    assert at(s, "masa_train_step_duration_seconds_bucket", **L, le="2.5") == 2
    # statistics a path did not have (no meta clip fraction: 0/40 tokens is 0, not missing) are not invented
    assert ("masa_train_kl_ref", frozenset({**L, "path": "solution"}.items())) in s
    assert not any(name == "masa_benchmark_accuracy_ratio" for name, _ in s)  # no child until observed
    assert tel.server is None


def test_benchmark_results():
    tel = Telemetry("t1", registry=CollectorRegistry())
    figures = {"accuracy": 0.4, "pass_at_k": {"1": 0.4, "2": 0.55, "4": 0.7}, "k": 4, "n_problems": 20,
               "n_dropped_too_long": 0, "tokens": 9000, "generation_s": 3.0, "samples_per_s": 53.3,
               "meta": {"pass_rate_mae": 0.2, "spearman": None, "length_in_range": 0.5, "notion": 0.3,
                        "parse_rate": 0.9},
               "calibration": [{"prompt_id": "a", "observed": 0.5, "predicted": 0.25}], "wall_s": 4.5}
    tel.observe_benchmark("final-masa", {"benchmarks": {"aime24": figures}, "wall_s": 5.0})
    s = {(x.name, frozenset(x.labels.items())): x.value for m in tel.registry.collect() for x in m.samples}
    b = {"run": "t1", "checkpoint": "final-masa", "benchmark": "aime24"}
    assert at(s, "masa_benchmark_accuracy_ratio", **b) == 0.4
    assert at(s, "masa_benchmark_pass_at_k_ratio", **b, k="4") == 0.7
    assert at(s, "masa_benchmark_tokens_total", **b) == 9000
    assert at(s, "masa_benchmark_meta_parse_ratio", **b) == 0.9
    assert ("masa_benchmark_meta_spearman", frozenset(b.items())) not in s  # None (too few problems): no series


def test_reused_step_counts_nothing():
    tel = Telemetry("t1", "masa", registry=CollectorRegistry())
    tel.observe_rollout(2, rollout_stats(reused=True))
    names = {x.name for m in tel.registry.collect() for x in m.samples}
    assert names == {"masa_step_reused"}


def test_registries_are_separate_and_counters_refuse_negative_values():
    a, b = Telemetry("a"), Telemetry("b")  # a shared global registry would raise "Duplicated timeseries"
    a.observe_train_step(0, {"solution/tokens": 5})
    assert b.registry.get_sample_value("masa_train_tokens_total", {"run": "b", "branch": "", "round": "0",
                                                                    "path": "solution"}) is None
    with pytest.raises(ValueError, match=r"masa_rollout_tokens_total: stats\['tokens'\] is negative"):
        a.observe_rollout(0, {"tokens": -1})
    with pytest.raises(ValueError, match="needs a run name"):
        Telemetry("")
    with pytest.raises(ValueError, match="counter names end in _total"):
        Metric("masa_x", "counter", (), "x")


def test_port_zero_is_off_and_a_taken_port_only_warns(caplog):
    tel = Telemetry("t1", registry=CollectorRegistry())
    assert tel.serve(0) is None and tel.server is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with caplog.at_level(logging.WARNING, logger="masa.telemetry"):
            assert tel.serve(busy.getsockname()[1], addr="127.0.0.1") is None
    assert "metrics endpoint" in caplog.text
    assert env_port({}) == 0 and env_port({"MASA_METRICS_PORT": "9400"}) == 9400
    with caplog.at_level(logging.WARNING, logger="masa.telemetry"):
        assert env_port({"MASA_METRICS_PORT": "http"}) == 0
    assert "not a port number" in caplog.text


# ---------------------------------------------------------------- contracts with the producers and the docs


def test_every_stats_key_read_exists_in_its_producer(scored):
    flat_keys = lambda specs: {k for m in specs for k in m.keys.values()}  # noqa: E731
    from masa.telemetry.metrics import ROLLOUT, SCORING, TRAIN

    # heldout.*: masa.runner.evaluate.heldout_accuracy (the rounds' held-out measurement)
    rollout = {f.name for f in dataclasses.fields(RolloutStats)} | {"heldout.accuracy", "heldout.accuracy_stderr"}
    assert flat_keys(ROLLOUT) <= rollout
    scoring = set(scored[0]) | {f"outcome.{o}" for o in verifier_outcomes(scored[1])}
    assert flat_keys(SCORING) <= scoring
    assert flat_keys(TRAIN) <= set(train_row(1, 0.1))


def test_docs_list_every_metric():
    """docs/metrics.md has one table row per metric: | `name` | type | unit | labels | meaning |."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    rows = {m.group(1): (m.group(2).strip(), m.group(3).strip())
            for m in re.finditer(r"^\| `(masa_\w+)` \| (\w+) \| [^|]* \| ([^|]*) \|", doc, re.M)}
    missing = [m.name for m in METRICS if m.name not in rows]
    assert not missing, f"docs/metrics.md lacks {missing}"
    for m in METRICS:
        kind, labels = rows[m.name]
        assert kind == m.kind, m.name
        assert {x.strip(" `") for x in labels.split(",") if x.strip()} == set(m.labels), m.name
    assert set(rows) == {m.name for m in METRICS}, "docs/metrics.md lists metrics that do not exist"


def test_build_and_apply_skip_missing_values():
    reg = CollectorRegistry()
    spec = (Metric("masa_t_x_total", "counter", ("run",), "x", {(): "a.b"}),)
    c = build(reg, spec)
    assert apply(c, spec, ("r",), {"a": {"b": 2}}) == 1
    assert apply(c, spec, ("r",), {"a": {"b": None}}) == 0
    assert apply(c, spec, ("r",), {"a": {"b": float("nan")}}) == 0
    assert reg.get_sample_value("masa_t_x_total", {"run": "r"}) == 2


def test_scored_shard_without_solution_rows(tmp_path):
    table = pa.table({"path": ["meta"], "correct": pa.array([None], pa.bool_()),
                      "verifier_error": pa.array([None], pa.string()), "text": ["x"]})
    pq.write_table(table, tmp_path / "s.parquet")
    assert sum(verifier_outcomes(tmp_path / "s.parquet").values()) == 0
