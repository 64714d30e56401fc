"""The rollout step: sample solution (and meta) paths for a batch of prompts; write a rollout shard.

    grpo            G solution samples per prompt.
    masa            G_meta meta + G solution samples per prompt, in ONE engine call.
    masa-efficient  meta samples first; their parsed predictions decide, per prompt, whether the solution
                    samples run at all (predictive gating, `masa.algo.gating`) and with which token budget
                    (early cutoff, `masa.algo.cutoff`); then the solution samples of the kept prompts.

How this differs from vanilla GRPO rollouts: the meta path, the gating/cutoff decisions, and a finish reason
`cutoff` for samples stopped by their prompt's budget. How it differs from the paper's code (akatigre/
MASA-RL): that trainer rolls out both paths every step (no gating/cutoff path; see masa.algo.gating);
prompts longer than the limit are dropped and counted here (never truncated), and every request's seed is a
pure function of (run seed, round, prompt id, path), so a rerun of a step reproduces its shard.

Output: one row per sample, schema in docs/rollout-shard.md (`SHARD_SCHEMA`), plus `RolloutStats`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from masa.algo.config import AlgorithmConfig
from masa.algo.cutoff import cutoff_active, cutoff_budget
from masa.algo.gating import gating_active, gating_decision, round_generator
from masa.algo.meta import MetaFields, MetaPrediction, parse_meta, parse_meta_fields, render_meta_prompt
from masa.algo.prompts import feedin_hint, solution_prompt, with_hint
from masa.data.records import Problem, load_problems, rows_to_problems
from masa.engines import EngineConfig, make_engine
from masa.engines.base import Engine, GenerationRequest, Sample, SamplingSpec
from masa.runner.settings import SamplingSettings
from masa.schemas import ROLLOUT_SCHEMA


@dataclass
class RolloutStats:
    prompts: int = 0  # prompts in the input batch
    prompts_dropped_for_length: int = 0
    gating_active: bool = False
    cutoff_active: bool = False
    gated_prompts: int = 0
    samples: int = 0
    meta_samples: int = 0
    solution_samples: int = 0
    meta_parse_failures: int = 0
    cutoff_samples: int = 0
    tokens: int = 0  # response tokens over all samples
    engine_startup_s: float = 0.0
    wall_s: float = 0.0  # the step's own time, engine start-up excluded
    generate_s: float = 0.0  # of which inside engine.generate (the rest is the step's own overhead)
    samples_per_s: float = 0.0
    tokens_per_s: float = 0.0
    engine_calls: int = 0


@dataclass(frozen=True)
class _Prompt:
    group_id: int
    problem: Problem
    solution_ids: tuple[int, ...]
    meta_ids: tuple[int, ...] | None


@dataclass
class RolloutResult:
    rows: list[dict[str, Any]]
    stats: RolloutStats
    skip: list[bool] = field(default_factory=list)  # per kept prompt: gated (masa-efficient)
    budgets: list[int] = field(default_factory=list)  # per kept prompt: solution max_tokens


def request_seed(seed: int, round_index: int, prompt_id: str, path: str) -> int:
    """Seed of one (round, prompt, path) request; sample i of it uses seed + i (vLLM's convention)."""
    digest = hashlib.sha256(f"{seed}/{round_index}/{prompt_id}/{path}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 2  # < 2**30, so seed + i stays a valid int32


def context_len(engine) -> int | None:
    """Prompt + response tokens the engine serves: its `max_model_len` (the requested one capped by the
    model's positions, `masa.engines.vllm_engine.fitted_max_model_len`), else its config's; None if unknown."""
    served = getattr(engine, "max_model_len", None)
    return served if served is not None else getattr(getattr(engine, "config", None), "max_model_len", None)


def chat_ids(tokenizer, user_text: str) -> tuple[int, ...]:
    """The model's chat template applied to one user turn, with the generation prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    return tuple(int(i) for i in ids)


def prepare_prompts(problems: Sequence[Problem], tokenizer, *, uses_meta: bool, n_solution: int,
                    settings: SamplingSettings) -> tuple[list[_Prompt], int]:
    """Tokenise each problem's solution (and meta) prompt; drop, and count, the ones over the limit."""
    kept, dropped = [], 0
    for gid, p in enumerate(problems):
        text = solution_prompt(p.problem, settings.solution_instruction)
        sol = chat_ids(tokenizer, text)
        meta = None
        if uses_meta:  # the meta prompt shows the problem as the solution path sees it (released code)
            meta = chat_ids(tokenizer, render_meta_prompt(text, n_solution=n_solution,
                                                          max_response_tokens=settings.max_response_tokens))
        if max(len(sol), len(meta or ())) > settings.max_prompt_tokens:
            dropped += 1
            continue
        kept.append(_Prompt(gid, p, sol, meta))
    return kept, dropped


def _hinted(p: _Prompt, metas: Sequence[Sample], tokenizer, settings: SamplingSettings, *,
            n_solution: int) -> _Prompt:
    """`p` with the feed-in hint of its first meta sample that has notions or a length appended to the
    solution prompt (the released trainer draws one at random per solution sample; one per prompt here
    keeps a prompt's G samples one request). Unchanged when no meta sample has either."""
    for s in metas:
        f = parse_meta_fields(s.text, n_solution=n_solution, max_response_tokens=settings.max_response_tokens)
        hint = feedin_hint(f.notions, f.solution_length) if isinstance(f, MetaFields) else ""
        if hint:
            text = with_hint(solution_prompt(p.problem.problem, settings.solution_instruction), hint)
            return dataclasses.replace(p, solution_ids=chat_ids(tokenizer, text))
    return p


def _spec(settings: SamplingSettings, *, n: int, seed: int, budget: int | None = None) -> SamplingSpec:
    return SamplingSpec(n=n, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                        max_tokens=settings.max_response_tokens, budget=budget, seed=seed)


def _requests(prompts: Sequence[_Prompt], path: str, n: int, settings: SamplingSettings, *, seed: int,
              round_index: int, budgets: Sequence[int | None] | None = None) -> list[GenerationRequest]:
    budgets = budgets or [None] * len(prompts)
    return [GenerationRequest(p.meta_ids if path == "meta" else p.solution_ids,
                              _spec(settings, n=n, seed=request_seed(seed, round_index, p.problem.prompt_id, path),
                                    budget=b))
            for p, b in zip(prompts, budgets, strict=True)]


def parse_group(samples: Sequence[Sample], *, n_solution: int, max_response_tokens: int) -> list:
    return [parse_meta(s.text, n_solution=n_solution, max_response_tokens=max_response_tokens) for s in samples]


def prediction_tensors(parsed: Sequence[Sequence[object]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pass_rate [B, Gm] long, solution_length [B, Gm] long, valid [B, Gm] bool) from parsed meta groups."""
    ok = [[isinstance(m, MetaPrediction) for m in g] for g in parsed]
    rate = [[m.pass_rate if isinstance(m, MetaPrediction) else 0 for m in g] for g in parsed]
    length = [[m.solution_length if isinstance(m, MetaPrediction) else 0 for m in g] for g in parsed]
    return torch.tensor(rate, dtype=torch.long), torch.tensor(length, dtype=torch.long), torch.tensor(ok)


def decide(parsed: Sequence[Sequence[object]], algorithm: AlgorithmConfig, *, max_response_tokens: int,
           mae_history: Sequence[float], seed: int, round_index: int,
           gate_history: Sequence[tuple[int, int]] = (),
           signal_history: Sequence[tuple[int, int, int, int]] = (),
           cut_history: Sequence[tuple[int, int]] = ()) -> tuple[list[bool], list[int], bool, bool]:
    """MASA-efficient's per-prompt decisions from the meta groups: (skip, solution budget, gating active,
    cutoff active).

    Thin glue over the pure `gating_decision`, `cutoff_active` and `cutoff_budget`; exploration is seeded
    per round. While cutoff's switch is off every budget is the response cap.
    """
    g = algorithm.gating
    rate, length, valid = prediction_tensors(parsed)
    skip = torch.zeros(len(parsed), dtype=torch.bool)
    active = False
    if g.enabled and len(parsed):
        switch = dict(min_rounds=g.min_rounds, window=g.window, mae_threshold=g.mae_threshold,
                      precision_history=gate_history, min_precision=g.min_precision,
                      signal_history=signal_history, max_signal_loss=g.max_signal_loss)
        active = gating_active(mae_history, **switch)
        low, high = g.bounds(algorithm.n_solution)
        skip, _, _ = gating_decision(rate, valid, mae_history, n_solution=algorithm.n_solution, low=low, high=high,
                                     explore_share=g.explore_share, generator=round_generator(seed, round_index),
                                     **switch)
    budget = torch.full((len(parsed),), max_response_tokens, dtype=torch.long)
    c = algorithm.cutoff
    cut_on = bool(c.enabled and len(parsed)
                  and cutoff_active(cut_history, window=c.window, max_cut_passing=c.max_cut_passing))
    if cut_on:
        budget = cutoff_budget(length, valid, multiplier=c.multiplier, min_tokens=min(c.min_tokens,
                               max_response_tokens), max_tokens=max_response_tokens)
    return skip.tolist(), budget.tolist(), active, cut_on


def _row(p: _Prompt, s: Sample, *, path: str, idx: int, round_index: int, algorithm: str, gated: bool,
         max_tokens: int, meta: object = None) -> dict[str, Any]:
    pred = meta if isinstance(meta, MetaPrediction) else None
    return {
        "prompt_id": p.problem.prompt_id, "group_id": p.group_id, "path": path, "sample_idx": idx,
        "round": round_index, "algorithm": algorithm, "problem": p.problem.problem, "answer": p.problem.answer,
        "prompt_token_ids": list(s.prompt_token_ids), "response_token_ids": list(s.response_token_ids),
        "logprobs": list(s.logprobs), "text": s.text, "finish_reason": s.finish_reason,
        "meta_pass_rate": pred.pass_rate if pred else None,
        "meta_solution_length": pred.solution_length if pred else None,
        "meta_notions": list(pred.notions) if pred else None,
        "meta_parse_error": getattr(meta, "reason", None) if path == "meta" else None,
        "gated": gated, "max_tokens": max_tokens,
    }


def _rows(prompts, meta_out, meta_parsed, sol_out, skip, budgets, *, round_index, algorithm) -> list[dict]:
    """Shard rows: per prompt its meta rows then its solution rows (none when gated)."""
    rows: list[dict[str, Any]] = []
    sol_iter = iter(sol_out)
    for i, p in enumerate(prompts):
        common = dict(round_index=round_index, algorithm=algorithm, gated=skip[i], max_tokens=budgets[i])
        for j, s in enumerate(meta_out[i] if meta_out else ()):
            rows.append(_row(p, s, path="meta", idx=j, meta=meta_parsed[i][j], **common))
        if not skip[i]:
            rows.extend(_row(p, s, path="solution", idx=j, **common) for j, s in enumerate(next(sol_iter)))
    return rows


class _TimedEngine:
    """Counts the calls and the seconds spent in `engine.generate` (for the step's stats)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.calls, self.seconds = engine, 0, 0.0

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        t0 = time.perf_counter()
        out = self.engine.generate(requests)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def rollout(problems: Sequence[Problem], engine: Engine, *, algorithm: AlgorithmConfig,
            settings: SamplingSettings, round_index: int = 0, seed: int = 0,
            mae_history: Sequence[float] = (), gate_history: Sequence[tuple[int, int]] = (),
            signal_history: Sequence[tuple[int, int, int, int]] = (),
            cut_history: Sequence[tuple[int, int]] = ()) -> RolloutResult:
    """Run the rollout of one batch with a started `engine` (see the module docstring)."""
    t0 = time.perf_counter()
    stats = RolloutStats(prompts=len(problems), engine_startup_s=float(getattr(engine, "startup_s", 0.0)))
    max_len = context_len(engine)
    if max_len is not None and settings.max_prompt_tokens + settings.max_response_tokens > max_len:
        # one line before any prompt reaches the engine (vLLM would fail mid-batch with its traceback)
        raise ValueError(f"max_prompt_tokens ({settings.max_prompt_tokens}) + max_response_tokens "
                         f"({settings.max_response_tokens}) exceeds the model's context of {max_len} tokens")
    prompts, stats.prompts_dropped_for_length = prepare_prompts(
        problems, engine.tokenizer, uses_meta=algorithm.uses_meta, n_solution=algorithm.n_solution,
        settings=settings)
    G, Gm, T = algorithm.n_solution, algorithm.n_meta, settings.max_response_tokens
    gen = _TimedEngine(engine)
    ids = dict(seed=seed, round_index=round_index)
    skip, budgets = [False] * len(prompts), [T] * len(prompts)
    meta_out: list[list[Sample]] = []
    if algorithm.uses_meta and algorithm.meta_feedin:  # meta first; its predictions reach the solution prompts
        meta_out = gen.generate(_requests(prompts, "meta", Gm, settings, **ids))
        if algorithm.efficient:
            skip, budgets, stats.gating_active, stats.cutoff_active = decide(
                [parse_group(g, n_solution=G, max_response_tokens=T) for g in meta_out], algorithm,
                max_response_tokens=T, mae_history=mae_history, gate_history=gate_history,
                signal_history=signal_history, cut_history=cut_history, **ids)
        hinted = [_hinted(p, g, engine.tokenizer, settings, n_solution=G) for p, g in zip(prompts, meta_out, strict=True)]
        kept = [(p, b) for p, b, s in zip(hinted, budgets, skip, strict=True) if not s]
        sol_out = gen.generate(_requests([p for p, _ in kept], "solution", G, settings, **ids,
                                         budgets=[b for _, b in kept])) if kept else []
    elif algorithm.name == "masa":  # both paths in one engine call
        out = gen.generate(_requests(prompts, "meta", Gm, settings, **ids)
                              + _requests(prompts, "solution", G, settings, **ids))
        meta_out, sol_out = out[: len(prompts)], out[len(prompts):]
    else:
        if algorithm.efficient:
            meta_out = gen.generate(_requests(prompts, "meta", Gm, settings, **ids))
            skip, budgets, stats.gating_active, stats.cutoff_active = decide(
                [parse_group(g, n_solution=G, max_response_tokens=T) for g in meta_out], algorithm,
                max_response_tokens=T, mae_history=mae_history, gate_history=gate_history,
                signal_history=signal_history, cut_history=cut_history, **ids)
        kept = [(p, b) for p, b, s in zip(prompts, budgets, skip, strict=True) if not s]
        sol_out = gen.generate(_requests([p for p, _ in kept], "solution", G, settings, **ids,
                                            budgets=[b for _, b in kept])) if kept else []
    meta_parsed = [parse_group(g, n_solution=G, max_response_tokens=T) for g in meta_out]
    rows = _rows(prompts, meta_out, meta_parsed, sol_out, skip, budgets, round_index=round_index,
                 algorithm=algorithm.name)
    stats.engine_calls, stats.generate_s = gen.calls, gen.seconds
    _fill_stats(stats, rows, skip, time.perf_counter() - t0)
    return RolloutResult(rows, stats, skip, budgets)


def _fill_stats(stats: RolloutStats, rows: Sequence[dict], skip: Sequence[bool], wall_s: float) -> None:
    stats.gated_prompts = sum(skip)
    stats.samples = len(rows)
    stats.meta_samples = sum(r["path"] == "meta" for r in rows)
    stats.solution_samples = stats.samples - stats.meta_samples
    stats.meta_parse_failures = sum(r["meta_parse_error"] is not None for r in rows)
    stats.cutoff_samples = sum(r["finish_reason"] == "cutoff" for r in rows)
    stats.tokens = sum(len(r["response_token_ids"]) for r in rows)
    stats.wall_s = wall_s
    stats.samples_per_s = stats.samples / wall_s if wall_s > 0 else 0.0
    stats.tokens_per_s = stats.tokens / wall_s if wall_s > 0 else 0.0


# ------------------------------------------------------------------ shard and step entry point


def shard_schema() -> pa.Schema:
    """The rollout shard's Arrow schema (`masa.schemas.ROLLOUT_SCHEMA`, docs/rollout-shard.md)."""
    return ROLLOUT_SCHEMA


def write_shard(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as a parquet rollout shard atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(list(rows), schema=shard_schema()), tmp)
    os.replace(tmp, path)
    return path


def load_batch(prompts: str | Path | Sequence[Problem] | Sequence[dict[str, Any]]) -> list[Problem]:
    """Problems from a verl-layout parquet/JSONL path, Problem records, or raw verl/flat row dicts.

    Rows that cannot become a problem fail the step with their reasons (the data step filtered them).
    """
    if isinstance(prompts, (str, Path)):
        problems, rejected = load_problems(str(prompts))
    elif all(isinstance(p, Problem) for p in prompts):
        return list(prompts)  # type: ignore[arg-type]
    else:
        problems, rejected = rows_to_problems(prompts, source="records")  # type: ignore[arg-type]
    if rejected:
        shown = "; ".join(f"row {r.index}: {r.reason} ({r.detail})" for r in rejected[:5])
        raise ValueError(f"{len(rejected)} prompt rows are not problems: {shown}")
    return problems


def run_rollout_step(prompts: str | Path | Sequence[Any], model: str, out_dir: str | Path, *,
                     algorithm: AlgorithmConfig, settings: SamplingSettings, round_index: int = 0, seed: int = 0,
                     mae_history: Sequence[float] = (), gate_history: Sequence[tuple[int, int]] = (),
                     signal_history: Sequence[tuple[int, int, int, int]] = (),
                     cut_history: Sequence[tuple[int, int]] = (), backend: str = "auto", dtype: str = "auto",
                     gpu_memory_utilization: float = 0.2, engine: Engine | None = None,
                     engine_config: EngineConfig | None = None) -> RolloutStats:
    """The pipeline step: load prompts and policy, roll out, write `rollouts.parquet` + `rollout_stats.json`.

    Pass a started `engine` to reuse it across rounds (its weights are then replaced from `model`
    in place); otherwise one is started (and closed) here, from `engine_config` when given (the step's,
    `masa.runner.settings.engine_config`) else from backend/dtype, and its start-up time is in the stats.
    """
    problems = load_batch(prompts)
    own = engine is None
    if own:
        engine = make_engine(engine_config or EngineConfig(
            model=model, backend=backend, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=settings.max_prompt_tokens + settings.max_response_tokens))
    reload_s = 0.0
    if not own and Path(str(engine.model_dir)) != Path(model):
        t0 = time.perf_counter()
        engine.load_weights(model)
        reload_s = time.perf_counter() - t0
    try:
        result = rollout(problems, engine, algorithm=algorithm, settings=settings, round_index=round_index,
                         seed=seed, mae_history=mae_history, gate_history=gate_history,
                         signal_history=signal_history, cut_history=cut_history)
    finally:
        if own:
            engine.close()
    if not own:  # a reused engine started earlier; this step only paid the weight reload
        result.stats.engine_startup_s = reload_s
    out = Path(out_dir)
    write_shard(result.rows, out / "rollouts.parquet")
    (out / "rollout_stats.json").write_text(json.dumps(asdict(result.stats), indent=2, sort_keys=True))
    return result.stats
