"""The training workers' input, typed: one definition shared by the launcher (`masa.train.launch`), the
stager (`masa.train.inputs`), the workers (`masa.train.worker`, `masa.train.remote`) and the TrainJob
manifest (`masa.train.trainjob`). Both travel as JSON (a file, or a TrainJob's container argument).

    RoundRequest  what one round needs, by URI or path: the policy, the shards, where to publish, the
                  settings. A TrainJob's workers receive it (`"remote": true`) and stage it themselves.
    WorkerSpec    the staged round, local paths only: what a worker trains from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from masa.configbase import from_dict
from masa.train.config import TrainConfig

# rank 0 prints each optimizer step's metrics row (masa.train.metrics) on a line of its own with this
# prefix, and the launcher reads them; here, with the rest of the workers' contract, so the launching
# process never imports torch
METRICS_PREFIX = "MASA_METRICS "
# a rank of the trainer service prints this line after each round (masa.train.worker.serve), and the
# service counts them (masa.train.service)
ROUND_DONE = "MASA_ROUND_DONE"


@dataclass(frozen=True)
class RoundRequest:
    cfg: TrainConfig
    model: str  # the policy: HF directory or store URI
    scored: str  # scored.parquet, path or URI
    experts: str | None  # experts.parquet, or None
    out: str  # where the next checkpoint is published
    resume_root: str | None = None  # where resumable state is saved every cfg.save_every steps
    work_dir: str | None = None  # each node's scratch (TrainJob); None: a temporary directory

    def to_dict(self, *, remote: bool = False) -> dict[str, Any]:
        d = {**dataclasses.asdict(self), "cfg": dataclasses.asdict(self.cfg)}
        if self.work_dir is None:
            del d["work_dir"]
        return {**d, "remote": True} if remote else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundRequest:
        fields = {k: v for k, v in d.items() if k != "remote"}
        return cls(**{**fields, "cfg": from_dict(TrainConfig, d["cfg"])})


@dataclass(frozen=True)
class WorkerSpec:
    cfg: TrainConfig
    model_dir: str
    scored_path: str
    experts_path: str | None
    work_dir: str
    ds_config: str  # the DeepSpeed JSON of cfg.zero_stage
    ref_model_dir: str  # the KL reference (the policy itself unless cfg.ref_model)
    fingerprint: str  # identity of the round's inputs (masa.train.inputs.fingerprint)
    resume_root: str | None
    resume_dir: str | None  # this round's resume point to load, staged locally
    init_state_dir: str | None  # the previous round's DeepSpeed state, staged locally
    publish_to: str | None = None  # set on a TrainJob's nodes: the workers publish the round themselves
    # False: the ranks save no DeepSpeed state (a trainer service keeps it; masa.train.service), only
    # the small train_state.json that names the round's global step
    save_state: bool = True
    resumed_from: str | None = None  # the resume point's URI, for the report

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cfg": dataclasses.asdict(self.cfg)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerSpec:
        return cls(**{**d, "cfg": from_dict(TrainConfig, d["cfg"])})


def worker_input(d: dict[str, Any]) -> RoundRequest | WorkerSpec:
    """A worker's JSON argument: a request to stage (`"remote": true`, a TrainJob) or a staged spec."""
    return RoundRequest.from_dict(d) if d.get("remote") else WorkerSpec.from_dict(d)


@dataclass(frozen=True)
class ListenSpec:
    """A serving TrainJob's ranks (masa.train.listen): where rank 0 listens, the store object holding
    the connection key, and when to stop on its own."""

    port: int
    key_uri: str
    idle_s: float = 1800.0  # no request for this long: every rank exits (a failed run frees its GPUs)
    beat_s: float = 30.0  # rank 0 wakes the other ranks this often while it waits
    # each node's scratch: memory-backed (the runtime's /dev/shm), so that the ZeRO state a run's last
    # round saves, and the models handed over, are written at memory speed, not the disk's
    # (bench/bench_handover.py); manifests/trainingruntime.yaml sizes it
    work_dir: str = "/dev/shm/masa-train"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 or self.idle_s <= 0 or not 0 < self.beat_s <= self.idle_s:
            raise ValueError(f"bad ListenSpec: port {self.port}, idle_s {self.idle_s}, beat_s {self.beat_s}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ListenSpec:
        return cls(**d)


STATE_MODES = ("publish", "keep", "background")


@dataclass(frozen=True)
class TrainCall:
    """One round sent to a serving TrainJob: the request (`RoundRequest.to_dict(remote=True)`), the
    identity of the checkpoint the round starts from when the ranks may continue from what they hold
    (None: build from the store), what to tell them they hold afterwards, and how the round's DeepSpeed
    state reaches the store (one of STATE_MODES: "publish" with the model; "keep" on the ranks only;
    "background": uploaded after the step)."""

    request: dict[str, Any]
    expects: str | None
    hold_as: str | None
    state: str = "publish"

    def __post_init__(self) -> None:
        if self.state not in STATE_MODES:
            raise ValueError(f"unknown state mode {self.state!r}; valid: {', '.join(STATE_MODES)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainCall:
        return cls(**d)


@dataclass(frozen=True)
class HeldBy:
    """Which serving TrainJob holds a checkpoint whose upload may still run (masa.train.handover): its
    name and namespace, rank 0's port, and the store object with the connection key. Carried by the
    train step's output pointer, so the next steps can take the model from it."""

    job: str
    namespace: str
    port: int
    key_uri: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeldBy:
        return cls(**d)
