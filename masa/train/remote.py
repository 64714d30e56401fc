"""Workers that stage their own inputs and publish their own outputs: how a Kubeflow Trainer TrainJob
runs the training step, with no launching process on the nodes.

The TrainJob passes the worker a *request* (URIs: model, shards, out, resume_root, and the settings)
with `"remote": true`. Global rank 0 picks the resume point (so every node loads the same one); the
local rank 0 of each node downloads the inputs into that node's work dir; a staging error on any node
fails every rank with its message instead of leaving the others waiting at a barrier. At the end the
state is published by every node (`publish_sharded`: ZeRO partitions live on their ranks' nodes), then
rank 0 publishes the consolidated model, manifest last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch.distributed as dist

from masa.train import checkpoint as ckpt
from masa.train.inputs import stage
from masa.train.spec import RoundRequest, WorkerSpec

STAGED = "staged.json"


def stage_on_nodes(request: RoundRequest, *, holds: bool = False, save_state: bool = True,
                   light_dir: Path | None = None) -> WorkerSpec:
    """Every rank calls it; returns the local spec (see masa.train.inputs.stage) on every rank.
    `holds`: the ranks hold the engine the round starts from (a serving TrainJob, masa.train.listen),
    so neither the previous state nor the policy's weights are fetched (its config and tokenizer come
    from `light_dir`, rank 0's copy of that checkpoint, where given, else from the store); a resume
    point of the round wins over it (the spec then names one, and the caller must build the engine
    from it)."""
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    work = Path(request.work_dir or Path(tempfile.gettempdir()) / "masa-train")
    choice = [ckpt.latest_resume_point(request.resume_root)
              if rank == 0 and request.resume_root else None]
    dist.broadcast_object_list(choice, src=0)
    held = holds and choice[0] is None
    error = None
    if local_rank == 0:
        try:
            for stale in ("out", "state", "resume", "metrics.jsonl", STAGED):
                p = work / stale
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            spec = stage(request, work, resume_uri=choice[0], with_state=not held, save_state=save_state,
                         weights=not held or request.cfg.kl_coef > 0, light_dir=light_dir if held else None)
            (work / STAGED).write_text(json.dumps(spec.to_dict()))
        except Exception as e:  # reported to every rank below, then raised everywhere
            error = f"node of rank {rank}: {type(e).__name__}: {e}"
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    if any(errors):
        raise RuntimeError("staging the round's inputs failed: " + "; ".join(e for e in errors if e))
    spec = WorkerSpec.from_dict(json.loads((work / STAGED).read_text()))
    return dataclasses.replace(spec, publish_to=request.out, resumed_from=choice[0])


def publish_round(work: Path, out_uri: str, *, kept: str | None = None) -> None:
    """Publish the round's state (all nodes), then the model with its metrics (rank 0), manifest last.
    With `kept` ("keep" | "background": masa.train.listen) the state is not published here: the model
    carries its train_state.json, marked with how the state was kept, as a trainer service's rounds do."""
    if kept is None:
        ckpt.publish_sharded(work / "state", out_uri.rstrip("/") + "/" + ckpt.STATE_DIR)
    if dist.get_rank() == 0:
        metrics = work / "metrics.jsonl"
        if metrics.is_file():
            shutil.copy2(metrics, work / "out" / "metrics.jsonl")
        if kept is not None:
            info = ckpt.read_train_state(work / "state")
            (work / "out" / ckpt.STATE_FILE).write_text(json.dumps({**info, "state": kept}, indent=1))
        ckpt.publish(work / "out", out_uri)
    dist.barrier()
