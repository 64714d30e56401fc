"""The serving TrainJob (`resources.train_service`): its ranks (masa.train.listen) on real DeepSpeed, 2 gloo
CPU processes, reading and writing the real SeaweedFS S3 server, driven as the train step drives them
(masa.runner.training.train_round_served). There is no cluster here: the ranks are started as torchrun
would start them on node 0, and the step is given their loopback address in place of node 0's pod IP;
the Kubernetes side (create the job, find node 0's pod) runs against a recording STAND-IN of the two
APIs, and the job object is validated against the TrainJob schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import torch

from masa.runner import layout
from masa.runner.layout import Pointer
from masa.runner.training import train_round, train_round_served
from masa.storage import CheckpointError, open_store, put_dir_atomic
from masa.train import checkpoint as ckpt
from masa.train.config import TrainConfig
from masa.train.launch import _free_port, rank_env, worker_env
from masa.train.served import ServedTrainer, ensure_key, job_address, read_key, service_manifest
from masa.train.spec import HeldBy, ListenSpec
from masa.train.trainjob import TrainJobSettings

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainConfig(lr=1e-3, warmup_steps=2, steps_per_round=2, max_tokens_per_microbatch=48, seed=3, bc_coef=0.1)
SETTINGS = TrainJobSettings(image="ghcr.io/masa-pipeline/masa-deepspeed:0.1.0", num_nodes=1, proc_per_node=8)


def _weights(d) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(d) / "model.safetensors"))


def _rows(steps: list[dict]) -> list[dict]:
    drop = ("seconds", "tokens_per_s", "restored_from")
    return [{k: v for k, v in r.items() if k not in drop} for r in steps]


def _start_ranks(listen: ListenSpec, env: dict[str, str], log: Path) -> list[subprocess.Popen]:
    """Two ranks of `torchrun -m masa.train.listen` on one node (the environment torchrun gives them)."""
    master = _free_port()
    with log.open("w") as out:
        return [subprocess.Popen([sys.executable, "-m", "masa.train.listen", json.dumps(listen.to_dict())],
                                 env=worker_env(2, {**rank_env(r, 2, master), **env}), stdout=out,
                                 stderr=subprocess.STDOUT) for r in range(2)]


@pytest.mark.slow
def test_rounds_on_the_serving_trainjob_equal_cold_rounds(train_data, s3_server, monkeypatch, tmp_path):
    d = train_data
    cold = tmp_path / "cold"
    c1 = train_round(d["model"], d["scored"], d["experts"], str(cold / "r1"), CFG, nproc=2)
    c2 = train_round(str(cold / "r1"), d["scored"], d["experts"], str(cold / "r2"), CFG, nproc=2)

    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3_server.make_bucket("served")
    store = open_store("s3://served")
    put_dir_atomic(store, d["model"], "base")
    store.put_file(d["scored"], "in/scored.parquet")
    store.put_file(d["experts"], "in/experts.parquet")
    listen = ListenSpec(port=_free_port(), key_uri="s3://served/run/b/trainer.key", idle_s=300, beat_s=2,
                        work_dir=str(tmp_path / "node"))
    ensure_key(listen.key_uri)  # the step that creates the job writes the key first
    ranks = _start_ranks(listen, env, tmp_path / "ranks.log")
    try:
        def round_(model: str, out: str, state: str, last: bool, expects: str | None = None) -> dict:
            return train_round_served(f"s3://served/{model}", "s3://served/in/scored.parquet",
                                      "s3://served/in/experts.parquet", f"s3://served/{out}", CFG, settings=SETTINGS,
                                      name="trainer-run-b", listen=listen, state=state, last=last,
                                      expects=expects, address=("127.0.0.1", listen.port))

        w1 = round_("base", "r1", "keep", False)  # the state stays on the ranks
        # the next steps take round 1's model from rank 0 while its upload may still run
        trainer = ServedTrainer(("127.0.0.1", listen.port), read_key(listen.key_uri))
        try:
            handed = trainer.fetch(w1["identity"], tmp_path / "handed")
            light = trainer.fetch(w1["identity"], tmp_path / "light", light=True)
            with pytest.raises(RuntimeError, match="cannot hand over"):
                trainer.fetch("0" * 64, tmp_path / "nothing")
        finally:
            trainer.close()
        # the steps' side (masa.runner.layout): a pointer to a model whose store copy is incomplete, held
        # by the job; node 0's pod lookup is a STAND-IN returning the loopback address
        ptr = Pointer(store="s3://served", prefix="uploading/r1", kind="checkpoint", digest=w1["identity"],
                      held_by=HeldBy("trainer-run-b", "masa", listen.port, listen.key_uri))
        monkeypatch.setattr(layout, "running_address", lambda held: ("127.0.0.1", held.port))
        stepped = (layout.local_model(ptr, tmp_path / "cache"), layout.policy_tokenizer(ptr, tmp_path / "cache"))
        monkeypatch.setattr(layout, "running_address", lambda held: None)  # the job is gone
        with pytest.raises(CheckpointError, match="resubmit the run"):
            layout.local_model(ptr, tmp_path / "cache2")
        # a run's last round: its state uploads in the background and the job stays up for the next run
        w2 = round_("r1", "r2", "background", False, expects=w1["identity"])
        # the next run's first round, which is the training's last: it continues from the held engine,
        # then the stop waits for every upload and the ranks exit
        w3 = round_("r2", "r3", "background", True, expects=w2["identity"])
        codes = [p.wait(timeout=120) for p in ranks]
    finally:
        for p in ranks:
            p.kill() if p.poll() is None else None
    log = (tmp_path / "ranks.log").read_text()
    assert codes == [0, 0], log[-3000:]
    assert not (tmp_path / "node").exists()  # the ranks gave their scratch back
    assert [r["restored_from"] for r in w2["steps"]] == ["service:2", "service:2"]  # no state loaded
    assert [r["restored_from"] for r in w3["steps"]] == ["service:4", "service:4"]  # across the runs too
    assert _rows(w1["steps"]) == _rows(c1["steps"]) and _rows(w2["steps"]) == _rows(c2["steps"])
    for r in ("r1", "r2"):
        got, want = _weights(ckpt.fetch_verified(f"s3://served/{r}", tmp_path / r)), _weights(cold / r)
        assert all(torch.equal(got[k], want[k]) for k in want), r
    assert w2["global_step"] == c2["global_step"] == 4
    # the hand-over named each model by the digest of the manifest later committed, and gave its bytes
    assert (w1["identity"], w2["identity"]) == (ckpt.identity("s3://served/r1"), ckpt.identity("s3://served/r2"))
    stored = ckpt.fetch_verified("s3://served/r1", tmp_path / "stored")
    files = sorted(f.name for f in stored.iterdir())
    assert sorted(f.name for f in handed.iterdir()) == files
    assert all((handed / f).read_bytes() == (stored / f).read_bytes() for f in files)
    assert sorted(f.name for f in light.iterdir()) == [f for f in files if f != "model.safetensors" and f != "MANIFEST.json"]
    assert all((stepped[0] / f).read_bytes() == (stored / f).read_bytes() for f in files)
    assert sorted(f.name for f in stepped[1].iterdir()) == sorted(f.name for f in light.iterdir())
    # round 1's state never left the ranks; round 2's reached the store after the step, complete
    assert not store.list("r1/train_state/")
    assert json.loads((tmp_path / "r1" / "train_state.json").read_text())["state"] == "keep"
    for r, step in (("r2", 4), ("r3", 6)):  # each run's last state reached the store, complete
        assert ckpt.is_complete(f"s3://served/{r}/train_state")
        assert json.loads(store.get_bytes(f"{r}/train_state/train_state.json"))["global_step"] == step


def test_the_serving_trainjob_is_a_valid_trainjob_running_the_listening_ranks():
    schema = json.loads((ROOT / "manifests" / "schemas" / "trainjob.v1alpha1.json").read_text())
    listen = ListenSpec(port=29600, key_uri="s3://run/b/trainer.key")
    m = service_manifest("trainer-run-b", listen, SETTINGS)
    jsonschema.Draft202012Validator(schema).validate(m)
    t = m["spec"]["trainer"]
    assert t["command"] == ["torchrun", "-m", "masa.train.listen"]
    assert ListenSpec.from_dict(json.loads(t["args"][0])) == listen
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}


class _Api:
    """STAND-IN for CustomObjectsApi + CoreV1Api: records calls; a job's state and its pods are given."""

    def __init__(self, state: str | None, pods: list) -> None:
        self.state, self.pods, self.calls = state, pods, []

    def get_namespaced_custom_object(self, *a):
        self.calls.append("get")
        if self.state is None:
            raise type("ApiException", (Exception,), {"status": 404})()
        cond = {"complete": [{"type": "Complete", "status": "True"}], "running": []}[self.state]
        return {"status": {"conditions": cond}}

    def create_namespaced_custom_object(self, *a):
        self.calls.append("create")

    def delete_namespaced_custom_object(self, *a, **k):
        self.calls.append("delete")

    def list_namespaced_pod(self, ns, label_selector):
        self.calls.append(label_selector)
        return SimpleNamespace(items=self.pods)


@pytest.mark.parametrize("state, calls", [(None, ["get", "create"]), ("running", ["get"]),
                                          ("complete", ["get", "delete", "create"])])
def test_the_step_finds_the_job_or_creates_it(state, calls):
    """None there: created. Running: reused, as every round of the run does. Ended (stopped when idle,
    or failed): deleted and created afresh."""
    pod = SimpleNamespace(status=SimpleNamespace(phase="Running", pod_ip="10.0.0.7"))
    api = _Api(state, [pod])
    m = service_manifest("trainer-run-b", ListenSpec(port=29600, key_uri="s3://x/k"), SETTINGS)
    assert job_address(m, 29600, apis=(api, api), poll_s=0) == ("10.0.0.7", 29600)
    assert api.calls[:-1] == calls
    assert api.calls[-1] == "jobset.sigs.k8s.io/jobset-name=trainer-run-b,batch.kubernetes.io/job-completion-index=0"
