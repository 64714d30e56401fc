"""What a run asks of the cluster: each step's Kubernetes resources and the steps' images.

Part of the run configuration (`masa.config.RunConfig.resources` and `.images`); the local runner ignores
it, pipeline/k8s.py applies it to the compiled tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import masa
from masa.configbase import check, raise_if

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}


@dataclass(frozen=True)
class StepResources:
    """Requests of one group of steps (Kubernetes quantities), the size limit of its `/tmp` scratch
    emptyDir (exceeding it evicts the pod instead of filling the node's disk), and its deadline."""

    cpu: str = "1"
    memory: str = "2Gi"
    scratch: str = "10Gi"
    timeout_s: int = 3600  # the pod's activeDeadlineSeconds: a hung step fails (and is retried)

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.timeout_s >= 60, "timeout_s", "must be >= 60 seconds", p)
        for k in ("cpu", "memory", "scratch"):
            check(bool(getattr(self, k)), k, "must be a Kubernetes quantity, e.g. 4, 16Gi", p)
        raise_if(p)


@dataclass(frozen=True)
class ResourcesConfig:
    """Kubernetes resources per step (ignored by the local runner; applied by pipeline/k8s.py).

    GPU steps (rollout, train, benchmark) request `cpu_request`/`memory_request`, their GPUs and a
    memory-backed `/dev/shm` of `shm_size`; the others request `small` (configure, report) or
    `cpu_steps` (prepare, data filter, score), so a report never waits for a 32-CPU node."""

    accelerator_type: str = "nvidia.com/gpu"
    rollout_gpus: int = 1
    train_gpus: int = 0  # 0: DeepSpeed ranks on CPU (gloo), as toy/smoke run; else one rank per GPU
    benchmark_gpus: int = 1
    train_nodes: int = 1  # > 1: the train step creates a Kubeflow Trainer TrainJob
    cpu_request: str = "2"
    memory_request: str = "8Gi"
    gpu_scratch: str = "50Gi"  # /tmp of GPU steps: an 8B train step stages model + ZeRO state (~115 GB)
    gpu_timeout_s: int = 86400
    shm_size: str = "2Gi"  # /dev/shm of GPU steps (vLLM/NCCL; the container default is 64 MiB)
    small: StepResources = field(default_factory=lambda: StepResources("500m", "1Gi", "1Gi", 1800))
    cpu_steps: StepResources = field(default_factory=lambda: StepResources("2", "8Gi", "20Gi", 6 * 3600))
    node_selector: dict[str, str] = field(default_factory=dict)  # every step
    tolerations: tuple[dict, ...] = ()  # every step: {key, operator, value, effect, toleration_seconds}
    gpu_node_selector: dict[str, str] = field(default_factory=dict)  # GPU steps, on top of node_selector
    gpu_tolerations: tuple[dict, ...] = ()  # GPU steps, on top of tolerations (tainted GPU pools)
    # DeepSpeed state published beside each round's model (~100 GB at 8B): keep it for the last K rounds
    # only (0 = keep all). The next round needs just the previous one; a rerun of an older round then
    # starts its optimizer fresh (masa.train.inputs.previous_state), its model is untouched.
    keep_train_states: int = 0
    # where a trainer service keeps a branch's engine between rounds (`masa run`, masa.train.service),
    # when its DeepSpeed state reaches the store: "round" = every round's, before the train step ends
    # (as without a service); "run" = only the state of each run's last round, uploaded by the service
    # in the background (the state of the rounds between lives in the service; a rerun after losing it
    # retrains those rounds from the last published state). Without a service: every round's, always.
    train_state: Literal["round", "run"] = "round"
    # with `run`: only every Nth run's last state is uploaded (and the training's last), the runs between
    # keep theirs in the service. Fewer bytes to S3 a round (at 8B the state is ~100 GB, most of a round's
    # upload); losing the service then costs up to N runs to redo. docs/deploy.md, "Serving TrainJob"
    state_every_runs: int = 1
    # on a cluster: a branch's train steps send their rounds to one TrainJob that stays up for the run
    # (masa.train.listen, masa.train.served) and keeps its DeepSpeed engine between them, instead of
    # training in their own pod (or a TrainJob per round) from the state in the store; the state reaches
    # the store as `train_state` says. The train tasks become small pods; the job has the train GPUs.
    train_service: bool = False
    train_service_port: int = 29600  # rank 0 of the serving TrainJob listens here (networkpolicy.yaml)
    train_service_idle_s: int = 1800  # its ranks exit after this long without a round (a failed run)
    retries: int = 2
    metrics_port: int = 9090  # Prometheus endpoint of long-running steps (0 = off); images expose 9090
    service_account: str = "masa-pipeline"  # manifests/rbac.yaml: may create TrainJobs, read one Secret
    s3_secret: str = "masa-s3-credentials"  # keys: masa.storage.s3.SECRET_KEYS (+ SECRET_OPTIONAL_KEYS)
    # rounds per submitted run (docs/deploy.md, "Bounded runs"); 0 = as many as keep a run within
    # MAX_TASKS_PER_RUN tasks. `masa run` runs the segments one after another.
    rounds_per_run: int = 0
    # pods generating one round's rollouts side by side, each on rollout_gpus GPUs, then one merge
    # (masa.runner.shards); the rows do not depend on it
    rollout_shards: int = 1
    # pods benchmarking one checkpoint side by side, each over a slice of the problems on benchmark_gpus
    # GPUs, then one merge (masa.runner.eval_shards); the figures do not depend on it
    benchmark_shards: int = 1
    # a `stage` step after configure copies every input that is not yet in the store (a hub id, or a local
    # path) into it, pinned by revision (masa.steps.stage), so the other steps read only the store; its pod
    # needs egress to the hub. Gated repositories: a Secret with key HF_TOKEN, named here ("" = no token)
    stage_inputs: bool = False
    hf_token_secret: str = ""

    def __post_init__(self) -> None:
        p: list[str] = []
        for k in ("rollout_gpus", "train_gpus", "benchmark_gpus", "retries", "keep_train_states", "rounds_per_run"):
            check(getattr(self, k) >= 0, k, "must be >= 0", p)
        check(self.train_state in ("round", "run"), "train_state", f"must be round or run; got {self.train_state!r}", p)
        check(self.state_every_runs >= 1, "state_every_runs", "must be >= 1", p)
        check(self.rollout_shards >= 1, "rollout_shards", "must be >= 1", p)
        check(self.benchmark_shards >= 1, "benchmark_shards", "must be >= 1", p)
        check(self.train_nodes >= 1, "train_nodes", "must be >= 1", p)
        check(0 < self.train_service_port < 65536, "train_service_port", "must be a TCP port", p)
        check(self.train_service_idle_s >= 60, "train_service_idle_s", "must be >= 60 seconds", p)
        check(self.train_nodes == 1 or self.train_gpus >= 1, "train_nodes",
              "> 1 needs resources.train_gpus >= 1 (the TrainJob's GPUs per node)", p)
        check(self.gpu_timeout_s >= 60, "gpu_timeout_s", "must be >= 60 seconds", p)
        for k in ("tolerations", "gpu_tolerations"):
            for i, t in enumerate(getattr(self, k)):
                bad = sorted(set(t) - _TOLERATION_KEYS) if isinstance(t, dict) else ["(not a mapping)"]
                check(not bad, f"{k}[{i}]", f"unknown keys {bad}; valid: {sorted(_TOLERATION_KEYS)}", p)
        for k in ("node_selector", "gpu_node_selector"):
            sel = getattr(self, k)
            check(all(isinstance(a, str) and isinstance(b, str) for a, b in sel.items()), k,
                  "must map label keys to string values", p)
        raise_if(p)


# images/build.sh's default registry when MASA_IMAGE_REGISTRY is unset: nobody's registry, which
# `masa preflight` refuses (pipeline/preflight.py)
PLACEHOLDER_REGISTRY = "ghcr.io/owner"


@dataclass(frozen=True)
class ImagesConfig:
    """Images of the steps, tagged with the package version by images/build.sh."""

    cpu: str = f"{PLACEHOLDER_REGISTRY}/masa-pipeline-cpu:{masa.__version__}"
    vllm: str = f"{PLACEHOLDER_REGISTRY}/masa-pipeline-vllm:{masa.__version__}"
    deepspeed: str = f"{PLACEHOLDER_REGISTRY}/masa-pipeline-deepspeed:{masa.__version__}"
