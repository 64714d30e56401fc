"""The model's hand-over on several streams (masa.train.handover) through rank 0's real door
(masa.train.listen._Door) on loopback sockets: which stream carries which file, bytes and digests equal
to the files, every file checked, and what rank 0 holds unchanged until its streams end."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from masa.storage import MANIFEST, CheckpointError, FileEntry, Manifest, local_manifest
from masa.train.checkpoint import BackgroundUploads
from masa.train.handover import digest, plan, receive_files
from masa.train.listen import _Door, _Kept
from masa.train.spec import ListenSpec

KEY = b"k" * 16


def _manifest(sizes: dict[str, int]) -> Manifest:
    return Manifest(files={k: FileEntry(size=n, sha256="0" * 64) for k, n in sizes.items()}, created_at="t", meta={})


def test_plan_deals_files_largest_first_to_the_lightest_stream():
    m = _manifest({"a.safetensors": 5, "b.safetensors": 4, "c.safetensors": 3, "d.safetensors": 3, "config.json": 1})
    # by size: a5 -> s0 (5); b4 -> s1 (4); c3 -> s1 (7); d3 -> s0 (8); config1 -> s1 (8); each part sorted
    assert plan(m, light=False, parts=2) == [["a.safetensors", "d.safetensors"],
                                             ["b.safetensors", "c.safetensors", "config.json"]]
    assert plan(m, light=True, parts=1) == [["config.json"]]  # no weights
    assert plan(m, light=False, parts=7)[5:] == [[], []]  # more streams than files: idle streams


def _model(root: Path) -> Path:
    root.mkdir()
    for i, n in enumerate((3 << 20, 2 << 20, 1 << 20, 1 << 20)):
        (root / f"model-{i:05d}-of-00004.safetensors").write_bytes(os.urandom(n))
    (root / "config.json").write_text('{"a": 1}')
    (root / "tokenizer.json").write_text("{}")
    return root


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def door(tmp_path):
    """Rank 0's door holding a 4-shard model, answering in a thread until a stop."""
    model = _model(tmp_path / "held")
    manifest = local_manifest(model, workers=3)
    kept = _Kept(model=model, manifest=manifest, identity=digest(manifest))
    d = _Door(ListenSpec(port=_port(), key_uri="s3://x/k", idle_s=60, beat_s=0.5), KEY)
    ops, uploads = [], BackgroundUploads()

    def serve():
        while (op := d.next(kept, uploads))["op"] != "stop":
            ops.append(op["op"])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield d, kept, lambda: Client(("127.0.0.1", d.spec.port), authkey=KEY)
    with Client(("127.0.0.1", d.spec.port), authkey=KEY) as c:
        c.send(("stop", None))
    t.join(timeout=10)
    assert not t.is_alive() and set(ops) <= {"beat"}


def test_streams_side_by_side_give_the_held_files(door, tmp_path):
    d, kept, connect = door
    got = receive_files(connect, kept.identity, tmp_path / "got", light=False, streams=3)
    for rel, entry in kept.manifest.files.items():
        assert hashlib.sha256((got / rel).read_bytes()).hexdigest() == entry.sha256
        assert (got / rel).read_bytes() == (kept.model / rel).read_bytes()
    assert digest(Manifest.from_json((got / MANIFEST).read_bytes(), where="t")) == kept.identity
    light = receive_files(connect, kept.identity, tmp_path / "light", light=True)
    assert sorted(p.name for p in light.iterdir()) == ["config.json", "tokenizer.json"]
    # the streams' connections stay usable: the door answers on one it handed back
    with connect() as c:
        c.send(("held", None))
        assert c.recv() == ("ok", kept.identity)


def test_a_changed_file_is_refused_and_an_unknown_model_named(door, tmp_path):
    d, kept, connect = door
    shard = kept.model / "model-00001-of-00004.safetensors"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1  # one bit, same size: only the sha256 can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model-00001-of-00004.safetensors does not match"):
        receive_files(connect, kept.identity, tmp_path / "got", light=False, streams=2)
    with pytest.raises(RuntimeError, match="cannot hand over"):
        receive_files(connect, "0" * 64, tmp_path / "none", light=False, streams=2)


def test_parallel_manifest_equals_one_file_at_a_time(tmp_path):
    model = _model(tmp_path / "m")
    one, eight = local_manifest(model, workers=1), local_manifest(model, workers=8)
    assert one.files == eight.files
    assert one.files["config.json"].sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
