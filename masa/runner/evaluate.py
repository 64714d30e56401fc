"""The benchmark step: avg@k, pass@k and meta-awareness of one checkpoint on math benchmarks.

For each problem we sample k solutions and meta_k (default k) meta predictions (the same meta prompt the policy is
trained on, so a GRPO model is asked it too), judge the solutions with the project's verifier, and
compare the predictions with what the solutions did: pass-rate mean absolute error (predicted k'/G
against observed c/k, per parsed meta sample), Spearman correlation over problems of the mean
predicted and the observed pass rate, the share of predicted lengths within the correct samples'
length range, and the notion reward. Accuracy and pass-rate MAE come with their standard error over
problems (`accuracy_stderr`, `meta.pass_rate_mae_stderr`; masa.algo.evaluation; None below two
problems). Benchmarks are verl-layout parquet, JSONL or Hugging Face ids (`masa.data.records`): a new
benchmark in the verl layout runs with no code change.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from masa.algo.evaluation import (
    accuracy_stderr,
    avg_at_k,
    clustered_mean_stderr,
    outcome_spread,
    pass_at_k,
    spearman,
)
from masa.algo.meta import MetaPrediction, parse_meta, render_meta_prompt
from masa.algo.prompts import solution_prompt
from masa.algo.rewards import notion_rewards
from masa.algo.verifier import verify_batch
from masa.data.records import DataError, Problem, load_problems
from masa.engines import Engine, EngineConfig, GenerationRequest, SamplingSpec, make_engine
from masa.runner.rollout import chat_ids, context_len, request_seed
from masa.runner.settings import EvalSettings


def benchmark_name(source: str) -> str:
    """`../shared/data/aime2025/test.parquet` → `aime2025`; `org/MATH-500` → `MATH-500`."""
    path = Path(source)
    if path.suffix in (".parquet", ".jsonl", ".json"):
        return path.parent.name if path.stem in ("test", "train", "validation", "heldout") else path.stem
    return source.rstrip("/").rsplit("/", 1)[-1]


def _pass_ks(k: int) -> list[int]:
    ks = [1]
    while ks[-1] * 2 <= k:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == k else ks + [k]


def _prompts(tok, p: Problem, s: EvalSettings) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(solution, meta) prompt token ids of one problem, both showing the instructed problem."""
    text = solution_prompt(p.problem, s.solution_instruction)
    meta = render_meta_prompt(text, n_solution=s.n_solution, max_response_tokens=s.meta_max_tokens or s.max_tokens)
    return chat_ids(tok, text), chat_ids(tok, meta)


def prompt_limit(context: int | None, s: EvalSettings) -> tuple[int, str]:
    """Longest prompt a problem may have, and why: max_prompt_tokens, or the model's context less the
    minimum response budget when that is smaller."""
    if context is not None and context - s.min_response_tokens < s.max_prompt_tokens:
        return context - s.min_response_tokens, (f"prompt over {context - s.min_response_tokens} tokens (the "
                                                  f"model's context of {context} less {s.min_response_tokens} response tokens)")
    return s.max_prompt_tokens, f"prompt over max_prompt_tokens ({s.max_prompt_tokens})"


@dataclass(frozen=True)
class MetaOutcome:
    """One parsed meta sample of a problem: its predicted count of correct attempts (of G), length, and
    the notion reward its notions earned against the problem's solutions."""

    pass_rate: int
    solution_length: int
    notion: float


@dataclass(frozen=True)
class ProblemOutcome:
    """What one problem's k solutions and k meta samples did: every figure of `figures` is a function of a
    list of these, so a benchmark sharded over problems (`resources.benchmark_shards`) merges exactly."""

    prompt_id: str
    correct: tuple[bool, ...]  # (k,) the verifier's verdicts
    lengths: tuple[int, ...]  # (k,) solution lengths in tokens
    meta: tuple[MetaOutcome | None, ...]  # one per meta sample (None: did not parse); () without meta
    tokens: int  # every generated token of the problem, solutions and meta

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProblemOutcome:
        return cls(prompt_id=d["prompt_id"], correct=tuple(d["correct"]), lengths=tuple(d["lengths"]),
                   meta=tuple(None if m is None else MetaOutcome(**m) for m in d["meta"]), tokens=d["tokens"])


@dataclass(frozen=True)
class Sampled:
    """One benchmark's (or one shard of it) sampled and judged problems, before any figure is taken."""

    outcomes: list[ProblemOutcome]
    n_skipped: int  # problems whose prompt did not fit (`prompt_limit`)
    skipped_reason: str  # why they did not fit
    longest_prompt: int  # tokens of the longest prompt seen (for the error when none fits)
    context: int | None  # the model's context length
    generation_s: float

    def no_fit_error(self) -> DataError:
        n = self.n_skipped
        return DataError(f"no benchmark problem fits: all {n} have a {self.skipped_reason}; the longest prompt has "
                         f"{self.longest_prompt} tokens, the model's context is "
                         f"{self.context if self.context is not None else 'unknown'}")


def sample_outcomes(engine: Engine, problems: Sequence[Problem], s: EvalSettings, *, meta: bool = True) -> Sampled:
    """Sample k solutions (and, with `meta`, k meta predictions) per problem and judge them. Problems whose
    prompt does not fit (`prompt_limit`) are skipped and counted. Each request's seed is a function of
    the problem alone, so a problem's samples do not depend on which other problems share the call."""
    tok = engine.tokenizer
    context = context_len(engine)
    limit, why = prompt_limit(context, s)
    kept, reqs, longest = [], [], 0
    for p in problems:
        sol, meta_ids = _prompts(tok, p, s)
        n = max(len(sol), len(meta_ids)) if meta else len(sol)
        longest = max(longest, n)
        if n > limit:
            continue
        kept.append(p)
        # each request may generate only what its prompt leaves of the context
        room = s.max_tokens if context is None else min(s.max_tokens, context - n)
        for path, ids, n_samples in (("solution", sol, s.k), ("meta", meta_ids, s.meta_samples))[: 2 if meta else 1]:
            reqs.append(GenerationRequest(ids, SamplingSpec(n=n_samples, temperature=s.temperature, top_p=s.top_p,
                                                            max_tokens=room,
                                                            seed=request_seed(s.seed, 0, p.prompt_id, f"eval-{path}"))))
    t0 = time.monotonic()
    out = engine.generate(reqs) if reqs else []
    gen_s = time.monotonic() - t0
    sols, metas = (out[0::2], out[1::2]) if meta else (out, [[] for _ in kept])
    verdicts = verify_batch([(smp.text, p.answer) for p, g in zip(kept, sols, strict=True) for smp in g],
                            timeout_s=s.verifier_timeout_s)
    outcomes = []
    for i, p in enumerate(kept):
        correct = tuple(bool(v.correct) for v in verdicts[i * s.k: (i + 1) * s.k])
        outcomes.append(ProblemOutcome(
            prompt_id=p.prompt_id, correct=correct, lengths=tuple(len(x.response_token_ids) for x in sols[i]),
            meta=_meta_outcomes(p, sols[i], metas[i], correct, s) if meta else (),
            tokens=sum(len(x.response_token_ids) for x in (*sols[i], *metas[i]))))
    return Sampled(outcomes, n_skipped=len(problems) - len(kept), skipped_reason=why, longest_prompt=longest,
                   context=context, generation_s=gen_s)


def _meta_outcomes(p: Problem, sols, metas, correct: tuple[bool, ...], s: EvalSettings) -> tuple[MetaOutcome | None, ...]:
    parsed = [parse_meta(m.text, n_solution=s.n_solution, max_response_tokens=s.meta_max_tokens or s.max_tokens)
              for m in metas]
    rewards = notion_rewards([x.notions if isinstance(x, MetaPrediction) else None for x in parsed],
                             problem=p.problem, solution_texts=[smp.text for smp in sols],
                             solution_correct=list(correct))
    return tuple(MetaOutcome(x.pass_rate, x.solution_length, float(r)) if isinstance(x, MetaPrediction) else None
                 for x, r in zip(parsed, rewards, strict=True))


def evaluate(engine: Engine, problems: Sequence[Problem], s: EvalSettings, *, meta: bool = True) -> dict[str, Any]:
    """Sample, judge and score one benchmark; returns its figures and per-problem calibration rows.

    Problems whose prompt does not fit (`prompt_limit`) are skipped and counted (`n_skipped`,
    `skipped_reason`); only a benchmark where nothing fits fails, in one line.
    meta=False samples only the solution path (the rounds' held-out accuracy)."""
    sampled = sample_outcomes(engine, problems, s, meta=meta)
    if not sampled.outcomes:
        raise sampled.no_fit_error()
    return figures(sampled.outcomes, s, meta=meta, n_skipped=sampled.n_skipped,
                   skipped_reason=sampled.skipped_reason, generation_s=sampled.generation_s)


def figures(outcomes: Sequence[ProblemOutcome], s: EvalSettings, *, meta: bool, n_skipped: int = 0,
            skipped_reason: str | None = None, generation_s: float = 0.0) -> dict[str, Any]:
    """A benchmark's figures from its problems' outcomes, in problem order (the order fixes the float sums,
    so shards merged in order give the unsharded figures exactly)."""
    correct = torch.tensor([o.correct for o in outcomes], dtype=torch.bool).view(len(outcomes), s.k)
    c = correct.sum(1)
    samples = len(outcomes) * (s.k + (s.meta_samples if meta else 0))
    out = {
        "accuracy": float(avg_at_k(correct, torch.ones_like(correct))),
        "accuracy_stderr": _finite(accuracy_stderr(correct, torch.ones_like(correct))),
        "pass_at_k": {str(k): float(pass_at_k(torch.full_like(c, s.k), c, k).mean()) for k in _pass_ks(s.k)},
        "k": s.k, **({"meta_k": s.meta_samples} if meta else {}), "n_problems": len(outcomes), "n_skipped": n_skipped,
        "skipped_reason": skipped_reason if n_skipped else None,
        "tokens": int(sum(o.tokens for o in outcomes)),
        "generation_s": round(generation_s, 3), "samples_per_s": round(samples / max(generation_s, 1e-9), 3),
        # correct samples of each problem: the report measures the final checkpoints on the rounds'
        # held-out check problems with it (masa.steps.report.final_points)
        "correct_counts": {o.prompt_id: int(n) for o, n in zip(outcomes, c.tolist(), strict=True)},
    }
    out["spread"] = outcome_spread(c, s.k)  # how many problems give a group-normalised advantage a signal
    if meta:
        out["meta"], out["calibration"] = _meta_awareness(outcomes, s)
    return out


def _finite(x: torch.Tensor) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def constant_mae(observed: Sequence[float]) -> float | None:
    """The pass-rate MAE of the best prediction that ignores the problem: the one value (the median of the
    observed rates) put in place of every prediction. A reference, not a predictor: it is chosen knowing
    the outcomes. A meta path whose MAE is above it predicts worse than that constant, whatever its
    ratio to an untrained meta path's MAE (on a benchmark that the model mostly fails, always guessing 0
    already scores its accuracy)."""
    if not observed:
        return None
    m = statistics.median(observed)
    return sum(abs(x - m) for x in observed) / len(observed)


def _meta_awareness(outcomes: Sequence[ProblemOutcome], s: EvalSettings) -> tuple[dict, list]:
    errs, med_errs, in_range, notions, rows = [], [], [], [], []
    err_sums, err_counts = [], []  # per problem, for the MAE's standard error over problems
    pred_observed = []  # each parsed prediction's observed rate: the constant's MAE weighs problems as errs does
    n_meta = 0
    for o in outcomes:
        preds = [x for x in o.meta if x is not None]
        n_meta += len(o.meta)
        observed = sum(o.correct) / len(o.correct)
        ok_len = [n for n, ok in zip(o.lengths, o.correct, strict=True) if ok]
        err_sums.append(sum(abs(x.pass_rate / s.n_solution - observed) for x in preds))
        err_counts.append(len(preds))
        for x in preds:
            errs.append(abs(x.pass_rate / s.n_solution - observed))
            pred_observed.append(observed)
            in_range.append(bool(ok_len) and min(ok_len) <= x.solution_length <= max(ok_len))
            notions.append(x.notion)
        if preds:
            # the median is what gating acts on (masa.algo.gating); the per-sample error above also
            # charges the spread of the sampled predictions
            median = statistics.median(x.pass_rate for x in preds) / s.n_solution
            med_errs.append(abs(median - observed))
            rows.append({"prompt_id": o.prompt_id, "observed": observed,
                         "predicted": sum(x.pass_rate for x in preds) / len(preds) / s.n_solution,
                         "median": median})
    rho = float(spearman(torch.tensor([r["predicted"] for r in rows]), torch.tensor([r["observed"] for r in rows]))) \
        if len(rows) >= 2 else float("nan")

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    mae_se = _finite(clustered_mean_stderr(torch.tensor(err_sums, dtype=torch.float64), torch.tensor(err_counts)))
    meta = {"pass_rate_mae": mean(errs), "pass_rate_mae_stderr": mae_se, "pass_rate_mae_median": mean(med_errs),
            "pass_rate_mae_constant": constant_mae(pred_observed),
            "spearman": None if math.isnan(rho) else rho,
            "length_in_range": mean([float(b) for b in in_range]), "notion": mean(notions),
            "parse_rate": len(errs) / n_meta if n_meta else None}
    return meta, rows


def load_benchmark(src: str, s: EvalSettings) -> tuple[list[Problem], list]:
    """A benchmark's problems (the first `s.max_problems`) and its rejected rows; none usable is an error."""
    problems, rejected = load_problems(src, split="test")
    if s.max_problems:
        problems = problems[: s.max_problems]
    if not problems:
        raise DataError(f"benchmark {src}: no usable problem ({len(rejected)} rows rejected)")
    return problems, rejected


def run_benchmarks(model: str, sources: Sequence[str], s: EvalSettings, *, backend: str = "auto",
                   dtype: str = "auto", gpu_memory_utilization: float = 0.2, engine: Engine | None = None,
                   names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every benchmark in `sources` on one engine; figures keyed by `names` (default: `benchmark_name`)."""
    own = engine is None
    t0 = time.monotonic()
    if own:
        engine = make_engine(EngineConfig(model=model, backend=backend, dtype=dtype, seed=s.seed,
                                          gpu_memory_utilization=gpu_memory_utilization,
                                          max_model_len=s.max_prompt_tokens + s.max_tokens))
    results: dict[str, Any] = {}
    try:
        for src, name in zip(sources, names or [benchmark_name(x) for x in sources], strict=True):
            problems, rejected = load_benchmark(src, s)
            t = time.monotonic()
            results[name] = {**evaluate(engine, problems, s), "wall_s": round(time.monotonic() - t, 3),
                                            "source": src, "rejected_rows": len(rejected)}
    finally:
        if own:
            engine.close()
    return {"benchmarks": results, "wall_s": round(time.monotonic() - t0, 3)}


def heldout_accuracy(engine: Engine, problems: list[Problem], s: EvalSettings) -> dict[str, Any]:
    """Accuracy of the engine's policy on the held-out problems (`s`: the benchmark's sampling,
    `masa.runner.settings.heldout_eval_settings`)."""
    t0 = time.monotonic()
    r = evaluate(engine, problems, s, meta=False)
    # its seconds are work of the step (the report's timing counts them as compute, not overhead)
    return {"accuracy": r["accuracy"], "accuracy_stderr": r["accuracy_stderr"], "n_problems": r["n_problems"],
            "k": r["k"], "tokens": r["tokens"], "wall_s": round(time.monotonic() - t0, 3),
            "prompt_ids": list(r["correct_counts"])}
