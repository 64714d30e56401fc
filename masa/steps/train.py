"""The train step: one round of DeepSpeed training on the scored shard (`masa.runner.training`), in this
pod or, for `resources.train_nodes` > 1, as a Kubeflow Trainer TrainJob. The step's own process stages,
launches and publishes; it never imports torch (the workers do)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.runner.layout import (
    STATS_FILE,
    Pointer,
    corrupt_input,
    digest,
    local_path_or_fetch,
    manifest_digest,
    read_pointer,
    reusable,
    run_layout,
    write_pointer,
)
from masa.runner.settings import train_settings, trainjob_settings
from masa.runner.training import prune_train_states, summarize_steps, train_round, train_round_trainjob
from masa.storage import CorruptArtifactError, open_store, put_dir_atomic
from masa.train.trainjob import job_name, new_attempt


def _train(cfg: RunConfig, branch: str, round_idx: int, model_uri: str, scored: Path, out_uri: str,
           resume_uri: str, tcfg, on_step) -> dict[str, Any]:
    """One node: DeepSpeed ranks in this pod. Several nodes: a Kubeflow Trainer TrainJob, which
    reads its inputs from the store (so they must be S3 URIs the nodes can reach)."""
    experts = scored / "experts.parquet"
    if cfg.resources.train_nodes == 1:
        # chain: in a warm `masa run`, a branch's rounds share a trainer service (masa.train.service)
        return train_round(model_uri, str(scored / "scored.parquet"), str(experts) if experts.exists() else None,
                           out_uri, tcfg, nproc=cfg.train_processes, resume_root=resume_uri, on_step=on_step,
                           chain=branch)
    r = cfg.resources
    layout, store = run_layout(cfg), open_store(cfg.store)
    scored_uri = store.uri(layout.part(branch, round_idx, "scored"))
    settings = trainjob_settings(cfg)
    return train_round_trainjob(model_uri, f"{scored_uri}/scored.parquet",
                                f"{scored_uri}/experts.parquet" if experts.exists() else None, out_uri, tcfg,
                                settings=settings, name=job_name(layout.run_id, branch, round_idx,
                                                                 attempt=new_attempt()),
                                resume_root=resume_uri, on_step=on_step, timeout_s=max(60, r.gpu_timeout_s - 300))


def train_step(cfg: RunConfig, *, branch: str, round_idx: int, policy_ptr: str, scored_ptr: str,
               out_ptr: str, on_step=None) -> dict[str, Any]:
    """Train on the round's scored shard. The trainer publishes the checkpoint itself (manifest last);
    our stats, with the input fingerprint, go to their own sealed part `<prefix>-stats/stats.json`
    (the checkpoint holds only the model's own files)."""
    layout, ptr, sptr = run_layout(cfg), read_pointer(policy_ptr), read_pointer(scored_ptr)
    prefix = layout.part(branch, round_idx, "checkpoint")
    store = open_store(cfg.store)
    tcfg = train_settings(cfg, branch, round_idx)
    fp = digest(manifest_digest(ptr), manifest_digest(sptr), dataclasses.asdict(tcfg), cfg.train_processes,
                 cfg.resources.train_nodes)
    stats, why = reusable(cfg.store, prefix, fp, stats_key=train_stats_key(prefix))
    if stats is None:
        started = time.time()
        policy_store = open_store(ptr.store)
        with tempfile.TemporaryDirectory(prefix="masa-train-in-") as tmp:
            scored = local_path_or_fetch(sptr.store, sptr.prefix, tmp)
            try:
                result = _train(cfg, branch, round_idx, policy_store.uri(ptr.prefix), scored,
                                store.uri(prefix), store.uri(layout.part(branch, round_idx, "resume")), tcfg, on_step)
            except CorruptArtifactError as e:  # the policy, found corrupt while staging it
                if e.uri.rstrip("/") != policy_store.uri(ptr.prefix).rstrip("/"):
                    raise
                raise corrupt_input(policy_store, ptr.prefix, e) from e
        stats = {**summarize_steps(result["steps"]), "global_step": result["global_step"],
                 "resumed_from": result["resumed_from"], "fingerprint": fp, "started_at": started,
                 "finished_at": time.time()}
        with tempfile.TemporaryDirectory(prefix="masa-train-stats-") as tmp:
            Path(tmp, STATS_FILE).write_text(json.dumps(stats, sort_keys=True, indent=1))
            put_dir_atomic(store, tmp, train_stats_key(prefix).rsplit("/", 1)[0])
        stats = {**stats, "reused": False, **({"recomputed": why} if why else {})}
        prune_train_states(store, layout, branch, round_idx, cfg.resources.keep_train_states)
    else:
        stats = {**stats, "reused": True}
    write_pointer(out_ptr, Pointer(store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=round_idx))
    return stats


def train_stats_key(prefix: str) -> str:
    """Where the train step's stats live: a sealed part of their own beside the checkpoint."""
    return f"{prefix}-stats/{STATS_FILE}"
