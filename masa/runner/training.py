"""Training step of a MASA round: policy update on the scored shard + behaviour cloning of experts.

`train_round` downloads the inputs, launches `nproc` DeepSpeed workers (masa.train.worker) on this
node, and publishes the consolidated HF checkpoint (loadable by vLLM as is) and the DeepSpeed state
atomically to `out_uri`. With `resume_root`, workers save resumable state every `cfg.save_every` steps
there, and a rerun after a crash continues from the newest *complete* one; once the round's output is
published, those resume points are deleted.

`train_round_trainjob` runs the same round on several nodes through a Kubeflow Trainer TrainJob
(runtime `masa-deepspeed`); there the workers stage and publish themselves (masa.train.remote).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from masa.storage import MANIFEST, open_store
from masa.telemetry.progress import phase
from masa.train import checkpoint as ckpt
from masa.train import service as trainer_service
from masa.train.config import TrainConfig
from masa.train.inputs import round_request, stage
from masa.train.launch import METRICS_PREFIX, TrainingFailed, read_metrics, run_workers
from masa.train.served import ServedTrainer, ensure_key, job_address, service_manifest
from masa.train.spec import STATE_MODES, ListenSpec, TrainCall
from masa.train.trainjob import TrainJobSettings, follow, trainjob_manifest


def train_round(
    model_uri: str,
    scored_path: str,
    experts_path: str | None,
    out_uri: str,
    cfg: TrainConfig,
    *,
    nproc: int,
    resume_root: str | None = None,
    work_dir: str | None = None,
    on_step: Callable[[dict], None] | None = None,
    env: dict[str, str] | None = None,
    chain: str | None = None,
    state: str = "publish",
    hold_as: str | None = None,
) -> dict:
    """Run one round of updates on `nproc` local processes; publish the next checkpoint to `out_uri`.

    With `chain` (the name of the rounds this one continues, a branch) in a warm `masa run` task, the
    ranks are the run's trainer service for that chain (masa.train.service): when they hold the state
    `model_uri` was published with, they continue from it without loading it, and `state` (one of
    STATE_MODES) says whether the round's DeepSpeed state is published, kept in the service, or
    uploaded by it in the background; without a service it is always published. `hold_as`: the
    identity the service is told it holds afterwards, when not `out_uri`'s (a round retrained to rebuild
    the state of a checkpoint already published: masa.steps.train.rebuild_kept_states).

    Returns {"checkpoint": out_uri, "global_step", "steps": [per-step metrics rows], "resumed_from":
    URI or None, "work_dir"}. `on_step(row)` is called in this process for every optimizer step as the
    workers report it (the hook for Prometheus). Raises TrainingFailed when a worker dies (its message
    names the scratch directory, kept for its logs). Without `work_dir`, a temporary scratch directory
    is used and removed after a successful round.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if state not in STATE_MODES:
        raise ValueError(f"unknown state mode {state!r}; valid: {', '.join(STATE_MODES)}")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="masa-train-"))
    for stale in ("out", "state", "resume", "metrics.jsonl"):  # a rerun in the same work dir starts clean
        p = work / stale
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    request = round_request(model_uri, scored_path, experts_path, out_uri, cfg, resume_root=resume_root)
    resume_uri = ckpt.latest_resume_point(resume_root) if resume_root else None

    def line(s: str) -> None:
        if on_step and s.startswith(METRICS_PREFIX):
            on_step(json.loads(s[len(METRICS_PREFIX):]))

    trainer = trainer_service.connect(chain, cfg, nproc, env) if chain else None
    if trainer is None:  # ranks of this step's own; the state is published whatever `state` asks
        run_workers(stage(request, work, resume_uri=resume_uri), nproc, env=env, on_line=line)
        info, steps = _publish(work, out_uri)
    else:
        with contextlib.closing(trainer):
            info, steps = _served_round(trainer, request, work, resume_uri, state, line)
            trainer.hold(hold_as or ckpt.identity(out_uri))
    if resume_root:
        ckpt.drop_resume_points(resume_root)
    if work_dir is None:  # our own scratch (a model copy and optimizer state): gone once published
        shutil.rmtree(work, ignore_errors=True)
    return {"checkpoint": out_uri, "global_step": info["global_step"], "steps": steps,
            "resumed_from": resume_uri, "work_dir": work_dir}


def _served_round(trainer: trainer_service.Trainer, request, work: Path, resume_uri: str | None, state: str,
                  on_line: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """The round on the trainer service: from the engine it holds when that is the state the policy was
    published with (and no resume point of this round wins), else from the store. `state`: "publish"
    the DeepSpeed state with the model; "keep" it in the service only; "background": the service
    uploads it after this step (complete once `drain` returns)."""
    expects = ckpt.identity(request.model) if resume_uri is None else None
    held = expects is not None and trainer.held() == expects
    spec = stage(request, work, resume_uri=resume_uri, with_state=not held, save_state=state != "keep")
    phase("trainer service: " + ("continuing from the engine it holds" if held else "building the engine"))
    trainer.train(trainer_service.write_spec(spec, work), expects if held else None, on_line)
    info, steps = _publish(work, request.out, kept=None if state == "publish" else state)
    if state == "background":
        trainer.upload(work / "state", request.out.rstrip("/") + "/" + ckpt.STATE_DIR)
    return info, steps


def _publish(work: Path, out_uri: str, *, kept: str | None = None) -> tuple[dict, list[dict]]:
    """Publish the round's state, then its model (manifest last: a complete model implies its state is
    complete too); (the state's train_state.json, the metrics rows). With `kept` the state is not
    published here: the model carries its train_state.json, marked with how the state was kept."""
    steps = read_metrics(work)
    shutil.copy2(work / "metrics.jsonl", work / "out" / "metrics.jsonl") if steps else None
    info = ckpt.read_train_state(work / "state")
    if kept is None:
        ckpt.publish(work / "state", out_uri.rstrip("/") + "/" + ckpt.STATE_DIR)
    else:
        (work / "out" / ckpt.STATE_FILE).write_text(json.dumps({**info, "state": kept}, indent=1))
    ckpt.publish(work / "out", out_uri)
    return info, steps


def train_round_trainjob(
    model_uri: str,
    scored_uri: str,
    experts_uri: str | None,
    out_uri: str,
    cfg: TrainConfig,
    *,
    settings: TrainJobSettings,
    name: str,
    resume_root: str | None = None,
    on_step: Callable[[dict], None] | None = None,
    timeout_s: float | None = None,
) -> dict:
    """`train_round` on `settings.num_nodes` nodes through a Kubeflow Trainer TrainJob.

    Inputs and outputs must be store URIs the nodes can reach (s3://...). Returns the same dict as
    `train_round` (metrics read back from the published checkpoint). Raises TrainingFailed with the
    job's error.
    """
    request = round_request(model_uri, scored_uri, experts_uri, out_uri, cfg, resume_root=resume_root)
    resume_uri = ckpt.latest_resume_point(resume_root) if resume_root else None  # for the report only

    def line(s: str) -> None:
        if on_step and s.startswith(METRICS_PREFIX):
            on_step(json.loads(s[len(METRICS_PREFIX):]))

    follow(trainjob_manifest(name, request, settings), on_line=line, timeout_s=timeout_s)
    if resume_root:
        ckpt.drop_resume_points(resume_root)
    store = open_store(out_uri)
    steps = [json.loads(x) for x in store.get_bytes("metrics.jsonl").decode().splitlines() if x.strip()]
    state = json.loads(store.get_bytes(f"{ckpt.STATE_DIR}/{ckpt.STATE_FILE}"))
    return {"checkpoint": out_uri, "global_step": state["global_step"], "steps": steps,
            "resumed_from": resume_uri, "work_dir": None}


def train_round_served(
    model_uri: str,
    scored_uri: str,
    experts_uri: str | None,
    out_uri: str,
    cfg: TrainConfig,
    *,
    settings: TrainJobSettings,
    name: str,
    listen: ListenSpec,
    state: str,
    last: bool,
    resume_root: str | None = None,
    on_step: Callable[[dict], None] | None = None,
    expects: str | None = None,
    address: tuple[str, int] | None = None,
) -> dict:
    """`train_round` on the serving TrainJob for this branch (masa.train.served): created by the
    branch's first round, continuing from the engine it holds when that is the state `model_uri` was
    trained to (`expects`: its manifest digest, when the store's copy may still be uploading; else read
    from the store), stopped (its background uploads drained) after the training's `last` round. On
    one node the new model is handed over to the next steps from rank 0 and uploaded in the background
    (masa.train.handover). `address`: rank 0's (host, port) where no Kubernetes API
    finds it (tests: ranks on loopback). Returns what `train_round_trainjob` returns, and "identity",
    the new model's manifest digest."""
    request = dataclasses.replace(round_request(model_uri, scored_uri, experts_uri, out_uri, cfg,
                                                resume_root=resume_root), work_dir=listen.work_dir)
    resume_uri = ckpt.latest_resume_point(resume_root) if resume_root else None
    key = ensure_key(listen.key_uri)
    where = address or job_address(service_manifest(name, listen, settings), listen.port)
    steps: list[dict] = []

    def line(s: str) -> None:
        if s.startswith(METRICS_PREFIX):
            steps.append(json.loads(s[len(METRICS_PREFIX):]))
            on_step(steps[-1]) if on_step else None

    trainer = ServedTrainer(where, key)
    try:
        call = TrainCall(request.to_dict(remote=True),
                         (expects or ckpt.identity(model_uri)) if resume_uri is None else None, None, state)
        reply = trainer.train(call, line)
        phase("serving TrainJob: " + ("continued from the engine it holds" if reply["held"]
                                      else "built the engine from the store"))
        errors = trainer.stop() if last else []
    finally:
        trainer.close()
    if errors:
        raise TrainingFailed("the serving TrainJob could not upload the round's model or state: " + "; ".join(errors))
    if resume_root:
        ckpt.drop_resume_points(resume_root)
    return {"checkpoint": out_uri, "global_step": reply["global_step"], "steps": steps,
            "resumed_from": resume_uri, "work_dir": None, "identity": reply["identity"]}


def prune_train_states(store, layout, branch: str, round_idx: int, keep: int) -> list[int]:
    """Delete the DeepSpeed state of rounds <= round_idx - keep (manifest first, so a crash leaves an
    incomplete prefix that is never loaded); the models stay. Returns the rounds pruned."""
    pruned = []
    for r in range(round_idx - keep, -1, -1) if keep else ():
        state = f"{layout.part(branch, r, 'checkpoint')}/{ckpt.STATE_DIR}"
        if not store.list(f"{state}/"):
            break  # pruned by an earlier round: so are all before it
        store.delete(f"{state}/{MANIFEST}")
        store.delete(f"{state}/")
        pruned.append(r)
    return pruned


def summarize_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each numeric per-step metric over the round, plus the total wall time."""
    out: dict[str, Any] = {"optimizer_steps": len(steps)}
    keys = {k for s in steps for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k in sorted(keys):
        vals = [s[k] for s in steps if isinstance(s.get(k), (int, float))]
        out[k] = sum(vals) / len(vals)
    out["wall_s"] = sum(s.get("seconds", 0.0) for s in steps)
    return out
