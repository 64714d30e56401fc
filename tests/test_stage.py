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
