"""Multi-node training through a Kubeflow Trainer v2 `TrainJob` on the `masa-deepspeed` runtime.

The TrainJob references the namespaced TrainingRuntime `masa-deepspeed` (manifests/trainingruntime.yaml:
mlPolicy torch, so the Trainer sets torchrun's PET_NNODES / PET_NODE_RANK / PET_MASTER_ADDR ...) and
runs `torchrun -m masa.train.worker '<request JSON>'` on every node. The request carries URIs and
`"remote": true`: the workers stage inputs and publish outputs themselves (masa.train.remote), so no
volume is shared between the step's pod and the nodes; S3 credentials come from the Secret named in
the settings. We create the job with the Kubernetes API (CustomObjectsApi; RBAC: trainjobs
create/get/delete, pods list, pods/log get) in the step pod's own namespace, named uniquely per
attempt, poll its conditions, stream rank 0's log (metrics rows included), fail with the job's own
error message, and delete it however the step ends (SIGTERM from a cancelled run included).

There is no cluster in CI: tests check the request against the TrainJob schema and run the very
worker path the job runs (remote request, 2 local ranks); `follow` runs against a recording STAND-IN
of the two API objects (tests/test_train_trainjob.py), the real API only on a cluster.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from masa.storage.s3 import SECRET_KEYS, SECRET_OPTIONAL_KEYS
from masa.train.launch import TrainingFailed
from masa.train.spec import RoundRequest

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "masa-deepspeed"
WORKER_COMMAND = ["torchrun", "-m", "masa.train.worker"]
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"  # the Trainer runs a TrainJob as a JobSet of its name
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class TrainJobSettings:
    """Where and how big: one TrainJob node = one pod with `proc_per_node` ranks (GPUs)."""

    image: str
    num_nodes: int
    proc_per_node: int
    namespace: str = "masa"  # the step passes its own pod's namespace (`current_namespace`)
    runtime: str = RUNTIME
    accelerator: str = "nvidia.com/gpu"
    cpu: str = "8"
    memory: str = "64Gi"
    s3_secret: str = "masa-s3-credentials"

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.proc_per_node < 1:
            raise ValueError(f"num_nodes and proc_per_node must be >= 1, got {self.num_nodes}, {self.proc_per_node}")


def job_name(*parts: str | int, attempt: str | None = None) -> str:
    """A DNS-1035 name (lower case, '-', starts with a letter, <= 63 chars) from the parts. `attempt`
    (kept whole, at the end) makes each try of a step unique: a retry never meets 409 AlreadyExists."""
    suffix = f"-{attempt}" if attempt else ""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")
    name = ("t-" + name if not name[:1].isalpha() else name)[:63 - len(suffix)].rstrip("-")
    return (name or "masa-train") + suffix


def new_attempt() -> str:
    """A short random id for `job_name(attempt=...)`."""
    import secrets

    return secrets.token_hex(3)


def current_namespace(path: str = SA_NAMESPACE_FILE) -> str:
    """The namespace of the pod we run in (a Kubeflow profile namespace, say): the service account's
    mounted namespace file, else the kubeconfig context's namespace, else "default"."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        pass
    try:
        from kubernetes import config

        _, ctx = config.list_kube_config_contexts()
        return (ctx or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig either: the API server's default
        return "default"


def trainjob_manifest(name: str, request: RoundRequest | dict, s: TrainJobSettings, *, labels: dict | None = None,
                      command: list[str] = WORKER_COMMAND) -> dict:
    """The TrainJob object for one round (`request`: masa.train.inputs.round_request), or, with
    another `command` and a dict (masa.train.served), a job whose ranks take that JSON argument."""
    arg = request.to_dict(remote=True) if isinstance(request, RoundRequest) else request
    gpus = {s.accelerator: str(s.proc_per_node)} if s.accelerator else {}

    env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": s.s3_secret, "key": k,
                                                      **({"optional": True} if k in SECRET_OPTIONAL_KEYS else {})}}}
           for k in SECRET_KEYS + SECRET_OPTIONAL_KEYS]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": s.namespace,
                     "labels": {"app.kubernetes.io/part-of": "masa-pipeline",
                                "app.kubernetes.io/component": "train", **(labels or {})}},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": s.runtime},
            "trainer": {
                "image": s.image,
                "command": list(command),
                "args": [json.dumps(arg, separators=(",", ":"))],
                "numNodes": s.num_nodes,
                "numProcPerNode": s.proc_per_node,
                "resourcesPerNode": {"requests": {"cpu": s.cpu, "memory": s.memory, **gpus},
                                     "limits": dict(gpus)},
                "env": env,
            },
        },
    }


def job_outcome(obj: dict) -> tuple[str, str]:
    """("complete" | "failed" | "running", message) from a TrainJob's status conditions."""
    conds = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    failed = conds.get("Failed")
    if failed and failed.get("status") == "True":
        return "failed", f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
    done = conds.get("Complete")
    if done and done.get("status") == "True":
        return "complete", done.get("message", "")
    return "running", ""


def _stream_rank0_log(core, name: str, ns: str, on_line: Callable[[str], None], stop: threading.Event) -> None:
    """Follow the log of node 0's pod (rank 0 prints the metrics rows) until it ends or `stop` is set."""
    selector = f"{JOBSET_LABEL}={name},{INDEX_LABEL}=0"
    while not stop.is_set():
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        running = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]
        if running:
            resp = core.read_namespaced_pod_log(running[0].metadata.name, ns, follow=True,
                                                _preload_content=False)
            for raw in resp.stream():
                for line in raw.decode(errors="replace").splitlines():
                    on_line(line)
            return
        stop.wait(5)


def kube_apis():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def delete_job(api, name: str, ns: str) -> None:
    """Delete the TrainJob (its JobSet and pods follow); already gone is fine."""
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                            body={"propagationPolicy": "Foreground"})
    except Exception as e:  # 404 after a manual delete; anything else: say so, the step's error matters more
        if getattr(e, "status", None) != 404:
            print(f"could not delete TrainJob {ns}/{name}: {e}")


@contextlib.contextmanager
def _sigterm_raises():
    """KFP cancels a run by stopping its pods (SIGTERM): raise, so `finally` deletes the TrainJob."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(f"signal {signum}: run cancelled")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def follow(manifest: dict, *, on_line: Callable[[str], None] = print, poll_s: float = 10.0,
           timeout_s: float | None = None, apis=None) -> None:
    """Create the TrainJob, stream rank 0's log, return when it completes; raise with its error if not.
    The TrainJob is deleted however this ends (complete, failed, timed out, cancelled), so nothing keeps
    GPUs after the step. `apis`: (CustomObjectsApi, CoreV1Api), default from the pod's service account."""
    api, core = apis or kube_apis()
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    stop = threading.Event()
    with _sigterm_raises():
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
        logs = threading.Thread(target=_stream_rank0_log, args=(core, name, ns, on_line, stop), daemon=True)
        logs.start()
        start = time.monotonic()
        try:
            while True:
                state, msg = job_outcome(api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))
                if state == "complete":
                    logs.join(timeout=30)
                    return
                if state == "failed":
                    raise TrainingFailed(f"TrainJob {ns}/{name} failed: {msg}")
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise TrainingFailed(f"TrainJob {ns}/{name} did not finish within {timeout_s:.0f} s; deleted it")
                time.sleep(poll_s)
        finally:
            stop.set()
            delete_job(api, name, ns)
