"""The benchmark step: avg@k, pass@k and meta-awareness of one checkpoint on math benchmarks.

For each problem we sample k solutions and k meta predictions (the same meta prompt the policy is
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

import math
import statistics
import time
from collections.abc import Sequence
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


def evaluate(engine: Engine, problems: Sequence[Problem], s: EvalSettings, *, meta: bool = True) -> dict[str, Any]:
    """Sample, judge and score one benchmark; returns its figures and per-problem calibration rows.

    Problems whose prompt does not fit (`prompt_limit`) are skipped and counted (`n_skipped`,
    `skipped_reason`); only a benchmark where nothing fits fails, in one line.
    meta=False samples only the solution path (the rounds' held-out accuracy)."""
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
        for path, ids in (("solution", sol), ("meta", meta_ids))[: 2 if meta else 1]:
            reqs.append(GenerationRequest(ids, SamplingSpec(n=s.k, temperature=s.temperature, top_p=s.top_p,
                                                            max_tokens=room,
                                                            seed=request_seed(s.seed, 0, p.prompt_id, f"eval-{path}"))))
    if not kept:
        raise DataError(f"no benchmark problem fits: all {len(problems)} have a {why}; the longest prompt has "
                        f"{longest} tokens, the model's context is {context if context is not None else 'unknown'}")
    t0 = time.monotonic()
    out = engine.generate(reqs)
    gen_s = time.monotonic() - t0
    sols, metas = (out[0::2], out[1::2]) if meta else (out, [])
    verdicts = verify_batch([(smp.text, p.answer) for p, g in zip(kept, sols, strict=True) for smp in g],
                            timeout_s=s.verifier_timeout_s)
    correct = torch.tensor([v.correct for v in verdicts], dtype=torch.bool).view(len(kept), s.k)
    lengths = torch.tensor([len(smp.response_token_ids) for g in sols for smp in g]).view(len(kept), s.k)
    c = correct.sum(1)
    figures = {
        "accuracy": float(avg_at_k(correct, torch.ones_like(correct))),
        "accuracy_stderr": _finite(accuracy_stderr(correct, torch.ones_like(correct))),
        "pass_at_k": {str(k): float(pass_at_k(torch.full_like(c, s.k), c, k).mean()) for k in _pass_ks(s.k)},
        "k": s.k, "n_problems": len(kept), "n_skipped": len(problems) - len(kept),
        "skipped_reason": why if len(kept) < len(problems) else None,
        "tokens": int(sum(len(smp.response_token_ids) for g in out for smp in g)),
        "generation_s": round(gen_s, 3), "samples_per_s": round(len(out) * s.k / max(gen_s, 1e-9), 3),
    }
    figures["spread"] = outcome_spread(c, s.k)  # how many problems give a group-normalised advantage a signal
    if meta:
        figures["meta"], figures["calibration"] = _meta_awareness(kept, sols, metas, correct, lengths, s)
    return figures


def _finite(x: torch.Tensor) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _meta_awareness(problems, sols, metas, correct, lengths, s: EvalSettings) -> tuple[dict, list]:
    errs, med_errs, in_range, notions, rows = [], [], [], [], []
    err_sums, err_counts = [], []  # per problem, for the MAE's standard error over problems
    n_meta = 0
    for i, p in enumerate(problems):
        parsed = [parse_meta(m.text, n_solution=s.n_solution, max_response_tokens=s.meta_max_tokens or s.max_tokens)
                  for m in metas[i]]
        preds = [x for x in parsed if isinstance(x, MetaPrediction)]
        n_meta += len(parsed)
        observed = float(correct[i].float().mean())
        ok_len = lengths[i][correct[i]]
        err_sums.append(sum(abs(x.pass_rate / s.n_solution - observed) for x in preds))
        err_counts.append(len(preds))
        for x in preds:
            errs.append(abs(x.pass_rate / s.n_solution - observed))
            in_range.append(bool(len(ok_len)) and int(ok_len.min()) <= x.solution_length <= int(ok_len.max()))
        r = notion_rewards([x.notions if isinstance(x, MetaPrediction) else None for x in parsed], problem=p.problem,
                           solution_texts=[smp.text for smp in sols[i]], solution_correct=correct[i].tolist())
        notions.extend(float(v) for v, x in zip(r, parsed, strict=True) if isinstance(x, MetaPrediction))
        if preds:
            # the median is what gating acts on (masa.algo.gating); the per-sample error above also
            # charges the spread of the sampled predictions
            median = statistics.median(x.pass_rate for x in preds) / s.n_solution
            med_errs.append(abs(median - observed))
            rows.append({"prompt_id": p.prompt_id, "observed": observed,
                         "predicted": sum(x.pass_rate for x in preds) / len(preds) / s.n_solution,
                         "median": median})
    rho = float(spearman(torch.tensor([r["predicted"] for r in rows]), torch.tensor([r["observed"] for r in rows]))) \
        if len(rows) >= 2 else float("nan")

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    mae_se = _finite(clustered_mean_stderr(torch.tensor(err_sums, dtype=torch.float64), torch.tensor(err_counts)))
    meta = {"pass_rate_mae": mean(errs), "pass_rate_mae_stderr": mae_se, "pass_rate_mae_median": mean(med_errs),
            "spearman": None if math.isnan(rho) else rho,
            "length_in_range": mean([float(b) for b in in_range]), "notion": mean(notions),
            "parse_rate": len(errs) / n_meta if n_meta else None}
    return meta, rows


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
            problems, rejected = load_problems(src, split="test")
            if s.max_problems:
                problems = problems[: s.max_problems]
            if not problems:
                raise DataError(f"benchmark {src}: no usable problem ({len(rejected)} rows rejected)")
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
            "k": r["k"], "tokens": r["tokens"], "generation_s": r["generation_s"],
            "wall_s": round(time.monotonic() - t0, 3)}
