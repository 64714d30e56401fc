"""The score step: verify the round's solutions, score the meta predictions against them and compute
both paths' advantages and the expert targets (`masa.runner.scoring` over `masa.algo.scoring`); append the
round to the score history. Needs the policy's tokenizer only, and neither vLLM nor DeepSpeed."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.runner.layout import (
    HISTORY,
    Pointer,
    digest,
    local_path_or_fetch,
    manifest_digest,
    policy_tokenizer,
    read_history,
    read_pointer,
    run_layout,
    run_once,
    write_pointer,
)
from masa.runner.scoring import score_shard
from masa.runner.settings import algorithm_for
from masa.storage import open_store, put_dir_atomic
from masa.telemetry import verifier_outcomes


def score_step(cfg: RunConfig, *, branch: str, round_idx: int, rollouts_ptr: str, policy_ptr: str,
               history_path: str | None, out_ptr: str, history_out: str) -> dict[str, Any]:
    layout, rptr, ptr = run_layout(cfg), read_pointer(rollouts_ptr), read_pointer(policy_ptr)
    prefix = layout.part(branch, round_idx, "scored")
    algo = algorithm_for(cfg, branch, round_idx)
    fp = digest(manifest_digest(rptr), dataclasses.asdict(algo), cfg.rollout.max_response_tokens)

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-score-") as tmp:
            shard = local_path_or_fetch(rptr.store, rptr.prefix, Path(tmp) / "r")
            # the tokenizer re-tokenizes expert targets; the weights are not needed here
            model_dir = policy_tokenizer(ptr, Path(tmp) / "m")
            stats = score_shard(str(shard / "rollouts.parquet"), str(work), tokenizer_path=str(model_dir), algo=algo,
                                max_response_tokens=cfg.rollout.max_response_tokens)
        # cached with the stats, so a reused part reports the same outcomes
        stats["verifier_outcomes"] = verifier_outcomes(work / "scored.parquet")
        return stats

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, Pointer(store=cfg.store, prefix=prefix, kind="scored"))
    record = {"round": round_idx, **{k: stats.get(k) for k in ("train_accuracy", "meta_pass_rate_mae",
                                                              "meta_pass_rate_mae_median", "meta_gate_hits",
                                                              "meta_gate_candidates", "meta_gate_mixed",
                                                              "meta_mixed", "gated_prompts",
                                                              "cutoff_samples", "cutoff_would_cut",
                                                              "cutoff_passing")}}
    history = [h for h in read_history(history_path) if h["round"] != round_idx] + [record]
    Path(history_out).write_text(json.dumps(history, indent=1))
    # also in the store, where the next segment's `resume` finds it (docs/deploy.md, "Bounded runs"): a part
    # of its own, files first and manifest last like every artifact, so `masa store verify` covers it
    with tempfile.TemporaryDirectory(prefix="masa-history-") as tmp:
        Path(tmp, HISTORY).write_text(json.dumps(history, indent=1))
        put_dir_atomic(open_store(cfg.store), tmp, layout.part(branch, round_idx, "history"))
    return stats
