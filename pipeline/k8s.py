"""The Kubernetes side of each step: requests, GPUs, volumes, Secret, placement, deadline, and which
KFP backend can read what we emit.

Steps fall in three groups (`step_group`): `small` (configure, report, resume), `cpu` (prepare, data filter,
score, merge) and `gpu` (rollout, benchmark, and train on one node). With `train_nodes > 1` the train step's
pod only creates and follows a TrainJob, so it is `small` and holds no GPU: the TrainJob's nodes do.

Backend versions: the IR that kfp-kubernetes 2.17 writes uses fields older KFP backends reject
("unknown field" in the driver) or silently drop. `BACKEND_FEATURES` records, per field, the first
backend that reads it; `for_backend` removes what a target cannot read (with a warning) or refuses.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager

from masa.clusterconfig import StepResources
from masa.config import RunConfig
from masa.storage.s3 import SECRET_KEYS, SECRET_OPTIONAL_KEYS

GPU_STEPS = ("rollout", "train", "benchmark")
SMALL_STEPS = ("configure", "report", "resume")  # resume only hands pointers on
SHM_VOLUME, SCRATCH_VOLUME = "shm", "tmp"

# IR field of an executor's Kubernetes config -> (first backend that reads it, what happens before it,
# whether we can leave it out). Sources: emptyDirMounts kubeflow/pipelines#10913 (backend 2.3);
# secretNameParameter kubeflow/pipelines#11935 (older drivers fail on it; backend 2.5); SecretAsEnv
# `optional` kubeflow/pipelines#12495 (SDK 2.15 emits it, older drivers fail on it); securityContext
# kubeflow/pipelines#12832 (backend 2.16; 2.4.1-2.15 drop it silently).
BACKEND_FEATURES = {
    "emptyDirMounts": ((2, 3), "the driver fails to parse the step's Kubernetes config", False),
    "secretNameParameter": ((2, 5), "the driver fails to parse the step's Kubernetes config", False),
    "secretAsEnv.optional": ((2, 15), "the driver fails on the `optional` field", True),
    "securityContext": ((2, 16), "the security context is dropped or rejected", True),
}
MIN_BACKEND = max(v for v, _, _ in BACKEND_FEATURES.values())  # everything we emit is read


def step_group(cfg: RunConfig, step: str) -> str:
    """'small' | 'cpu' | 'gpu' (see the module docstring)."""
    if step in SMALL_STEPS or (step == "train" and (cfg.resources.train_nodes > 1 or cfg.resources.train_service)):
        return "small"
    return "gpu" if step in GPU_STEPS else "cpu"  # engine steps: big scratch, /dev/shm, GPUs if any


def step_resources(cfg: RunConfig, step: str) -> tuple[StepResources, int]:
    """(requests + scratch + deadline, GPUs) of one step."""
    r = cfg.resources
    group = step_group(cfg, step)
    if step == "train" and group == "small":  # drives a TrainJob: small pod, the GPU steps' deadline
        return StepResources(r.small.cpu, r.small.memory, r.small.scratch, r.gpu_timeout_s), 0
    if group == "small":
        return r.small, 0
    if group == "cpu":
        return r.cpu_steps, 0
    gpus = {"rollout": r.rollout_gpus, "train": r.train_gpus, "benchmark": r.benchmark_gpus}[step]
    return StepResources(r.cpu_request, r.memory_request, r.gpu_scratch, r.gpu_timeout_s), gpus


def attach_s3_secret(task, secret: str) -> None:
    """Required keys in one reference, the optional endpoint in another (a missing key there does not
    stop the pod). Always attached: `store` is a UI parameter, so any run may switch to s3://."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in SECRET_KEYS})
    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in SECRET_OPTIONAL_KEYS},
                                 optional=True)


def hub_access(task, token_secret: str) -> None:
    """The steps that reach the Hugging Face hub (`resources.stage_inputs`): the images' HF_HUB_OFFLINE=1
    lifted, and HF_TOKEN from a Secret for gated repositories (optional: a public model needs none)."""
    from kfp import kubernetes

    task.set_env_variable("HF_HUB_OFFLINE", "0")
    if token_secret:
        kubernetes.use_secret_as_env(task, secret_name=token_secret, secret_key_to_env={"HF_TOKEN": "HF_TOKEN"},
                                     optional=True)


def _placement(task, selector: dict[str, str], tolerations: tuple[dict, ...]) -> None:
    from kfp import kubernetes

    for k, v in selector.items():
        kubernetes.add_node_selector(task, label_key=k, label_value=v)
    for t in tolerations:
        kubernetes.add_toleration(task, **t)


@contextmanager
def cheap_task_checks():
    """kfp 2.17's `PipelineTask._ensure_container_spec_exists`, run by every `set_*` call below, takes
    `inspect.stack()` only to name its caller in an error message. That reads the source of every frame on
    the stack and, per frame, may scan all of `sys.modules`: in a process with many modules loaded (pytest,
    `masa compile` of a paper run) building one 38-task run took ~20 s instead of ~1 s. Within this block
    the same check names its caller from the caller's frame alone; the compiled IR is byte for byte the same
    (tests/test_pipeline_golden.py)."""
    from kfp.dsl.pipeline_task import PipelineTask

    def ensure_container_spec_exists(self) -> None:
        if self.container_spec is None:
            raise ValueError(f"{sys._getframe(1).f_code.co_name} can only be used on single-step components, "
                             "not pipelines used as components, or special components like importers.")

    kfp_check = PipelineTask.__dict__["_ensure_container_spec_exists"]
    PipelineTask._ensure_container_spec_exists = ensure_container_spec_exists
    try:
        yield
    finally:
        PipelineTask._ensure_container_spec_exists = kfp_check


def apply_step(task, cfg: RunConfig, step: str) -> None:
    """Requests, GPUs, scratch and /dev/shm, deadline, placement, retries, caching and the S3 Secret."""
    from kfp import kubernetes

    r = cfg.resources
    res, gpus = step_resources(cfg, step)
    task.set_cpu_request(res.cpu).set_memory_request(res.memory)
    if gpus:
        task.set_accelerator_type(r.accelerator_type).set_accelerator_limit(gpus)
    task.set_retry(num_retries=r.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(True)
    task.set_env_variable("MASA_METRICS_PORT", str(r.metrics_port))
    # non-root image user (images/*.Dockerfile), a writable, size-limited /tmp for caches and staging on a
    # read-only root, and the label the PodMonitor selects (manifests/podmonitor.yaml)
    kubernetes.set_security_context(task, run_as_user=10001, run_as_group=10001, run_as_non_root=True)
    kubernetes.empty_dir_mount(task, volume_name=SCRATCH_VOLUME, mount_path="/tmp", size_limit=res.scratch)
    if step_group(cfg, step) == "gpu":  # vLLM workers and NCCL ranks share memory through /dev/shm
        kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory",
                                   size_limit=r.shm_size)
        _placement(task, r.gpu_node_selector, r.gpu_tolerations)
    _placement(task, r.node_selector, r.tolerations)
    kubernetes.set_timeout(task, res.timeout_s)
    kubernetes.add_pod_label(task, "masa.io/metrics", "true")
    # the steps that send rounds to the serving TrainJob or take its model over may reach its port
    # (networkpolicy.yaml; masa.train.handover)
    if step in ("rollout", "score", "train", "benchmark") and r.train_service:
        kubernetes.add_pod_label(task, "masa.io/trainer-client", "true")
    if r.s3_secret:  # by reference to a Secret: no value ever enters the compiled spec
        attach_s3_secret(task, r.s3_secret)


def parse_version(text: str) -> tuple[int, int]:
    """'2.5' / '2.16.0' -> (2, 5); ValueError naming the input otherwise."""
    parts = text.strip().lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"--kfp-version {text!r}: expected a KFP backend version like 2.16") from None
    return major, minor


def for_backend(platform: dict, version: tuple[int, int]) -> tuple[dict, list[str]]:
    """The Kubernetes platform spec (second IR document) with what `version` cannot read left out,
    and one warning per field left out. Raises ValueError when a needed field is unreadable there."""
    fmt = ".".join(map(str, version))
    too_old = [(f, need, why) for f, (need, why, droppable) in BACKEND_FEATURES.items()
               if version < need and not droppable]
    if too_old:
        f, need, why = too_old[0]
        raise ValueError(f"KFP backend {fmt} cannot run this pipeline: it reads no `{f}` ({why}); "
                         f"needs {'.'.join(map(str, need))}+, full support {'.'.join(map(str, MIN_BACKEND))}+")
    out, warnings = copy.deepcopy(platform), []
    executors = out.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    if version < BACKEND_FEATURES["securityContext"][0]:
        for e in executors.values():
            e.pop("securityContext", None)
        warnings.append(f"KFP backend {fmt}: securityContext left out (needs 2.16); pods run as the image's "
                        f"USER 10001, but runAsNonRoot is not enforced")
    if version < BACKEND_FEATURES["secretAsEnv.optional"][0]:
        for e in executors.values():
            for ref in e.get("secretAsEnv", []):
                ref.pop("optional", None)
        warnings.append(f"KFP backend {fmt}: `optional` left out of secretAsEnv (needs 2.15); the Secret must "
                        f"then hold {', '.join(SECRET_OPTIONAL_KEYS)} too (an empty value means AWS S3)")
    return out, warnings
