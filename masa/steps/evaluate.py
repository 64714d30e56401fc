"""The benchmark step: avg@k, pass@k and meta-awareness of one checkpoint on math benchmarks.

For each problem we sample k solutions and k meta predictions (the same meta prompt the policy is
trained on, so a GRPO model is asked it too), judge the solutions with the project's verifier, and
compare the predictions with what the solutions did: pass-rate mean absolute error (predicted k'/G
against observed c/k, per parsed meta sample), Spearman correlation over problems of the mean
predicted and the observed pass rate, the share of predicted lengths within the correct samples'
length range, and the notion reward. Benchmarks are verl-layout parquet, JSONL or Hugging Face ids
(`masa.data.records`): a new benchmark in the verl layout runs with no code change.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from masa.algo.evaluation import avg_at_k, pass_at_k, spearman
from masa.algo.meta import MetaPrediction, parse_meta, render_meta_prompt
from masa.algo.rewards import notion_rewards
from masa.algo.verifier import verify_batch
from masa.data.records import DataError, Problem, load_problems
from masa.engines import Engine, GenerationRequest, SamplingSpec
from masa.steps.rollout import chat_ids, request_seed


@dataclass(frozen=True)
class EvalSettings:
    k: int = 4
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 512
    max_problems: int | None = None
    n_solution: int = 8  # G of the meta prompt (the range of predicted pass rates)
    max_prompt_tokens: int = 1024
    seed: int = 0
    verifier_timeout_s: float = 5.0


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


def evaluate(engine: Engine, problems: Sequence[Problem], s: EvalSettings, *, meta: bool = True) -> dict[str, Any]:
    """Sample, judge and score one benchmark; returns its figures and per-problem calibration rows.

    meta=False samples only the solution path (the rounds' held-out accuracy)."""
    tok = engine.tokenizer
    kept, reqs = [], []
    for p in problems:
        sol = chat_ids(tok, p.problem)
        meta_ids = chat_ids(tok, render_meta_prompt(p.problem, n_solution=s.n_solution,
                                                    max_response_tokens=s.max_tokens))
        if max(len(sol), len(meta_ids)) > s.max_prompt_tokens:
            continue
        kept.append(p)
        for path, ids in (("solution", sol), ("meta", meta_ids))[: 2 if meta else 1]:
            reqs.append(GenerationRequest(ids, SamplingSpec(n=s.k, temperature=s.temperature, top_p=s.top_p,
                                                            max_tokens=s.max_tokens,
                                                            seed=request_seed(s.seed, 0, p.prompt_id, f"eval-{path}"))))
    if not kept:
        raise DataError("no benchmark problem fits the prompt-token limit")
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
        "pass_at_k": {str(k): float(pass_at_k(torch.full_like(c, s.k), c, k).mean()) for k in _pass_ks(s.k)},
        "k": s.k, "n_problems": len(kept), "n_dropped_too_long": len(problems) - len(kept),
        "tokens": int(sum(len(smp.response_token_ids) for g in out for smp in g)),
        "generation_s": round(gen_s, 3), "samples_per_s": round(len(out) * s.k / max(gen_s, 1e-9), 3),
    }
    if meta:
        figures["meta"], figures["calibration"] = _meta_awareness(kept, sols, metas, correct, lengths, s)
    return figures


def _meta_awareness(problems, sols, metas, correct, lengths, s: EvalSettings) -> tuple[dict, list]:
    errs, med_errs, in_range, notions, rows = [], [], [], [], []
    n_meta = 0
    for i, p in enumerate(problems):
        parsed = [parse_meta(m.text, n_solution=s.n_solution, max_response_tokens=s.max_tokens) for m in metas[i]]
        preds = [x for x in parsed if isinstance(x, MetaPrediction)]
        n_meta += len(parsed)
        observed = float(correct[i].float().mean())
        ok_len = lengths[i][correct[i]]
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

    meta = {"pass_rate_mae": mean(errs), "pass_rate_mae_median": mean(med_errs), "spearman": None if math.isnan(rho) else rho,
            "length_in_range": mean([float(b) for b in in_range]), "notion": mean(notions),
            "parse_rate": len(errs) / n_meta if n_meta else None}
    return meta, rows


def run_benchmarks(model: str, sources: Sequence[str], s: EvalSettings, *, backend: str = "auto",
                   dtype: str = "auto", gpu_memory_utilization: float = 0.2, engine: Engine | None = None,
                   names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every benchmark in `sources` on one engine; figures keyed by `names` (default: `benchmark_name`)."""
    from masa.engines import EngineConfig, make_engine

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


def benchmark_step(cfg, *, name: str, model_ptr: str, out_path: str) -> dict[str, Any]:
    """Pipeline step: benchmark the checkpoint behind `model_ptr`; write results JSON to `out_path`."""
    from masa.engines import make_engine
    from masa.steps.layout import read_pointer
    from masa.steps.rounds import local_model, step_engine_config, toy_source

    ptr = read_pointer(model_ptr)
    model_dir = local_model(ptr, Path(out_path).parent)
    b = cfg.benchmark
    sources = [toy_source(cfg, model_dir) if d == "toy" else d for d in b.datasets]
    names = [d if d == "toy" else benchmark_name(d) for d in b.datasets]
    s = EvalSettings(k=b.k, temperature=b.temperature, top_p=b.top_p, max_tokens=b.max_tokens,
                     max_problems=b.max_problems, n_solution=cfg.algorithm.n_solution,
                     max_prompt_tokens=cfg.data.max_prompt_tokens, seed=cfg.seed)
    # the step's GPUs as engine_parallelism splits them (tensor parallel size x replicas)
    engine = make_engine(step_engine_config(cfg, "benchmark", model_dir, s.max_prompt_tokens + s.max_tokens))
    try:
        result = run_benchmarks(str(model_dir), sources, s, engine=engine, names=names)
    finally:
        engine.close()
    result.update(checkpoint=name, uri=ptr.get("uri") or f"{ptr['store']}/{ptr['prefix']}")
    Path(out_path).write_text(json.dumps(result, indent=1))
    first = next(iter(result["benchmarks"].values()))
    return {"accuracy": first["accuracy"], "wall_s": result["wall_s"], "results": result,
            **{f"{n}.accuracy": r["accuracy"] for n, r in result["benchmarks"].items()}}
