"""resolve_model: local directories, s3:// with a verified ETag-keyed cache, Hugging Face ids offline."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from masa.storage import (
    MANIFEST,
    CheckpointError,
    ModelNotFoundError,
    open_store,
    put_dir_atomic,
    resolve_model,
)
from masa.storage.s3 import S3Store


def make_model(root, *, weights: bytes = b"w" * 2048):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 64}')
    (root / "model.safetensors").write_bytes(weights)
    (root / "tok").mkdir(exist_ok=True)
    (root / "tok" / "tokenizer.json").write_text("{}")
    return root


def test_local_dir_returned_as_is(tmp_path):
    d = make_model(tmp_path / "m")
    assert resolve_model(str(d)) == str(d)
    assert resolve_model(d.as_uri()) == str(d)


def test_local_errors_name_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match=f"'{tmp_path}/absent'.*no such directory"):
        resolve_model(str(tmp_path / "absent"))
    (tmp_path / "noconf").mkdir()
    with pytest.raises(ModelNotFoundError, match="noconf.*no config.json"):
        resolve_model(str(tmp_path / "noconf"))
    (tmp_path / "badconf").mkdir()
    (tmp_path / "badconf" / "config.json").write_text("{truncated")
    with pytest.raises(ModelNotFoundError, match="badconf.*config.json unreadable"):
        resolve_model(str(tmp_path / "badconf"))
    with pytest.raises(ModelNotFoundError, match="unsupported scheme"):
        resolve_model("gs://bucket/model")


def test_hf_id_offline_missing_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so 'no-such-org/no-such-model' is not a local directory either
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-model'.*HF_HUB_OFFLINE=1"):
        resolve_model("no-such-org/no-such-model", cache_dir=str(tmp_path / "hf"))


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.make_bucket("masa-test")
    return f"s3://masa-test/models-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def count_downloads(monkeypatch):
    """Counts S3 objects fetched, by wrapping the real S3Store.get_file (downloads still happen)."""
    fetched: list[str] = []
    real = S3Store.get_file

    def counting(self, key, local):
        fetched.append(key)
        return real(self, key, local)

    monkeypatch.setattr(S3Store, "get_file", counting)
    return fetched


@pytest.mark.slow
@pytest.mark.parametrize("with_manifest", [True, False])
def test_s3_model_downloaded_once_then_reused(s3_env, count_downloads, tmp_path, with_manifest):
    src = make_model(tmp_path / "src")
    store = open_store(s3_env)
    if with_manifest:
        put_dir_atomic(store, str(src), "")
    else:
        for rel in ("config.json", "model.safetensors", "tok/tokenizer.json"):
            store.put_file(str(src / rel), rel)
    cache = tmp_path / "cache"
    first = resolve_model(s3_env, cache_dir=str(cache))
    assert len(count_downloads) == 3  # the three files (the manifest is read, not downloaded as a file)
    # the cache's own bookkeeping lives beside the entry: the entry is the model, which training
    # copies and republishes (issue 18: a marker inside leaked into every round's checkpoint)
    held = sorted(str(p.relative_to(first)) for p in Path(first).rglob("*") if p.is_file())
    assert held == sorted(["config.json", "model.safetensors", "tok/tokenizer.json"] + [MANIFEST] * with_manifest)
    assert (open(os.path.join(first, "model.safetensors"), "rb").read() == (src / "model.safetensors").read_bytes())
    second = resolve_model(s3_env, cache_dir=str(cache))
    assert second == first and len(count_downloads) == 3  # no second download
    # Rewriting an object changes its ETag: a new cache entry is fetched, the old one is untouched.
    store.put_file(str(make_model(tmp_path / "v2", weights=b"v" * 2048) / "model.safetensors"), "model.safetensors")
    if with_manifest:
        put_dir_atomic(store, str(tmp_path / "v2"), "")
    third = resolve_model(s3_env, cache_dir=str(cache))
    assert third != first and open(os.path.join(third, "model.safetensors"), "rb").read() == b"v" * 2048
    assert [p for p in os.listdir(cache) if p.startswith(".masa-tmp")] == []


@pytest.mark.slow
def test_s3_concurrent_resolvers_download_once(s3_env, count_downloads, tmp_path):
    put_dir_atomic(open_store(s3_env), str(make_model(tmp_path / "src")), "")
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_model(s3_env, cache_dir=str(tmp_path / "cache")))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(count_downloads) == 3  # one resolver downloaded; the others waited on the lock


@pytest.mark.slow
def test_s3_model_errors_before_any_generation(s3_env, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"s3://masa-test/.*no objects under that prefix"):
        resolve_model(s3_env + "/absent", cache_dir=str(tmp_path / "c"))
    store = open_store(s3_env)
    put_dir_atomic(store, str(make_model(tmp_path / "src")), "")
    store.put_bytes("model.safetensors", b"corrupt")  # object no longer matches the manifest
    with pytest.raises(CheckpointError, match="model.safetensors failed verification"):
        resolve_model(s3_env, cache_dir=str(tmp_path / "c"))
    assert not any(p.startswith("model") and not p.endswith(".lock") for p in os.listdir(tmp_path / "c"))
    put_dir_atomic(store, str(make_model(tmp_path / "src2")), "")
    store.delete("config.json")
    store.delete("MANIFEST.json")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(s3_env, cache_dir=str(tmp_path / "c"))
    assert [p for p in os.listdir(tmp_path / "c") if not p.endswith(".lock")] == []  # nothing cached
