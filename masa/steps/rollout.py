"""The rollout step (and, for `resources.rollout_shards` > 1, the merge of its shards): one round's
solution and meta samples from the policy, with MASA's gating and cutoff (`masa.runner.rollout`), and the
policy's held-out accuracy on the same engine."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from masa.config import RunConfig
from masa.engines import make_engine
from masa.runner.evaluate import heldout_accuracy
from masa.runner.layout import (
    STATS_FILE,
    Pointer,
    digest,
    local_model,
    local_path_or_fetch,
    manifest_digest,
    read_history,
    read_pointer,
    run_layout,
    run_once,
    write_pointer,
)
from masa.runner.prompts import read_problems, round_prompts
from masa.runner.rollout import run_rollout_step
from masa.runner.settings import (
    algorithm_for,
    engine_config,
    heldout_eval_settings,
    rollout_model_len,
    sampling_settings,
)
from masa.runner.shards import ShardEngine, keep_own_rows, merge_stats, shard_prompt_ids


def gate_evidence(history: list[dict[str, Any]]) -> tuple[list[float], list[tuple[int, int]],
                                                        list[tuple[int, int, int, int]]]:
    """The gating switch's evidence from the score steps' history records (oldest first): each round's MAE
    of the median prediction (gating acts on the median), its (hits, candidates) (of the rolled-out prompts
    it would have skipped, how many gave no signal) and its (mixed candidates, mixed, candidates, gated) (of
    the rolled-out mixed groups, how many it skipped or would skip: `masa.algo.gating.signal_loss`).
    Rounds without meta predictions (GRPO), or scored before a count existed, add nothing to that list."""
    maes = [h["meta_pass_rate_mae_median"] for h in history if h.get("meta_pass_rate_mae_median") is not None]
    gates = [(h["meta_gate_hits"], h["meta_gate_candidates"]) for h in history
             if h.get("meta_gate_candidates") is not None]
    signal = [(h["meta_gate_mixed"], h["meta_mixed"], h["meta_gate_candidates"], h.get("gated_prompts") or 0)
              for h in history if h.get("meta_mixed") is not None]
    return maes, gates, signal


def cut_evidence(history: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Early cutoff's switch evidence from the score steps' history records (oldest first): each round's
    (passing solutions its budgets would have cut, passing solutions) on the prompts it did not act on
    (`masa.algo.cutoff.cut_evidence`). Rounds scored without it (GRPO, or before the count existed) add
    nothing."""
    return [(h["cutoff_would_cut"], h["cutoff_passing"]) for h in history if h.get("cutoff_passing") is not None]


def rollout_step(cfg: RunConfig, *, branch: str, round_idx: int, prompts_path: str, policy_ptr: str,
                 history_path: str | None, out_ptr: str, heldout_path: str | None = None,
                 shard: int = 0) -> dict[str, Any]:
    """Roll out the round's prompts; also measure the policy's held-out accuracy (the report's
    accuracy-per-round curve) with the benchmark's sampling settings, on the same engine. With
    `resources.rollout_shards` > 1, only shard `shard`'s prompts (`masa.runner.shards`; shard 0
    alone measures the held-out accuracy)."""
    layout, ptr, shards = run_layout(cfg), read_pointer(policy_ptr), cfg.resources.rollout_shards
    prefix = layout.part(branch, round_idx, "rollouts" if shards == 1 else f"rollouts-shard-{shard}")
    problems = round_prompts(prompts_path, round_idx, cfg.prompts_per_round, cfg.seed)
    history = read_history(history_path)
    (maes, gates, signal), cuts = gate_evidence(history), cut_evidence(history)
    algo = algorithm_for(cfg, branch)
    settings = sampling_settings(cfg)
    fp = digest(manifest_digest(ptr), [p.prompt_id for p in problems], dataclasses.asdict(algo),
                 dataclasses.asdict(settings), round_idx, cfg.seed, maes, gates, signal, shard, shards, cuts)

    heldout = read_problems(heldout_path) if heldout_path and shard == 0 and cfg.data.checks(round_idx) else []
    all_ids = [p.prompt_id for p in problems]
    own = shard_prompt_ids(all_ids, shard, shards)

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-rollout-") as tmp:
            # the engine starts (imports its backend) while the policy is fetched or handed over
            engine = make_engine(engine_config(cfg, "rollout", ptr.prefix, rollout_model_len(cfg)),
                                 fetch=lambda: local_model(ptr, tmp))
            model_dir = engine.model_dir
            gen = engine if shards == 1 else ShardEngine(engine, own, all_ids, seed=cfg.seed, round_index=round_idx,
                                                         all_meta=algo.efficient)
            try:
                stats = dataclasses.asdict(run_rollout_step(
                    problems, str(model_dir), work, algorithm=algo, settings=settings, round_index=round_idx,
                    seed=cfg.seed, mae_history=maes, gate_history=gates, signal_history=signal,
                    cut_history=cuts, engine=gen))
                if shards > 1:
                    stats = keep_own_rows(work / "rollouts.parquet", own, stats)
                stats["startup_s"] = engine.startup_s
                if heldout:
                    stats["heldout"] = heldout_accuracy(engine, heldout, heldout_eval_settings(cfg))
            finally:
                engine.close()
        return stats

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, Pointer(store=cfg.store, prefix=prefix, kind="rollouts", shard=shard))
    return stats


def merge_rollouts_step(cfg: RunConfig, *, branch: str, round_idx: int, shard_ptrs: list[str],
                        out_ptr: str) -> dict[str, Any]:
    """One round's rollout shard from its `rollout_shards` parts, in shard (= prompt) order."""
    ptrs = sorted((read_pointer(p) for p in shard_ptrs), key=lambda p: p.shard)
    if [p.shard for p in ptrs] != list(range(cfg.resources.rollout_shards)):
        raise ValueError(f"{branch} round {round_idx + 1}: got shards {[p.shard for p in ptrs]}, "
                         f"expected 0..{cfg.resources.rollout_shards - 1}")
    prefix = run_layout(cfg).part(branch, round_idx, "rollouts")
    fp = digest([manifest_digest(p) for p in ptrs])

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-merge-") as tmp:
            parts = [local_path_or_fetch(p.store, p.prefix, tmp) for p in ptrs]
            table = pa.concat_tables([pq.read_table(d / "rollouts.parquet") for d in parts])
            pq.write_table(table, work / "rollouts.parquet")
            return merge_stats([json.loads((d / STATS_FILE).read_text()) for d in parts])

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, Pointer(store=cfg.store, prefix=prefix, kind="rollouts"))
    return stats
