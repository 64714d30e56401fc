"""The train step's side of a serving TrainJob (`resources.train_service: true`; the ranks are
masa.train.listen): the first train task of a branch creates the job, every train task of that branch,
across the training's bounded runs, sends it its round, and the training's last round stops it.

Where the job is: node 0's pod, found by the JobSet labels the Trainer puts on its pods; rank 0 listens
on `port` of the pod's IP. Who may talk to it: whoever holds the key, a random token that the creating
step writes to the run's store (`key_uri`) and the ranks read from it, so only pods with the run's
store credentials can drive the trainer (manifests/networkpolicy.yaml also limits who reaches the port).
The job's name comes from the run and the branch, so each train task of the run finds the same job; a
job that ended (its ranks failed, or stopped after `idle_s`) is deleted and created afresh, and its
rounds start from the store as a one-shot TrainJob's do.

There is no cluster in CI: tests validate the manifest against the TrainJob schema and drive real
listening ranks (2 gloo processes, DeepSpeed) through `ServedTrainer` at a loopback address given in
place of the pod's; `job_address` runs against a recording STAND-IN of the two APIs, the real API only
on a cluster.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from multiprocessing.connection import Client
from pathlib import Path

from masa.storage import open_store
from masa.train.handover import receive_files
from masa.train.launch import TrainingFailed
from masa.train.spec import HeldBy, ListenSpec, TrainCall
from masa.train.trainjob import (
    GROUP,
    INDEX_LABEL,
    JOBSET_LABEL,
    PLURAL,
    VERSION,
    TrainJobSettings,
    delete_job,
    job_outcome,
    kube_apis,
    trainjob_manifest,
)

LISTEN_COMMAND = ["torchrun", "-m", "masa.train.listen"]


def _split(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return parent, name


def ensure_key(uri: str) -> bytes:
    """The connection key at `uri` in the store, written first if there is none."""
    parent, name = _split(uri)
    store = open_store(parent)
    if not store.exists(name):
        store.put_bytes(name, secrets.token_hex(32).encode())
    return store.get_bytes(name)


def read_key(uri: str) -> bytes:
    parent, name = _split(uri)
    return open_store(parent).get_bytes(name)


def service_manifest(name: str, listen: ListenSpec, s: TrainJobSettings) -> dict:
    """The serving TrainJob: the one-shot TrainJob's shape (runtime, resources, S3 credentials), its
    ranks running masa.train.listen instead of one round."""
    return trainjob_manifest(name, listen.to_dict(), s, command=LISTEN_COMMAND,
                             labels={"app.kubernetes.io/instance": "trainer-service"})


def running_address(held_by: HeldBy, *, apis=None) -> tuple[str, int] | None:
    """(node 0's pod IP, port) of the serving TrainJob `held_by` names, if it is running; None if not."""
    _, core = apis or kube_apis()
    selector = f"{JOBSET_LABEL}={held_by.job},{INDEX_LABEL}=0"
    pods = [p for p in core.list_namespaced_pod(held_by.namespace, label_selector=selector).items
            if p.status.phase == "Running" and p.status.pod_ip]
    return (pods[0].status.pod_ip, held_by.port) if pods else None


def job_address(manifest: dict, port: int, *, apis=None, poll_s: float = 5.0, timeout_s: float = 1800.0) -> tuple[str, int]:
    """(node 0's pod IP, port) of the serving TrainJob `manifest`, created first where there is none or
    the one there has ended."""
    api, core = apis or kube_apis()
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    try:
        state, _ = job_outcome(api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))
    except Exception as e:  # noqa: BLE001 - 404: none yet
        if getattr(e, "status", None) != 404:
            raise
        state = None
    if state in ("complete", "failed"):  # stopped when idle, or its ranks failed: a fresh one
        delete_job(api, name, ns)
        state = None
    if state is None:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        address = running_address(HeldBy(job=name, namespace=ns, port=port, key_uri=""), apis=(api, core))
        if address:
            return address
        time.sleep(poll_s)
    raise TrainingFailed(f"the trainer TrainJob {ns}/{name} had no running node-0 pod after {timeout_s:.0f} s")


class ServedTrainer:
    """A connection to a serving TrainJob's rank 0."""

    def __init__(self, address: tuple[str, int], key: bytes, *, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:  # rank 0 listens once its process group is up: the pod may be Running before that
            try:
                self._conn = Client(address, authkey=key)
                self._connect = lambda: Client(address, authkey=key)  # a hand-over's further streams
                return
            except (ConnectionRefusedError, OSError) as e:
                if time.monotonic() > deadline:
                    raise TrainingFailed(f"no trainer listening at {address[0]}:{address[1]}: {e}") from e
                time.sleep(1.0)

    def _call(self, op: str, arg=None):
        try:
            self._conn.send((op, arg))
            status, value = self._conn.recv()
        except (EOFError, OSError) as e:
            raise TrainingFailed(f"the serving TrainJob stopped answering ({type(e).__name__}); "
                                 "its node-0 pod's log says why") from e
        if status != "ok":
            raise TrainingFailed(f"the serving TrainJob refused {op!r}: {value}")
        return value

    def held(self) -> str | None:
        return self._call("held")

    def train(self, call: TrainCall, on_line: Callable[[str], None] | None = None) -> dict:
        """Send one round; stream its metrics lines to `on_line`; returns {"held": whether it continued
        from the engine the ranks held, "identity": the new model's manifest digest, "global_step"}.
        Raises TrainingFailed with the ranks' error."""
        try:
            self._conn.send(("train", call.to_dict()))
            while True:
                status, value = self._conn.recv()
                if status == "line":
                    on_line(value) if on_line else None
                elif status == "done":
                    return value
                else:
                    raise TrainingFailed(f"the serving TrainJob's round failed:\n{value}")
        except (EOFError, OSError) as e:
            raise TrainingFailed(f"the serving TrainJob stopped during the round ({type(e).__name__}); "
                                 "its node-0 pod's log says why") from e

    def fetch(self, identity: str, dest: Path, *, light: bool = False) -> Path:
        """The checkpoint `identity` as rank 0 holds it (masa.train.handover, on streams of their own),
        verified, under `dest`."""
        try:
            return receive_files(self._connect, identity, dest, light)
        except (EOFError, OSError) as e:
            raise TrainingFailed(f"the serving TrainJob stopped during a hand-over ({type(e).__name__})") from e

    def stop(self) -> list[str]:
        """Wait for its background uploads and end its ranks; the uploads that failed, a line each."""
        return self._call("stop")

    def close(self) -> None:
        self._conn.close()
