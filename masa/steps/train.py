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
    train_stats_key,
    write_pointer,
)
from masa.runner.settings import train_settings, trainjob_settings
from masa.runner.training import (
    prune_train_states,
    summarize_steps,
    train_round,
    train_round_served,
    train_round_trainjob,
)
from masa.storage import CorruptArtifactError, is_complete, open_store, put_dir_atomic
from masa.train import checkpoint as ckpt
from masa.train import service as trainer_service
from masa.train.spec import HeldBy, ListenSpec
from masa.train.trainjob import job_name, new_attempt


def serves_training(cfg: RunConfig) -> bool:
    """Whether a warm `masa run` trains through a trainer service: where the ranks run on CPU
    (`resources.train_gpus: 0`, the toy and smoke presets). On GPUs the service's ranks would keep
    their memory while the run's vLLM engines start and generate on the same devices (vLLM sizes its
    cache from the free memory when it starts), which the cluster design gives each its own GPUs for."""
    return cfg.resources.train_gpus == 0 and cfg.resources.train_nodes == 1


def state_mode(cfg: RunConfig, round_idx: int) -> str:
    """How the round's DeepSpeed state reaches the store when a trainer service trains it
    (`resources.train_state`): every round's published by its step, or only the state of a run's last
    round, uploaded by the service in the background, the rest kept in the service; with
    `resources.state_every_runs: N`, only every Nth run's (and the training's last round's)."""
    if cfg.resources.train_state == "round":
        return "publish"
    every = cfg.resources.state_every_runs
    last = any(round_idx == seg[-1] and (j + 1) % every == 0 for j, seg in enumerate(cfg.segments))
    return "background" if last or round_idx == cfg.segments[-1][-1] else "keep"


def _train(cfg: RunConfig, branch: str, round_idx: int, model_uri: str, scored: Path, out_uri: str,
           resume_uri: str, tcfg, on_step, expects: str | None = None) -> dict[str, Any]:
    """One node: DeepSpeed ranks in this pod. Several nodes: a Kubeflow Trainer TrainJob, which
    reads its inputs from the store (so they must be S3 URIs the nodes can reach). `train_service`: the
    serving TrainJob of the branch (one for all runs of `cfg.segments`), as a client."""
    experts = scored / "experts.parquet"
    if cfg.resources.train_nodes == 1 and not cfg.resources.train_service:
        # chain: in a warm `masa run`, a branch's rounds share a trainer service (masa.train.service)
        return train_round(model_uri, str(scored / "scored.parquet"), str(experts) if experts.exists() else None,
                           out_uri, tcfg, nproc=cfg.train_processes, resume_root=resume_uri, on_step=on_step,
                           chain=branch if serves_training(cfg) else None, state=state_mode(cfg, round_idx))
    r = cfg.resources
    layout, store = run_layout(cfg), open_store(cfg.store)
    scored_uri = store.uri(layout.part(branch, round_idx, "scored"))
    settings = trainjob_settings(cfg)
    if r.train_service:
        listen, held_by = served_trainer(cfg, branch, settings.namespace)
        result = train_round_served(model_uri, f"{scored_uri}/scored.parquet",
                                    f"{scored_uri}/experts.parquet" if experts.exists() else None, out_uri, tcfg,
                                    settings=settings, name=held_by.job, listen=listen,
                                    state=state_mode(cfg, round_idx), last=round_idx == cfg.segments[-1][-1],
                                    resume_root=resume_uri, on_step=on_step, expects=expects)
        return {**result, "held_by": held_by}
    return train_round_trainjob(model_uri, f"{scored_uri}/scored.parquet",
                                f"{scored_uri}/experts.parquet" if experts.exists() else None, out_uri, tcfg,
                                settings=settings, name=job_name(layout.run_id, branch, round_idx,
                                                                 attempt=new_attempt()),
                                resume_root=resume_uri, on_step=on_step, timeout_s=max(60, r.gpu_timeout_s - 300))


def served_trainer(cfg: RunConfig, branch: str, namespace: str) -> tuple[ListenSpec, HeldBy]:
    """(the ranks' ListenSpec, the job) of the serving TrainJob that trains `branch`'s rounds
    (`resources.train_service`): one for the whole training, across its bounded runs, so that a run's
    first round continues from the engine the previous run's last round left (no wait for the state's
    upload at a run's end: bench/paper_cost_model.py); a job that stopped, idle or failed, is made afresh
    from the store."""
    r, layout, store = cfg.resources, run_layout(cfg), open_store(cfg.store)
    listen = ListenSpec(port=r.train_service_port, idle_s=r.train_service_idle_s,
                        key_uri=store.uri(f"{layout.run_id}/{branch}/trainer.key"))
    return listen, HeldBy(job=job_name("trainer", layout.run_id, branch), namespace=namespace, port=listen.port,
                          key_uri=listen.key_uri)


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
            rebuild_kept_states(cfg, branch, round_idx, Path(tmp))
            scored = local_path_or_fetch(sptr.store, sptr.prefix, tmp)
            try:
                result = _train(cfg, branch, round_idx, policy_store.uri(ptr.prefix), scored,
                                store.uri(prefix), store.uri(layout.part(branch, round_idx, "resume")), tcfg, on_step,
                                expects=ptr.digest)
            except CorruptArtifactError as e:  # the policy, found corrupt while staging it
                if e.uri.rstrip("/") != policy_store.uri(ptr.prefix).rstrip("/"):
                    raise
                raise corrupt_input(policy_store, ptr.prefix, e) from e
        stats = {**summarize_steps(result["steps"]), "global_step": result["global_step"],
                 "resumed_from": result["resumed_from"], "fingerprint": fp, "started_at": started,
                 "finished_at": time.time()}
        if "held_by" in result:  # a serving TrainJob hands the model over while it uploads
            stats |= {"identity": result["identity"], "held_by": result["held_by"].to_dict()}
        with tempfile.TemporaryDirectory(prefix="masa-train-stats-") as tmp:
            Path(tmp, STATS_FILE).write_text(json.dumps(stats, sort_keys=True, indent=1))
            put_dir_atomic(store, tmp, train_stats_key(prefix).rsplit("/", 1)[0])
        stats = {**stats, "reused": False, **({"recomputed": why} if why else {})}
        prune_train_states(store, layout, branch, round_idx, cfg.resources.keep_train_states)
    else:
        stats = {**stats, "reused": True}
    held_by = HeldBy.from_dict(stats["held_by"]) if stats.get("held_by") else None
    write_pointer(out_ptr, Pointer(store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=round_idx,
                                   digest=stats.get("identity"), held_by=held_by))
    return stats


def state_available(cfg: RunConfig, branch: str, round_idx: int) -> bool:
    """Whether a round can start from round `round_idx`'s checkpoint: its DeepSpeed state is in the
    store, or was never kept apart from it (a TrainJob's, or pruned: then AdamW restarts, as
    `keep_train_states` says), or the run's trainer service for the branch holds it."""
    store, prefix = open_store(cfg.store), run_layout(cfg).part(branch, round_idx, "checkpoint")
    if not store.exists(f"{prefix}/{ckpt.STATE_FILE}") or is_complete(store, f"{prefix}/{ckpt.STATE_DIR}"):
        return True
    return trainer_service.holds(branch, train_settings(cfg, branch, round_idx), cfg.train_processes, None,
                                 ckpt.identity(store.uri(prefix)))


def rebuild_kept_states(cfg: RunConfig, branch: str, round_idx: int, tmp: Path) -> list[int]:
    """Before training round `round_idx` in a warm `masa run`: when the state the round starts from was
    kept by a trainer service that is gone (a new `masa run` after an interrupt; KFP's cache skips the
    train steps that made it), retrain on the branch's service the rounds since the last state in the
    store, from their stored inputs, publishing nothing, so that it holds that state. On CPU the
    retrained weights equal the stored ones bit for bit (said on the terminal either way). Returns the
    rounds retrained."""
    if not serves_training(cfg) or trainer_service.enabled() is None:
        return []  # no service: the state was published every round (or stage() names what is missing)
    need, r = [], round_idx - 1
    while r >= 0 and not state_available(cfg, branch, r):
        need.append(r)
        r -= 1
    layout, store = run_layout(cfg), open_store(cfg.store)
    for m in reversed(need):
        policy = layout.part(branch, m - 1, "checkpoint") if m > 0 else layout.base("checkpoint")
        scored = local_path_or_fetch(cfg.store, layout.part(branch, m, "scored"), tmp / f"scored-{m}")
        experts = scored / "experts.parquet"
        stored = store.uri(layout.part(branch, m, "checkpoint"))
        train_round(store.uri(policy), str(scored / "scored.parquet"), str(experts) if experts.exists() else None,
                    str(tmp / f"retrained-{m}"), train_settings(cfg, branch, m), nproc=cfg.train_processes,
                    chain=branch, state="keep", hold_as=ckpt.identity(stored))
        same = ckpt.same_weights(tmp / f"retrained-{m}", stored)
        print(f"masa: {branch} round {m + 1}: its training state was kept by a trainer service that is gone; "
              f"retrained it ({'the same weights' if same else 'weights differ from the stored ones'})",
              flush=True)
    return need[::-1]
