"""Every metric the pipeline's steps export, as data: name, type, labels, help, and the stats key it reads.

Names follow the Prometheus conventions: a `masa_` prefix, base units (`_seconds`, `_tokens_total`,
`_ratio` for values in [0, 1]), counters end in `_total`, gauges hold the last value a step measured
(losses, throughputs the step timed itself: one observation per step is too coarse for `rate()`).
Round-level families carry `run`, `branch`, `round`; per-path ones add `path` (solution/meta).

Each `Metric` maps label values to the stats key that feeds them (`keys`), so a step's stats dict is
applied by one generic loop (`apply`) instead of a hand-written setter per number, and docs/metrics.md
is checked against this table (tests/test_telemetry.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUND = ("run", "branch", "round")
PATH = (*ROUND, "path")
PATHS = ("solution", "meta")
BENCH = ("run", "checkpoint", "benchmark")
STEP = (*ROUND, "step")
# Optimizer steps take from ~0.1 s (toy model on CPU) to minutes (7B, ZeRO-3).
STEP_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)


@dataclass(frozen=True)
class Metric:
    """One metric family; `keys` maps the values of the labels beyond the base ones to a stats key."""

    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    keys: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    unit: str = ""  # for docs/metrics.md only; the name already says it

    def __post_init__(self):
        if self.kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"{self.name}: kind must be counter, gauge or histogram, got {self.kind!r}")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counter names end in _total")


def one(key: str) -> dict[tuple[str, ...], str]:
    return {(): key}


def per_path(fmt: str, paths: Sequence[str] = PATHS) -> dict[tuple[str, ...], str]:
    """{("solution",): fmt with p=solution, ("meta",): ...}."""
    return {(p,): fmt.format(p=p) for p in paths}


ROLLOUT = (
    Metric("masa_rollout_prompts_total", "counter", ROUND, "Prompts in the rollout batch.", one("prompts")),
    Metric("masa_rollout_prompts_dropped_total", "counter", ROUND,
           "Prompts dropped (never truncated) for exceeding max_prompt_tokens.", one("prompts_dropped_for_length")),
    Metric("masa_rollout_gated_prompts_total", "counter", ROUND,
           "Prompts whose solution samples predictive gating skipped (masa-efficient).", one("gated_prompts")),
    Metric("masa_rollout_samples_total", "counter", PATH, "Samples generated.", per_path("{p}_samples")),
    Metric("masa_rollout_tokens_total", "counter", ROUND, "Response tokens generated, both paths.",
           one("tokens"), "tokens"),
    Metric("masa_rollout_cutoff_samples_total", "counter", ROUND,
           "Solution samples stopped by their prompt's early-cutoff budget.", one("cutoff_samples")),
    Metric("masa_rollout_meta_parse_failures_total", "counter", ROUND,
           "Meta samples whose JSON prediction did not parse.", one("meta_parse_failures")),
    Metric("masa_rollout_engine_calls_total", "counter", ROUND, "generate() calls on the engine.",
           one("engine_calls")),
    Metric("masa_rollout_samples_per_second", "gauge", ROUND, "Samples per second of the rollout's own time.",
           one("samples_per_s"), "1/s"),
    Metric("masa_rollout_tokens_per_second", "gauge", ROUND, "Response tokens per second of the rollout's own time.",
           one("tokens_per_s"), "tokens/s"),
    Metric("masa_rollout_duration_seconds", "gauge", ROUND, "The rollout's own time, engine start-up excluded.",
           one("wall_s"), "s"),
    Metric("masa_engine_startup_seconds", "gauge", ROUND, "Inference engine start-up time.", one("engine_startup_s"), "s"),
    Metric("masa_rollout_gating_active", "gauge", ROUND,
           "1 when predictive gating was active this round (after its warm-up), else 0.", one("gating_active")),
    Metric("masa_rollout_cutoff_active", "gauge", ROUND,
           "1 when early cutoff acted this round (after its switch, if any), else 0.", one("cutoff_active")),
    Metric("masa_heldout_accuracy_ratio", "gauge", ROUND,
           "Held-out accuracy of the round's policy (measured in the rollout step).", one("heldout.accuracy")),
    Metric("masa_heldout_accuracy_stderr_ratio", "gauge", ROUND,
           "Standard error over problems of the round's held-out accuracy.", one("heldout.accuracy_stderr")),
)

VERIFIER_OUTCOMES = ("correct", "incorrect", "no_answer", "timeout", "parse_error", "error")

SCORING = (
    Metric("masa_verifier_outcomes_total", "counter", (*ROUND, "outcome"),
           "Solution samples by verifier outcome: " + ", ".join(VERIFIER_OUTCOMES) + ".",
           {(o,): f"outcome.{o}" for o in VERIFIER_OUTCOMES}),
    Metric("masa_score_verifier_errors_total", "counter", ROUND,
           "Solution samples the verifier could not judge (timeout, parse limit, worker death).",
           one("verifier_errors")),
    Metric("masa_score_samples_total", "counter", PATH, "Scored samples.", per_path("n_{p}_rows")),
    Metric("masa_score_tokens_total", "counter", PATH, "Response tokens of the scored samples.",
           per_path("{p}_tokens"), "tokens"),
    Metric("masa_score_train_accuracy_ratio", "gauge", ROUND,
           "Mean solution reward (verified and not cut off) of the round's rollouts.", one("train_accuracy")),
    Metric("masa_score_zero_variance_groups_total", "counter", PATH,
           "GRPO groups with zero reward variance (no policy gradient).", per_path("zero_variance_{p}_groups")),
    Metric("masa_score_experts_total", "counter", ROUND, "Expert meta trajectories selected for behaviour cloning.",
           one("n_experts")),
    Metric("masa_score_meta_parse_ratio", "gauge", ROUND, "Share of meta samples whose prediction parsed.",
           one("meta_parse_rate")),
    Metric("masa_score_meta_pass_rate_mae", "gauge", ROUND,
           "Mean absolute error of parsed meta predictions' pass rate (predicted k/G vs observed).", one("meta_pass_rate_mae")),
    Metric("masa_score_meta_pass_rate_mae_median", "gauge", ROUND,
           "Mean absolute error of each prompt's median meta prediction (what gating acts on and is switched by).",
           one("meta_pass_rate_mae_median")),
    Metric("masa_score_meta_gate_prompts_total", "counter", (*ROUND, "outcome"),
           "Rolled-out prompts gating would skip (outcome=candidate) and those of them whose observed count was on "
           "the skipped side (outcome=hit): gating's precision, which switches it on with the MAE; rolled-out "
           "prompts with a mixed group, GRPO's signal (outcome=mixed), and those of them gating would skip "
           "(outcome=mixed_candidate): the signal it would throw away, the switch's third check.",
           {("candidate",): "meta_gate_candidates", ("hit",): "meta_gate_hits", ("mixed",): "meta_mixed",
            ("mixed_candidate",): "meta_gate_mixed"}),
    Metric("masa_score_meta_reward", "gauge", (*ROUND, "component"),
           "Mean meta reward (component=total) and its pass_rate, length and notion components.",
           {("total",): "meta_reward_mean", **{(c,): f"meta_reward_{c}_mean" for c in ("pass_rate", "length", "notion")}}),
)

TRAIN = (
    Metric("masa_train_steps_total", "counter", ROUND, "Optimizer steps taken."),
    Metric("masa_train_global_step", "gauge", ROUND, "Global optimizer step of the last step.", one("step")),
    Metric("masa_train_loss", "gauge", ROUND, "Total loss of the last step (policy + bc).", one("loss")),
    Metric("masa_train_policy_loss", "gauge", ROUND, "Policy-gradient loss of the last step.", one("policy_loss")),
    Metric("masa_train_bc_loss", "gauge", ROUND, "Behaviour-cloning loss of the last step.", one("bc_loss")),
    Metric("masa_train_pg_loss", "gauge", PATH, "Each path's share of the policy loss.", per_path("{p}/pg_loss")),
    Metric("masa_train_grad_norm", "gauge", ROUND, "Gradient norm before clipping.", one("grad_norm")),
    Metric("masa_train_learning_rate", "gauge", ROUND, "Learning rate of the last step.", one("lr")),
    Metric("masa_train_tokens_total", "counter", PATH,
           "Response tokens trained on; path=expert is the behaviour-cloning targets.",
           per_path("{p}/tokens", (*PATHS, "expert")), "tokens"),
    Metric("masa_train_tokens_per_second", "gauge", ROUND, "Training throughput of the last step.",
           one("tokens_per_s"), "tokens/s"),
    Metric("masa_train_step_duration_seconds", "histogram", ROUND, "Optimizer step time.", one("seconds"), "s"),
    Metric("masa_train_clip_fraction_low_ratio", "gauge", PATH, "Token share clipped at 1 - eps_low.",
           per_path("{p}/clip_frac_low")),
    Metric("masa_train_clip_fraction_high_ratio", "gauge", PATH, "Token share clipped at 1 + eps_high.",
           per_path("{p}/clip_frac_high")),
    Metric("masa_train_dual_clip_fraction_ratio", "gauge", PATH, "Token share hit by the dual clip.",
           per_path("{p}/dual_clip_frac")),
    Metric("masa_train_approx_kl", "gauge", PATH, "Approximate KL of the new policy from the rollout policy, per token.", per_path("{p}/approx_kl")),
    Metric("masa_train_kl_ref", "gauge", PATH, "KL to the reference policy per token.", per_path("{p}/kl_ref")),
    Metric("masa_train_entropy", "gauge", PATH, "Policy entropy per token (nats).", per_path("{p}/entropy")),
    Metric("masa_train_logprob_gap", "gauge", ROUND,
           "Mean absolute rollout-vs-trainer token log-prob difference (first step of a round only).", one("logprob_gap")),
)

BENCHMARK = (
    Metric("masa_benchmark_accuracy_ratio", "gauge", BENCH, "avg@k accuracy.", one("accuracy")),
    Metric("masa_benchmark_accuracy_stderr_ratio", "gauge", BENCH,
           "Standard error over problems of the avg@k accuracy.", one("accuracy_stderr")),
    Metric("masa_benchmark_pass_at_k_ratio", "gauge", (*BENCH, "k"), "pass@k (k label: 1, 2, 4, ..., k)."),
    Metric("masa_benchmark_problems", "gauge", BENCH, "Problems evaluated (after the prompt-length filter).",
           one("n_problems")),
    Metric("masa_benchmark_tokens_total", "counter", BENCH, "Response tokens generated, both paths.", one("tokens"),
           "tokens"),
    Metric("masa_benchmark_samples_per_second", "gauge", BENCH, "Generation throughput.", one("samples_per_s"), "1/s"),
    Metric("masa_benchmark_generation_seconds", "gauge", BENCH, "Time spent generating.", one("generation_s"), "s"),
    Metric("masa_benchmark_duration_seconds", "gauge", BENCH, "Benchmark wall time (generation + judging).",
           one("wall_s"), "s"),
    Metric("masa_benchmark_meta_pass_rate_mae", "gauge", BENCH, "Mean absolute error of predicted vs observed pass rates.",
           one("meta.pass_rate_mae")),
    Metric("masa_benchmark_meta_pass_rate_mae_stderr", "gauge", BENCH,
           "Standard error over problems of the pass-rate mean absolute error.", one("meta.pass_rate_mae_stderr")),
    Metric("masa_benchmark_meta_pass_rate_mae_constant", "gauge", BENCH,
           "Pass-rate MAE of the best constant prediction (the observed rates' median), a reference.",
           one("meta.pass_rate_mae_constant")),
    Metric("masa_benchmark_meta_spearman", "gauge", BENCH, "Spearman rho of predicted vs observed pass rates.",
           one("meta.spearman")),
    Metric("masa_benchmark_meta_length_in_range_ratio", "gauge", BENCH,
           "Share of predicted lengths inside the correct solutions' length range.", one("meta.length_in_range")),
    Metric("masa_benchmark_meta_notion", "gauge", BENCH, "Mean notion reward of parsed predictions.",
           one("meta.notion")),
    Metric("masa_benchmark_meta_parse_ratio", "gauge", BENCH, "Share of meta samples that parsed.",
           one("meta.parse_rate")),
)

STEP_METRICS = (
    Metric("masa_step_duration_seconds", "gauge", STEP, "Wall time of the pipeline step.", unit="s"),
    Metric("masa_step_success", "gauge", STEP, "1 when the step finished, 0 when it raised."),
    Metric("masa_step_last_completion_timestamp_seconds", "gauge", STEP,
           "Unix time the step ended (for staleness alerts on pushed groups).", unit="s"),
    Metric("masa_step_reused", "gauge", STEP, "1 when the step's result came from the run-once cache."),
)

ALL = ROLLOUT + SCORING + TRAIN + BENCHMARK + STEP_METRICS


def number(v: Any) -> float | None:
    """A finite float from a stats value (booleans as 0/1); None for anything else."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def flatten(stats: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested stats as `a.b` keys (rollout's `heldout.accuracy`, benchmark's `meta.spearman`)."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def build(registry: CollectorRegistry, specs: Sequence[Metric] = ALL) -> dict[str, Any]:
    """Create every family of `specs` in `registry`; {name: collector}."""
    out: dict[str, Any] = {}
    for m in specs:
        if m.kind == "counter":
            out[m.name] = Counter(m.name, m.help, m.labels, registry=registry)
        elif m.kind == "gauge":
            out[m.name] = Gauge(m.name, m.help, m.labels, registry=registry)
        else:
            out[m.name] = Histogram(m.name, m.help, m.labels, registry=registry, buckets=STEP_SECONDS_BUCKETS)
    return out


def apply(collectors: Mapping[str, Any], specs: Sequence[Metric], base: Sequence[str],
          stats: Mapping[str, Any]) -> int:
    """Feed flattened `stats` into the families of `specs`; returns how many series were updated.

    `base` are the values of each family's leading labels (run, branch, round). Missing, None and
    non-finite values are skipped: a GRPO round has no meta figures, a first step no logprob gap.
    """
    flat = flatten(stats)
    done = 0
    for m in specs:
        for extra, key in m.keys.items():
            v = number(flat.get(key))
            if v is None:
                continue
            child = collectors[m.name].labels(*base, *extra)
            if m.kind == "counter":
                if v < 0:
                    raise ValueError(f"{m.name}: stats[{key!r}] is negative ({v}); counters only grow")
                child.inc(v)
            elif m.kind == "gauge":
                child.set(v)
            else:
                child.observe(v)
            done += 1
    return done
