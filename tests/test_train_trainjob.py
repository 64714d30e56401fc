"""The TrainJob request of multi-node training, checked offline (no cluster here).

What is checked: the object validates against the TrainJob schema the repository ships
(manifests/schemas, hand-derived from the kubeflow/trainer CRD, additionalProperties false), its
trainer fields against the official core Kubernetes types, and it references the runtime that
manifests/trainingruntime.yaml installs, with the same worker command. What is not: the API server's
admission and a real run; the worker path the job starts is run for real in tests/test_train_dist.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from masa.configbase import from_dict
from masa.train.config import TrainConfig
from masa.train.inputs import round_request
from masa.train.trainjob import RUNTIME, TrainJobSettings, job_name, job_outcome, trainjob_manifest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = TrainJobSettings(image="ghcr.io/masa-pipeline/masa-deepspeed:0.1.0", num_nodes=4, proc_per_node=8)
CFG = TrainConfig(steps_per_round=2, zero_stage=3)


def _manifest():
    req = round_request("s3://run/ckpt/r0", "s3://run/scored/r0/scored.parquet", None, "s3://run/ckpt/r1", CFG,
                        resume_root="s3://run/resume/r1")
    return trainjob_manifest(job_name("masa", "masa-efficient", "round", 1), req, SETTINGS)


def test_request_validates_against_the_trainjob_schema():
    schema = json.loads((ROOT / "manifests" / "schemas" / "trainjob.v1alpha1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_manifest())
    bad = _manifest()
    bad["spec"]["trainer"]["numProcsPerNode"] = bad["spec"]["trainer"].pop("numProcPerNode")
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


def test_trainer_fields_are_valid_core_types():
    import kubernetes_validate

    t = _manifest()["spec"]["trainer"]
    container = {"name": "node", "image": t["image"], "command": t["command"], "args": t["args"],
                 "env": t["env"], "resources": t["resourcesPerNode"]}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                                  "template": {"spec": {"containers": [container]}}}, "1.34.0", strict=True)


def test_request_references_the_shipped_runtime_and_carries_the_round():
    runtime = yaml.safe_load((ROOT / "manifests" / "trainingruntime.yaml").read_text())
    m = _manifest()
    assert m["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                       "name": runtime["metadata"]["name"]} and RUNTIME == "masa-deepspeed"
    assert m["metadata"]["namespace"] == runtime["metadata"]["namespace"]
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert m["spec"]["trainer"]["command"] == node["containers"][0]["command"]
    t = m["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (4, 8)
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    req = json.loads(t["args"][0])
    assert req["remote"] is True and req["out"] == "s3://run/ckpt/r1" and req["experts"] is None
    assert from_dict(TrainConfig, req["cfg"]) == CFG  # the settings survive the trip
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in t["env"]}
    assert secrets == {"masa-s3-credentials"}


def test_job_name_is_dns_1035():
    assert job_name("masa", "MASA_efficient", "round", 3) == "masa-masa-efficient-round-3"
    assert job_name(7, "x") == "t-7-x"
    assert len(job_name("a" * 100)) == 63


@pytest.mark.parametrize("status, expected", [
    ({}, ("running", "")),
    ({"conditions": [{"type": "Created", "status": "True"}]}, ("running", "")),
    ({"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}, ("complete", "done")),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "JobsFailed",
                      "message": "jobset node failed: rank 3 exited 1"}]},
     ("failed", "JobsFailed: jobset node failed: rank 3 exited 1")),
])
def test_job_outcome_reads_conditions(status, expected):
    assert job_outcome({"status": status}) == expected


def test_settings_are_checked():
    with pytest.raises(ValueError, match="num_nodes"):
        TrainJobSettings(image="x", num_nodes=0, proc_per_node=1)


def test_paper_on_two_nodes_submits_a_valid_trainjob_with_zero3_bf16_and_token_micro_batches():
    # the TrainJob the train step submits for `paper` with train_nodes: 2, built by the same calls
    # (masa.steps.train._train → train_round_trainjob), then the DeepSpeed config the workers derive
    import torch

    from masa.config import load_config
    from masa.runner.settings import train_settings, trainjob_settings
    from masa.train.inputs import ds_config_path
    from masa.train.worker import _ds_config

    cfg = load_config("paper", ["resources.train_nodes=2"])
    tcfg = train_settings(cfg, "masa-efficient", 4)
    req = round_request("s3://b/r/ckpt/3", "s3://b/r/scored/4/scored.parquet", "s3://b/r/scored/4/experts.parquet",
                        "s3://b/r/ckpt/4", tcfg, resume_root="s3://b/r/resume/4")
    m = trainjob_manifest(job_name("run", "masa-efficient", 4), req, trainjob_settings(cfg))
    for kind, obj in (("trainjob", m), ("trainingruntime",
                                         yaml.safe_load((ROOT / "manifests" / "trainingruntime.yaml").read_text()))):
        schema = json.loads((ROOT / "manifests" / "schemas" / f"{kind}.v1alpha1.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
    t = m["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (2, 8) and t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    assert t["image"] == cfg.images.deepspeed
    sent = from_dict(TrainConfig, json.loads(t["args"][0])["cfg"])
    assert sent == tcfg and sent.max_tokens_per_microbatch == 16384  # micro-batches packed by tokens
    # on GPU the worker trains in bf16 unless told float32 (masa.train.worker._device_and_dtype)
    assert sent.dtype in ("auto", "bfloat16")
    ds = _ds_config(ds_config_path(sent.zero_stage), sent, torch.bfloat16)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"] == {"enabled": True}
    assert ds["train_micro_batch_size_per_gpu"] == 1  # one token-packed micro-batch per rank and step
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # bf16 consolidated save
