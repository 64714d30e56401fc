"""Manifest-committed directory artifacts: write order, verification, incomplete prefixes.

Runs against a local store and the session S3 server (slow) through the `store` fixture.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from masa.storage import (
    MANIFEST,
    CheckpointError,
    get_dir_verified,
    is_complete,
    latest_complete,
    open_store,
    put_dir_atomic,
    read_manifest,
)
from masa.storage.base import sha256_file


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    s3.make_bucket("masa-test")
    return open_store(f"s3://masa-test/{uuid.uuid4().hex[:10]}")


def make_ckpt(root, files: dict[str, bytes]):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


FILES = {"model.safetensors": os.urandom(4096), "config.json": b'{"a": 1}', "optim/rank0.pt": b"x" * 777}


class RecordingStore:
    """A real store that records the order of writes (to check the manifest goes last)."""

    def __init__(self, inner):
        self.inner, self.writes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, local, key):
        self.writes.append(key)
        return self.inner.put_file(local, key)

    def put_bytes(self, key, data):
        self.writes.append(key)
        return self.inner.put_bytes(key, data)


def test_round_trip_with_manifest_written_last(store, tmp_path):
    src = make_ckpt(tmp_path / "src", FILES)
    rec = RecordingStore(store)
    manifest = put_dir_atomic(rec, str(src), "ckpt/step-000001", meta={"step": 1})
    assert rec.writes[-1] == f"ckpt/step-000001/{MANIFEST}"
    assert sorted(rec.writes[:-1]) == sorted(f"ckpt/step-000001/{r}" for r in FILES)
    assert set(manifest.files) == set(FILES)
    assert manifest.files["optim/rank0.pt"].size == 777
    assert manifest.files["config.json"].sha256 == sha256_file(str(src / "config.json"))[0]
    assert is_complete(store, "ckpt/step-000001")
    got = get_dir_verified(store, "ckpt/step-000001", str(tmp_path / "dst"))
    assert got == read_manifest(store, "ckpt/step-000001") and got.meta == {"step": 1}
    for rel, data in FILES.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    on_disk = json.loads((tmp_path / "dst" / MANIFEST).read_bytes())
    assert on_disk["format_version"] == 1 and on_disk["created_at"].endswith("Z")


def test_latest_complete_skips_incomplete_and_orders_numerically(store, tmp_path):
    src = make_ckpt(tmp_path / "src", FILES)
    for step in (1, 3):
        put_dir_atomic(store, str(src), f"ckpt/step-{step}")
    # step-10: files uploaded, writer died before the manifest. step-7: manifest, a file deleted.
    store.put_file(str(src / "config.json"), "ckpt/step-10/config.json")
    put_dir_atomic(store, str(src), "ckpt/step-7")
    store.delete("ckpt/step-7/model.safetensors")
    store.put_bytes("ckpt/notes-99/x", b"not a checkpoint")
    assert not is_complete(store, "ckpt/step-10") and not is_complete(store, "ckpt/step-7")
    assert latest_complete(store, "ckpt") == "ckpt/step-3"  # numeric: 10 > 7 > 3, lexical would pick 7
    assert latest_complete(store, "ckpt", r"notes-(\d+)") is None
    assert latest_complete(store, "nothing-here") is None
    with pytest.raises(ValueError, match="capturing group"):
        latest_complete(store, "ckpt", r"step-\d+")


def test_no_manifest_is_never_loaded(store, tmp_path):
    store.put_file(str(make_ckpt(tmp_path / "s", FILES) / "config.json"), "ckpt/step-5/config.json")
    with pytest.raises(CheckpointError, match=r"incomplete artifact .*step-5.*no MANIFEST.json"):
        get_dir_verified(store, "ckpt/step-5", str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_truncated_file_refused_naming_it(store, tmp_path):
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "c")
    store.put_bytes("c/model.safetensors", FILES["model.safetensors"][:1000])  # a torn copy
    with pytest.raises(CheckpointError, match=r"model.safetensors failed verification \(size 1000 != 4096\)"):
        get_dir_verified(store, "c", str(tmp_path / "dst"))
    assert not (tmp_path / "dst" / "model.safetensors").exists()  # the bad copy is not left behind
    assert not (tmp_path / "dst" / MANIFEST).exists()
    assert not is_complete(store, "c")


def test_altered_file_same_size_refused_naming_it(store, tmp_path):
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "c")
    data = bytearray(FILES["optim/rank0.pt"])
    data[500] ^= 0xFF  # one flipped byte: same size, so only the hash can tell
    store.put_bytes("c/optim/rank0.pt", bytes(data))
    assert is_complete(store, "c")  # sizes match: the cheap check cannot see it...
    with pytest.raises(CheckpointError, match=r"optim/rank0.pt failed verification \(sha256"):
        get_dir_verified(store, "c", str(tmp_path / "dst"))  # ...the download check does


def test_missing_file_refused_naming_it(store, tmp_path):
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "c")
    store.delete("c/config.json")
    with pytest.raises(CheckpointError, match=r"config.json missing"):
        get_dir_verified(store, "c", str(tmp_path / "dst"))


def test_rewrite_uncommits_before_uploading(store, tmp_path):
    """Overwriting a prefix deletes its manifest first: a failed rewrite leaves it incomplete,
    never 'complete' with a mix of old and new files."""
    put_dir_atomic(store, str(make_ckpt(tmp_path / "v1", FILES)), "c")

    class FailSecondUpload(RecordingStore):
        def put_file(self, local, key):
            if len(self.writes) == 1:
                raise OSError("injected upload failure")
            return super().put_file(local, key)

    v2 = make_ckpt(tmp_path / "v2", {rel: b"new" + d for rel, d in FILES.items()})
    with pytest.raises(OSError, match="injected"):
        put_dir_atomic(FailSecondUpload(store), str(v2), "c")
    assert not is_complete(store, "c")
    with pytest.raises(CheckpointError, match="incomplete"):
        get_dir_verified(store, "c", str(tmp_path / "dst"))


def test_bad_inputs(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(CheckpointError, match="not a directory"):
        put_dir_atomic(store, str(tmp_path / "absent"), "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no files"):
        put_dir_atomic(store, str(tmp_path / "empty"), "c")
    store.put_bytes(f"c/{MANIFEST}", b"{not json")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        read_manifest(store, "c")
    store.put_bytes(f"c/{MANIFEST}", json.dumps({"format_version": 99, "files": {}, "created_at": ""}).encode())
    with pytest.raises(CheckpointError, match="format_version 99 is not supported"):
        read_manifest(store, "c")
    assert not is_complete(store, "c")
    evil = {"format_version": 1, "created_at": "", "files": {"../../etc/x": {"size": 1, "sha256": "0"}}}
    store.put_bytes(f"c/{MANIFEST}", json.dumps(evil).encode())
    with pytest.raises(CheckpointError, match=r"unreadable manifest .*invalid key '../../etc/x'"):
        get_dir_verified(store, "c", str(tmp_path / "dst"))  # never writes outside dst
    make_ckpt(tmp_path / "src", FILES)
    with pytest.raises(CheckpointError, match="meta is not JSON-serialisable"):
        put_dir_atomic(store, str(tmp_path / "src"), "d", meta={"bad": object()})
    assert store.list("d/") == []


def test_manifest_in_source_dir_is_not_uploaded_as_a_file(tmp_path):
    """Re-uploading a downloaded checkpoint (which holds MANIFEST.json) lists only real files."""
    store = open_store(str(tmp_path / "store"))
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "a")
    get_dir_verified(store, "a", str(tmp_path / "copy"))
    m = put_dir_atomic(store, str(tmp_path / "copy"), "b")
    assert set(m.files) == set(FILES)


def test_artifact_at_the_store_root(store, tmp_path):
    """Prefix '' (the store URI itself is the checkpoint directory) works like any other prefix."""
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "")
    assert is_complete(store, "") and read_manifest(store, "").files.keys() == FILES.keys()
    get_dir_verified(store, "", str(tmp_path / "dst"))
    assert (tmp_path / "dst" / "optim" / "rank0.pt").read_bytes() == FILES["optim/rank0.pt"]
