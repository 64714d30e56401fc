"""`masa stage` (issue 19, item 3) against the real S3 server (SeaweedFS on loopback). The hub download
itself needs the network, which tests do not have: they stage a local model directory and a local JSONL
file through the same upload, naming and read-back path; the hub path differs only in where the files
come from (huggingface_hub.snapshot_download / datasets.load_dataset at the resolved commit sha)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from masa.data.records import read_rows
from masa.steps.stage import stage_dataset, stage_model, staged_key
from masa.storage.models import resolve_model


@pytest.fixture
def store(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.make_bucket("stage-test")
    return "s3://stage-test/runs"


def test_staged_keys_are_named_by_source_and_pinned_revision():
    assert staged_key("models", "Qwen/Qwen3-8B-Base", "0123456789abcdef") == "staged/models/qwen-qwen3-8b-base@0123456789ab"


def test_a_staged_model_resolves_from_the_store_and_restaging_is_idempotent(store, tiny_model_dir, tmp_path):
    uri = stage_model(str(tiny_model_dir), store)
    assert uri.startswith("s3://stage-test/runs/staged/models/")
    local = resolve_model(uri, cache_dir=str(tmp_path / "cache"))  # verified against MANIFEST.json
    assert (tiny_model_dir / "config.json").read_bytes() == (Path(local) / "config.json").read_bytes()
    assert stage_model(str(tiny_model_dir), store) == uri  # same content, same revision, same key


def test_a_staged_dataset_reads_back_row_for_row(store, tmp_path):
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    src = tmp_path / "bench.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    uri = stage_dataset(str(src), store, split="test")
    assert uri.endswith("/test.parquet") and "/staged/data/bench@" in uri
    assert read_rows(uri, cache_dir=str(tmp_path / "c")) == rows


def test_stage_cli_names_the_source_it_cannot_stage(store):
    r = subprocess.run([sys.executable, "-m", "masa.cli", "stage", "model", "/nonexistent/model", "--store", store],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("masa stage: /nonexistent/model:")


def test_the_stage_step_replaces_every_input_by_its_staged_copy(store, tiny_model_dir, tmp_path):
    # resources.stage_inputs: the pipeline's stage step hands later steps a configuration that names only
    # store URIs (the same path as `masa stage`; local sources stand in for hub ids, see the docstring)
    from masa.config import load_config
    from masa.steps.stage import stage_inputs

    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"problem": f"{i}+{i}?", "answer": str(2 * i)}) + "\n" for i in range(4)))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    cfg = load_config("smoke", [f"store={store}", f"model={tiny_model_dir}", f"data.train={rows}",
                                f"benchmark.datasets=[{bench},toy]", "resources.stage_inputs=true"])
    staged = stage_inputs(cfg)
    assert staged.model.startswith(f"{store}/staged/models/")
    assert staged.data.train.startswith(f"{store}/staged/data/train@") and staged.data.heldout == "toy"
    assert staged.benchmark.datasets[0].startswith(f"{store}/staged/data/bench@") and staged.benchmark.datasets[1] == "toy"
    assert [r["answer"] for r in read_rows(staged.data.train)] == ["0", "2", "4", "6"]
    assert stage_inputs(staged) == staged  # store URIs are left as they are: a rerun stages nothing twice
    assert stage_inputs(cfg) == staged  # and restaging the same content lands on the same keys


def test_a_compiled_stage_step_reaches_the_hub_and_feeds_every_later_step(tmp_path):
    import yaml

    from masa.config import load_config
    from masa.pipeline.compile import compile_pipeline
    from masa.pipeline.preflight import checks

    cfg = load_config("paper", ["store=s3://my-bucket/runs", "resources.stage_inputs=true",
                                "resources.hf_token_secret=hf-token", "rounds=2"])
    spec, platform = yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["stage"]["inputs"]["parameters"]["config_json"]["taskOutputParameter"]["producerTask"] == "configure"
    for later in ("prepare", "data-filter"):
        assert tasks[later]["inputs"]["parameters"]["config_json"]["taskOutputParameter"]["producerTask"] == "stage"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-configure", "exec-stage"):  # hub access: offline lifted, the token optional
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][name]["container"]["env"]}
        assert env["HF_HUB_OFFLINE"] == "0", name
        token = [s for s in executors[name]["secretAsEnv"] if s["secretName"] == "hf-token"]
        assert token == [{"keyToEnv": [{"envVar": "HF_TOKEN", "secretKey": "HF_TOKEN"}], "optional": True,
                          "secretName": "hf-token", "secretNameParameter": {"runtimeValue": {"constant": "hf-token"}}}]
    assert "HF_HUB_OFFLINE" not in str(spec["deploymentSpec"]["executors"]["exec-prepare"]["container"].get("env"))
    inputs = next(c for c in checks(cfg) if c.name == "inputs")
    assert inputs.status == "ok" and "copied into the store by the stage step" in inputs.message
    assert len(tasks) == cfg.fixed_tasks + 3 * 2 * len(cfg.branches) + len(cfg.branches) + 3  # run_tasks counts it
