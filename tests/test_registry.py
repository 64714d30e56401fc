"""The model registry (masa.storage.registry) on a local store and on SeaweedFS: versions committed
manifest-last, the `latest` pointer moved by compare-and-swap, rollback, `latest:<name>` resolution."""

from __future__ import annotations

import json
import threading

import pytest

from masa.storage import open_store, resolve_model
from masa.storage.base import PreconditionFailedError, StorageError
from masa.storage.registry import (
    RegistryError,
    move_latest,
    promote,
    publish,
    read_latest,
    read_record,
    resolve_ref,
    rollback,
    versions,
)


def make_model(root, tag: str):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "qwen2", "tag": tag}))
    (root / "model.safetensors").write_bytes(tag.encode() * 100)
    (root / "README.md").write_text(f"# model {tag}\n")
    return root


def _publish(store, tmp_path, tag):
    return publish(store, "m", str(make_model(tmp_path / tag, tag)), {"tag": tag})


def test_promote_resolve_and_rollback(store_uri, tmp_path):
    store = open_store(store_uri)
    assert read_latest(store, "m") == (None, None)
    v1 = _publish(store, tmp_path, "one")
    promote(store, "m", v1)
    assert read_record(store, "m", v1)["tag"] == "one"
    v2 = _publish(store, tmp_path, "two")
    assert read_latest(store, "m")[0].version == v1  # publishing does not move the pointer
    p = promote(store, "m", v2)
    assert p.version == v2 and p.history == (v1, v2) and p.seq == 2
    assert versions(store, "m") == sorted([v1, v2])
    # latest:<name> and the pointer's own URI resolve to the promoted version, as a model directory
    assert resolve_ref("latest:m", store_uri) == store.uri(f"models/m/{v2}")
    assert resolve_ref(store.uri("models/m/latest")) == store.uri(f"models/m/{v2}")
    local = resolve_model("latest:m", store=store_uri, cache_dir=str(tmp_path / "cache"))
    assert '"two"' in open(f"{local}/config.json").read()
    back = rollback(store, "m")
    assert back.version == v1 and back.history == (v1,)
    assert resolve_ref("latest:m", store_uri).endswith(v1)
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        rollback(store, "m")


def test_swap_fails_when_the_pointer_moved_since_it_was_read(store_uri, tmp_path):
    store = open_store(store_uri)
    v1, v2 = _publish(store, tmp_path, "one"), _publish(store, tmp_path, "two")
    first = read_latest(store, "m")  # (None, None): nothing promoted
    move_latest(store, "m", v1, expect=first)
    with pytest.raises(PreconditionFailedError):
        move_latest(store, "m", v2, expect=first)  # creating again: the pointer exists now
    stale = read_latest(store, "m")
    promote(store, "m", v2)
    with pytest.raises(PreconditionFailedError):
        move_latest(store, "m", v1, expect=stale)
    assert read_latest(store, "m")[0].version == v2


def test_two_promotions_at_once_exactly_one_wins(store_uri, tmp_path):
    store = open_store(store_uri)
    base = _publish(store, tmp_path, "base")
    promote(store, "m", base)
    cands = [_publish(store, tmp_path, t) for t in ("a", "b")]
    seen = read_latest(store, "m")
    barrier, results = threading.Barrier(2), {}

    def race(v):
        s = open_store(store_uri)  # one client per thread, as two pods would have
        barrier.wait()
        try:
            results[v] = move_latest(s, "m", v, expect=seen).version
        except PreconditionFailedError as e:
            results[v] = e

    threads = [threading.Thread(target=race, args=(v,)) for v in cands]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [v for v, r in results.items() if r == v]
    assert len(won) == 1, results
    assert read_latest(store, "m")[0].version == won[0]
    assert read_latest(store, "m")[0].history == (base, won[0])


def test_killed_promotion_leaves_the_old_pointer_valid(store_uri, tmp_path, monkeypatch):
    store = open_store(store_uri)
    v1 = _publish(store, tmp_path, "one")
    promote(store, "m", v1)
    real, calls = type(store).put_file, []

    def dies_after_one_file(self, local, key):
        if calls:
            raise StorageError("killed mid-upload")
        calls.append(key)
        return real(self, local, key)

    with monkeypatch.context() as m, pytest.raises(StorageError, match="killed"):
        m.setattr(type(store), "put_file", dies_after_one_file)
        _publish(store, tmp_path, "two")
    assert versions(store, "m") == [v1]  # the half-written version is not committed, so not listed
    assert read_latest(store, "m")[0].version == v1
    local = resolve_model("latest:m", store=store_uri, cache_dir=str(tmp_path / "cache"))
    assert '"one"' in open(f"{local}/config.json").read()


def test_unknown_version_and_name_are_one_line_errors(tmp_path):
    store = open_store(str(tmp_path / "s"))
    with pytest.raises(RegistryError, match="nothing promoted"):
        resolve_ref("latest:m", str(tmp_path / "s"))
    with pytest.raises(RegistryError, match="no such committed version"):
        promote(store, "m", "v-none")
    with pytest.raises(ValueError, match="model name"):
        resolve_ref("latest:../x", str(tmp_path / "s"))


def test_models_cli_publishes_promotes_shows_and_rolls_back(tmp_path, capsys):
    from masa.cli import main

    store = str(tmp_path / "store")
    assert main(["models", "promote", "m", "--from", str(make_model(tmp_path / "a", "a")), "--store", store]) == 0
    assert main(["models", "promote", "m", "--from", str(make_model(tmp_path / "b", "b")), "--store", store]) == 0
    v1, v2 = versions(open_store(store), "m")
    assert main(["models", "list", "--store", store]) == 0
    assert f"m\t{v2}" in capsys.readouterr().out
    assert main(["models", "rollback", "m", "--store", store]) == 0
    assert main(["models", "show", "m", "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"latest -> {v1}" in out and f"* {v1}" in out
    assert main(["models", "promote", "m", v2, "--store", store]) == 0
    assert resolve_ref("latest:m", store).endswith(v2)
    assert main(["models", "rollback", "nope", "--store", store]) == 2
    assert "no earlier promoted version" in capsys.readouterr().err
    # a name or a store mistyped: said, not an empty answer with exit 0
    assert main(["models", "show", "nope", "--store", store]) == 2
    models_uri = open_store(store).uri("models")
    assert capsys.readouterr().err == f"masa models show: no model 'nope' under {models_uri} (models there: m)\n"
    empty = str(tmp_path / "typo")
    assert main(["models", "list", "--store", empty]) == 0
    assert capsys.readouterr().err == f"masa models list: no promoted model under {open_store(empty).uri('models')}\n"


def test_store_verify_knows_the_registry_objects(tmp_path):
    from masa.storage import verify_tree

    store = open_store(str(tmp_path / "store"))
    promote(store, "m", _publish(store, tmp_path, "one"))
    check = verify_tree(store, deep=True)
    assert check.bad == {} and check.unlisted == [] and len(check.artifacts) == 1


_KILLED_CHILD = """
import os, signal, sys
from masa.storage import open_store
from masa.storage.registry import promote, publish
store, where, src = open_store(sys.argv[1]), sys.argv[2], sys.argv[3]
cls = type(store)
real_put, real_swap = cls.put_file, cls.put_bytes_if

def put_file(self, local, key):
    info = real_put(self, local, key)
    if where == "upload":
        os.kill(os.getpid(), signal.SIGKILL)  # after the first file of the new version: no manifest yet
    return info

def put_bytes_if(self, key, data, *, etag):
    if where == "swap":
        os.kill(os.getpid(), signal.SIGKILL)  # the version is committed; the pointer not yet moved
    return real_swap(self, key, data, etag=etag)

cls.put_file, cls.put_bytes_if = put_file, put_bytes_if
promote(store, "m", publish(store, "m", src, {}))
"""


@pytest.mark.parametrize("where", ["upload", "swap"])
def test_a_promotion_killed_by_sigkill_leaves_the_old_pointer_valid(store_uri, tmp_path, where):
    import os
    import subprocess
    import sys

    store = open_store(store_uri)
    v1 = _publish(store, tmp_path, "one")
    promote(store, "m", v1)
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, store_uri, where, str(make_model(tmp_path / "two", "two"))],
                           env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr[-2000:]
    assert read_latest(store, "m")[0].version == v1
    assert versions(store, "m") == ([v1] if where == "upload" else [v1, versions(store, "m")[1]])
    local = resolve_model("latest:m", store=store_uri, cache_dir=str(tmp_path / "cache"))
    assert '"one"' in open(f"{local}/config.json").read()
    promote(store, "m", _publish(store, tmp_path, "three"))  # the next promotion goes through
