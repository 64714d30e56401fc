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
    CorruptArtifactError,
    get_dir_verified,
    is_complete,
    latest_complete,
    open_store,
    put_dir_atomic,
    read_manifest,
    verify_stored,
    verify_tree,
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


def test_verify_stored_checks_sha256_without_downloading(store, tmp_path):
    """Issue 18: reuse must not trust sizes. `verify_stored` compares each file's sha256 as the store
    tells it (S3: the x-amz-meta-sha256 recorded at upload, one HEAD; local: a hash) to the manifest."""
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "c")
    assert verify_stored(store, "c") == []
    data = bytearray(FILES["model.safetensors"])
    data[7] ^= 0xFF
    store.put_bytes("c/model.safetensors", bytes(data))  # same size, rewritten (a masa writer records its hash)
    store.delete("c/config.json")
    assert verify_stored(store, "c") == [
        "config.json: missing",
        f"model.safetensors: sha256 {sha256_file_bytes(bytes(data))[:12]}… != "
        f"{sha256_file_bytes(FILES['model.safetensors'])[:12]}… in the manifest"]
    assert verify_stored(store, "nothing-here") == [f"incomplete artifact {store.uri('nothing-here')}: no MANIFEST.json"]


def sha256_file_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_verify_tree_names_bad_artifacts_and_unlisted_objects(store, tmp_path):
    src = make_ckpt(tmp_path / "src", FILES)
    put_dir_atomic(store, str(src), "run/a")
    put_dir_atomic(store, str(src), "run/b")
    store.put_bytes("run/b/optim/rank0.pt", b"y" * 777)
    store.put_bytes("run/stray.json", b"{}")
    for deep in (False, True):
        check = verify_tree(store, deep=deep)
        assert check.artifacts["run/a"] == [] and list(check.bad) == ["run/b"], check
        assert "optim/rank0.pt" in check.bad["run/b"][0]
        assert check.unlisted == ["run/stray.json"]


@pytest.mark.slow
def test_s3_object_rewritten_outside_masa_or_behind_its_claim(s3_server, monkeypatch, tmp_path):
    """An object rewritten by another writer has no recorded sha256: caught on HEAD. One whose bytes
    changed behind the old claim (bit rot under the server) passes HEAD and is caught by the
    download's hash, as a CorruptArtifactError naming the file (what `--deep` and consumers use)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.make_bucket("masa-claims")
    store = open_store("s3://masa-claims/x")
    put_dir_atomic(store, str(make_ckpt(tmp_path / "src", FILES)), "c")
    client, key = s3_server.client(), "x/c/model.safetensors"
    claim = client.head_object(Bucket="masa-claims", Key=key)["Metadata"]
    data = bytearray(FILES["model.safetensors"])
    data[9] ^= 0xFF
    client.put_object(Bucket="masa-claims", Key=key, Body=bytes(data))
    assert verify_stored(store, "c") == ["model.safetensors: no sha256 recorded with the object (rewritten outside masa)"]
    client.put_object(Bucket="masa-claims", Key=key, Body=bytes(data), Metadata=claim)
    assert verify_stored(store, "c") == []
    with pytest.raises(CorruptArtifactError, match=r"model.safetensors failed verification \(sha256") as e:
        get_dir_verified(store, "c", str(tmp_path / "dst"))
    assert e.value.file == "model.safetensors" and e.value.uri == store.uri("c")
    assert list(verify_tree(store, deep=True).bad) == ["c"]
