"""Local copies of a round's inputs: the policy, the shards, and the DeepSpeed state to start from.

Used by `masa.runner.training.train_round` (the launching process stages, workers read local paths) and by
the workers themselves when a TrainJob starts them on nodes of their own (`masa.train.remote`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path

from masa.storage import open_store, resolve_model
from masa.train import checkpoint as ckpt
from masa.train.config import TrainConfig
from masa.train.spec import RoundRequest, WorkerSpec


def ds_config_path(zero_stage: int) -> str:
    """Path of the package's DeepSpeed JSON config for this ZeRO stage (masa/train/ds_zeroN.json)."""
    return str(resources.files("masa.train") / f"ds_zero{zero_stage}.json")


def _is_uri(s: str) -> bool:
    return "://" in s


def verified_model_dir(uri: str) -> Path:
    path = Path(resolve_model(uri))
    ckpt.verify_local(path)  # a previous round's local output: trust it only if its manifest matches
    return path


def light_model_dir(uri: str, work: Path) -> Path:
    """The policy's config and tokenizer without its weights (a local directory: as it is)."""
    return ckpt.fetch_light(uri, work / "policy_light") if _is_uri(uri) else Path(uri)


def local_file(path: str | None, work: Path) -> str | None:
    """A local copy of a shard given as a path or a store URI (s3://bucket/dir/scored.parquet)."""
    if path is None or not _is_uri(path):
        return path

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


def previous_state(model_uri: str, work: Path) -> str | None:
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


def round_request(model_uri: str, scored: str, experts: str | None, out_uri: str, cfg: TrainConfig, *,
                  resume_root: str | None) -> RoundRequest:
    """What one round needs, by URI: the workers' input when they stage it themselves (TrainJob)."""
    return RoundRequest(cfg=cfg, model=model_uri, scored=scored, experts=experts, out=out_uri,
                        resume_root=resume_root)


def stage(request: RoundRequest, work: Path, *, resume_uri: str | None, with_state: bool = True,
          save_state: bool = True, weights: bool = True, light_dir: Path | None = None) -> WorkerSpec:
    """Download a round's inputs into `work`; return the workers' spec (local paths only).

    `resume_uri` is the resume point to load (chosen once, by one process). Without `with_state` the
    previous round's DeepSpeed state is not fetched (a trainer service holds it); without `save_state`
    the workers save none (a trainer service keeps it); without `weights` only the policy's config and
    tokenizer are fetched (a serving TrainJob's ranks hold its weights: ~16 GB for 8B), or taken from
    `light_dir` (a local copy of that checkpoint, whose fingerprint stays the URI's). Raises StateUnavailableError for a policy whose
    state a service kept and no longer holds, FileNotFoundError
    for a missing shard and CheckpointError for a damaged checkpoint.
    """
    cfg = request.cfg
    work.mkdir(parents=True, exist_ok=True)
    model_dir = (verified_model_dir(request.model) if weights
                 else Path(light_dir) if light_dir else light_model_dir(request.model, work))
    scored = local_file(request.scored, work)
    experts = local_file(request.experts, work)
    for what, path in (("scored shard", scored), ("experts shard", experts)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path!r} does not exist")
    init_state = previous_state(request.model, work) if with_state else None
    kept = ckpt.kept_state(model_dir) if with_state and init_state is None else None
    if kept:  # starting without it would restart AdamW and the warm-up silently
        raise ckpt.StateUnavailableError(
            f"the DeepSpeed state of {request.model} (global step {kept['global_step']}) was kept by the run's "
            "trainer service and is not in the store: rerun the run; the train step of that round retrains "
            "it from the last published state (docs/training.md)")
    return WorkerSpec(
        cfg=cfg, model_dir=str(model_dir), scored_path=scored, experts_path=experts, work_dir=str(work),
        ds_config=ds_config_path(cfg.zero_stage),
        ref_model_dir=str(verified_model_dir(cfg.ref_model)) if cfg.ref_model else str(model_dir),
        fingerprint=fingerprint(request.model, scored, experts, cfg), resume_root=request.resume_root,
        resume_dir=str(ckpt.fetch_verified(resume_uri, work / "resume_in")) if resume_uri else None,
        init_state_dir=init_state, save_state=save_state,
    )
