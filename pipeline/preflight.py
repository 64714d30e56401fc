"""Offline checks of a cluster compile: what would stop a first run before any GPU work.

`checks(cfg, version)` compiles the pipeline for backend `version` and returns one `Check` per
concern: images, store, S3 Secret wiring in the IR, GPUs vs ranks, object size, backend features,
hub ids the offline images cannot read. `masa preflight` prints them; `masa compile`, `submit` and
`schedule` refuse a configuration with a failing check. Nothing here talks to a cluster.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

import masa
from masa.clusterconfig import PLACEHOLDER_REGISTRY
from masa.config import MAX_TASKS_PER_RUN, RunConfig, engine_parallelism
from masa.pipeline.compile import compile_pipeline, distinct_segments
from masa.pipeline.k8s import MIN_BACKEND, for_backend
from masa.storage.s3 import SECRET_KEYS, SECRET_OPTIONAL_KEYS

IMAGE_NAMES = ("cpu", "vllm", "deepspeed")
# etcd's default --max-request-bytes (1.5 MiB) bounds every Kubernetes object; KFP v2's Argo Workflow
# is larger than the IR it comes from (kubeflow/pipelines#13738, #9837), so the IR alone must fit.
MAX_OBJECT_BYTES = 1_572_864


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL"
    message: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.message}"


def image_overrides(registry: str) -> list[str]:
    """`--set` overrides naming the three images under `registry`, tagged as images/build.sh tags them."""
    registry = registry.rstrip("/")
    return [f"images.{n}={registry}/masa-pipeline-{n}:{masa.__version__}" for n in IMAGE_NAMES]


def digest_overrides(path: str) -> list[str]:
    """`--set` overrides from images/build.sh's digest record ({"cpu": "reg/repo@sha256:...", ...});
    ValueError naming the file and the problem when it is not that."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--image-digests {path}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--image-digests {path}: expected an object naming images, e.g. "
                         '{"cpu": "registry/masa-pipeline-cpu@sha256:..."}')
    bad = [f"{k}={v!r}" for k, v in data.items()
           if k not in IMAGE_NAMES or not isinstance(v, str) or "@sha256:" not in v]
    if bad:
        raise ValueError(f"--image-digests {path}: {', '.join(bad)}: keys must be {', '.join(IMAGE_NAMES)} "
                         "and values image references by digest (name@sha256:...)")
    return [f"images.{k}={v}" for k, v in sorted(data.items())]


def _pinning(cfg: RunConfig) -> Check:
    """KFP's cache key holds the image reference: a rebuilt image under the same tag hits the old cache."""
    tags = [n for n in IMAGE_NAMES if "@sha256:" not in getattr(cfg.images, n)]
    if tags:
        return Check("image-digests", "warn", f"{', '.join(tags)} referenced by tag: a rebuild under the same tag "
                     "reuses KFP's cached results; compile with --image-digests images/digests.json "
                     "(written by images/build.sh --push) or submit with --no-cache")
    return Check("image-digests", "ok", "every image referenced by digest")


def _images(cfg: RunConfig) -> Check:
    refs = [getattr(cfg.images, n) for n in IMAGE_NAMES]
    bad = [r for r in refs if r.startswith(PLACEHOLDER_REGISTRY + "/")]
    if bad:
        return Check("images", "FAIL", f"{len(bad)} image(s) under the placeholder {PLACEHOLDER_REGISTRY}: set "
                     f"MASA_IMAGE_REGISTRY (as for images/build.sh), --image-registry or --set images.*")
    return Check("images", "ok", ", ".join(refs))


def _store(cfg: RunConfig) -> Check:
    if not cfg.store:
        return Check("store", "FAIL", "not set: a cluster run needs --store s3://YOUR-BUCKET/prefix")
    if not cfg.store.startswith("s3://"):
        return Check("store", "FAIL", f"{cfg.store!r} is a local path: each step runs in its own pod; use s3://")
    return Check("store", "ok", cfg.store)


def _secret(cfg: RunConfig, platform: dict) -> Check:
    """Every step pod references the Secret with exactly the required keys, the endpoint optional."""
    secret = cfg.resources.s3_secret
    if not secret:
        return Check("s3-secret", "FAIL", "resources.s3_secret is empty: pods get no S3 credentials")
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, e in executors.items():
        refs = [r for r in e.get("secretAsEnv", []) if r.get("secretName") == secret]
        required = {k["secretKey"] for r in refs if not r.get("optional") for k in r["keyToEnv"]}
        optional = {k["secretKey"] for r in refs if r.get("optional") for k in r["keyToEnv"]}
        if required != set(SECRET_KEYS) or not optional <= set(SECRET_OPTIONAL_KEYS):
            return Check("s3-secret", "FAIL", f"{name}: requires {sorted(required)} of Secret {secret!r}, "
                         f"expected {list(SECRET_KEYS)} (+ optional {list(SECRET_OPTIONAL_KEYS)})")
    return Check("s3-secret", "ok", f"{len(executors)} executors read Secret {secret!r}: "
                 f"{', '.join(SECRET_KEYS)} (+ optional {', '.join(SECRET_OPTIONAL_KEYS)})")


def _gpus(cfg: RunConfig) -> Check:
    # RunConfig already refuses a tensor-parallel size that would leave a step's GPUs idle; this line
    # shows how each step uses what it asks for (masa.config.engine_parallelism, the one place it is set)
    r = cfg.resources
    engines = {s: engine_parallelism(cfg, s) for s in ("rollout", "benchmark")}
    shape = ", ".join(f"{s} {getattr(r, f'{s}_gpus')} ({e.replicas} engine(s) x TP {e.tensor_parallel_size})"
                      for s, e in engines.items())
    where = f"{r.train_nodes} TrainJob node(s) x {r.train_gpus}" if r.train_nodes > 1 else f"{r.train_gpus}"
    return Check("gpus", "ok", f"{shape}, train {where} GPU(s) for {cfg.train_processes} rank(s) per node")


def _hub_ids(cfg: RunConfig) -> Check:
    """The images set HF_HUB_OFFLINE=1: a hub id fails at `prepare`, the data filter or a benchmark."""
    named = {"model": cfg.model, "data.train": cfg.data.train}
    named.update({f"benchmark.datasets[{i}]": d for i, d in enumerate(cfg.benchmark.datasets)})
    if cfg.data.heldout:
        named["data.heldout"] = cfg.data.heldout
    # latest:<name> is read from the registry in the (s3://) store (masa.storage.registry)
    hub = [k for k, v in named.items() if v != "toy" and not v.startswith(("s3://", "latest:"))]
    if hub and cfg.resources.stage_inputs:
        token = cfg.resources.hf_token_secret
        return Check("inputs", "ok", f"{', '.join(hub)}: copied into the store by the stage step (its pod needs "
                     "egress to huggingface.co" + (f"; HF_TOKEN from Secret {token!r})" if token else
                                                   "; gated repositories need resources.hf_token_secret)"))
    if hub:
        return Check("inputs", "FAIL", f"{', '.join(hub)}: not s3:// URIs; step images run offline "
                     f"(HF_HUB_OFFLINE=1) and local paths do not exist in step pods: copy them to the store "
                     f"first (masa stage, docs/deploy.md step 3) or set resources.stage_inputs: true")
    return Check("inputs", "ok", "model, data and benchmarks are read from the store (or built in)")


def _size(texts: list[str]) -> Check:
    """The largest run against the task bound (docs/deploy.md, "Bounded runs") and the object size."""
    def tasks(text: str) -> int:
        spec = next(yaml.safe_load_all(text))
        dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
        return sum(len(d.get("tasks", {})) for d in dags)

    size, n = max(len(t.encode()) for t in texts), max(tasks(t) for t in texts)
    # the Workflow is not built here (KFP's Go compiler does it server-side): the IR is a lower bound
    status = ("FAIL" if size > MAX_OBJECT_BYTES or n > MAX_TASKS_PER_RUN
              else "warn" if size > MAX_OBJECT_BYTES / 3 else "ok")
    return Check("size", status, f"{len(texts)} run(s), the largest {n} tasks (at most {MAX_TASKS_PER_RUN}), "
                 f"IR {size / 2**20:.2f} MiB; the Workflow KFP makes from it (up to ~3x the IR, "
                 f"kubeflow/pipelines#13738) must fit one Kubernetes object ({MAX_OBJECT_BYTES / 2**20:.1f} MiB, "
                 "etcd's default)")


def checks(cfg: RunConfig, version: tuple[int, int] = MIN_BACKEND) -> list[Check]:
    """Every offline check, compiling each distinct run of the configuration (`RunConfig.segments`) once."""
    with tempfile.TemporaryDirectory() as d:
        texts = [compile_pipeline(cfg, Path(d) / f"p{i}.yaml", i).read_text() for i in distinct_segments(cfg)]
    _, platform = yaml.safe_load_all(texts[0])
    sa = cfg.resources.service_account
    out = [_images(cfg), _pinning(cfg), _store(cfg), _secret(cfg, platform), _gpus(cfg), _hub_ids(cfg),
           Check("service-account", "ok" if sa else "FAIL",
                 f"runs submitted by masa use {sa!r}; a run started from the UI needs it chosen there" if sa
                 else "resources.service_account is empty: the train step cannot create TrainJobs")]
    out.append(_size(texts))
    fmt = ".".join(map(str, version))
    try:
        _, warnings = for_backend(platform, version)
    except ValueError as e:
        out.append(Check("backend", "FAIL", str(e)))
    else:
        out += [Check("backend", "warn", w) for w in warnings] or [
            Check("backend", "ok", f"KFP backend {fmt} reads every field the IR uses")]
    return out
