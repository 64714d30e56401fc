"""Training step of a MASA round: policy update on the scored shard + behaviour cloning of experts.

`train_round` downloads the inputs, launches `nproc` DeepSpeed workers (masa.train.worker) on this
node, and publishes the consolidated HF checkpoint (loadable by vLLM as is) and the DeepSpeed state
atomically to `out_uri`. With `resume_root`, workers save resumable state every `cfg.save_every` steps
there, and a rerun after a crash continues from the newest *complete* one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from masa.train import checkpoint as ckpt
from masa.train.config import TrainConfig
from masa.train.launch import ds_config_path, read_metrics, run_workers
from masa.train.metrics import METRICS_PREFIX


def _is_uri(s: str) -> bool:
    return "://" in s


def _local_model(uri: str) -> Path:
    from masa.storage import resolve_model

    path = Path(resolve_model(uri))
    ckpt.verify_local(path)  # a previous round's local output: trust it only if its manifest matches
    return path


def _local_file(path: str | None, work: Path) -> str | None:
    """A local copy of a shard given as a path or a store URI (s3://bucket/dir/scored.parquet)."""
    if path is None or not _is_uri(path):
        return path
    from masa.storage import open_store

    parent, name = path.rsplit("/", 1)
    dest = work / "inputs" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    open_store(parent).get_file(name, str(dest))
    return str(dest)


def _sha256(path: str | None) -> str:
    if path is None:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(model_uri: str, scored: str, experts: str | None, cfg: TrainConfig) -> str:
    """Identity of a round's inputs: a resume point is only loaded by a rerun of the same round."""
    blob = json.dumps([model_uri, _sha256(scored), _sha256(experts), dataclasses.asdict(cfg)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _previous_state(model_uri: str, work: Path) -> str | None:
    """The DeepSpeed state a previous round published beside its model, if complete."""
    if not _is_uri(model_uri) and not Path(model_uri, ckpt.STATE_DIR).is_dir():
        return None
    uri = model_uri.rstrip("/") + "/" + ckpt.STATE_DIR
    try:
        if not ckpt.is_complete(uri):
            return None
    except (FileNotFoundError, OSError):
        return None
    return str(ckpt.fetch_verified(uri, work / "init_state"))


def train_config_for(run_cfg) -> TrainConfig:
    """The TrainConfig of a RunConfig, with bc_coef taken from the algorithm's expert settings.

    Behaviour cloning is part of MASA only: GRPO, or experts disabled, trains with bc_coef 0.
    """
    expert = run_cfg.algorithm.expert
    bc = expert.bc_coef if run_cfg.algorithm.uses_meta and expert.enabled else 0.0
    return dataclasses.replace(run_cfg.train, bc_coef=bc)


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
) -> dict:
    """Run one round of updates on `nproc` local processes; publish the next checkpoint to `out_uri`.

    Returns {"checkpoint": out_uri, "global_step", "steps": [per-step metrics rows], "resumed_from":
    URI or None, "work_dir"}. `on_step(row)` is called in this process for every optimizer step as the
    workers report it (the hook for Prometheus). Raises TrainingFailed when a worker dies.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="masa-train-"))
    for stale in ("out", "state", "resume", "metrics.jsonl"):  # a rerun in the same work dir starts clean
        p = work / stale
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    model_dir = _local_model(model_uri)
    scored = _local_file(scored_path, work)
    experts = _local_file(experts_path, work)
    for what, path in (("scored shard", scored), ("experts shard", experts)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path!r} does not exist")
    fp = fingerprint(model_uri, scored, experts, cfg)
    resume_uri = ckpt.latest_resume_point(resume_root) if resume_root else None
    spec = {
        "cfg": dataclasses.asdict(cfg), "model_dir": str(model_dir), "scored_path": scored,
        "experts_path": experts, "work_dir": str(work), "ds_config": ds_config_path(cfg.zero_stage),
        "ref_model_dir": str(_local_model(cfg.ref_model)) if cfg.ref_model else str(model_dir),
        "fingerprint": fp, "resume_root": resume_root,
        "resume_dir": str(ckpt.fetch_verified(resume_uri, work / "resume_in")) if resume_uri else None,
        "init_state_dir": _previous_state(model_uri, work),
    }

    def line(s: str) -> None:
        if on_step and s.startswith(METRICS_PREFIX):
            on_step(json.loads(s[len(METRICS_PREFIX):]))

    run_workers(spec, nproc, env=env, on_line=line)
    steps = read_metrics(work)
    shutil.copy2(work / "metrics.jsonl", work / "out" / "metrics.jsonl") if steps else None
    state = ckpt.read_train_state(work / "state")
    # state first, model manifest last: a complete model implies its state is complete too
    ckpt.publish(work / "state", out_uri.rstrip("/") + "/" + ckpt.STATE_DIR)
    ckpt.publish(work / "out", out_uri)
    return {"checkpoint": out_uri, "global_step": state["global_step"], "steps": steps,
            "resumed_from": resume_uri, "work_dir": str(work)}
