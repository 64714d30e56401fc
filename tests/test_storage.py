"""Store round trips (local dir and a real S3 server), key rules, and URI handling.

Every behavioural test runs against both backends through the parametrised `store` fixture; the
S3 variant talks to the session SeaweedFS server (tests/s3server.py) and is marked slow.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masa.storage import ObjectNotFoundError, StorageError, open_store
from masa.storage.base import TMP_PREFIX, check_key, check_prefix, join_key
from masa.storage.local import LocalStore

BUCKET = "masa-test"


@pytest.fixture
def s3_root(s3_server, monkeypatch):
    """A fresh 's3://masa-test/<unique>' root with the server's endpoint/credentials in the env."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3_server.make_bucket(BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_root"))


def test_bytes_and_file_round_trip(store, tmp_path):
    data = os.urandom(3000)
    info = store.put_bytes("a/b.bin", data)
    assert (info.key, info.size, info.sha256) == ("a/b.bin", 3000, hashlib.sha256(data).hexdigest())
    assert store.get_bytes("a/b.bin") == data
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello world")
    info = store.put_file(str(src), "a/c/d.txt")
    assert info.sha256 == hashlib.sha256(b"hello world").hexdigest() and info.size == 11
    got = store.get_file("a/c/d.txt", str(tmp_path / "out" / "d.txt"))
    assert (tmp_path / "out" / "d.txt").read_bytes() == b"hello world" and got.size == 11
    assert store.exists("a/b.bin") and not store.exists("a/nope")
    assert store.list("a/") == ["a/b.bin", "a/c/d.txt"]
    assert store.uri("a/b.bin") == store.uri() + "/a/b.bin"


def test_overwrite_replaces_whole_object(store):
    store.put_bytes("k", b"x" * 100)
    store.put_bytes("k", b"short")
    assert store.get_bytes("k") == b"short"


def test_list_is_a_string_prefix_match_like_s3(store):
    for k in ("ckpt/step-1/a", "ckpt/step-10/a", "ckpt/step-2/a", "other/x"):
        store.put_bytes(k, b"1")
    assert store.list("ckpt/step-1") == ["ckpt/step-1/a", "ckpt/step-10/a"]
    assert store.list("ckpt/step-1/") == ["ckpt/step-1/a"]
    assert store.list("nothing/") == []
    assert len(store.list()) == 4


def test_delete_prefix_removes_only_that_prefix(store):
    for k in ("d/1", "d/sub/2", "dd/3"):
        store.put_bytes(k, b"1")
    assert store.delete("d/") == 2
    assert store.list() == ["dd/3"]
    with pytest.raises(ValueError, match="empty prefix"):
        store.delete("")


def test_missing_object_errors_name_the_uri(store, tmp_path):
    with pytest.raises(ObjectNotFoundError, match="no object .*missing/key"):
        store.get_bytes("missing/key")
    with pytest.raises(ObjectNotFoundError, match="missing/key"):
        store.get_file("missing/key", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(StorageError, match="no such local file"):
        store.put_file(str(tmp_path / "absent"), "k")


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a\\b", f"a/{TMP_PREFIX}x"])
def test_invalid_keys_rejected(bad, tmp_path):
    with pytest.raises(ValueError, match="invalid key"):
        check_key(bad)
    with pytest.raises(ValueError, match="invalid key"):
        LocalStore(str(tmp_path)).put_bytes(bad, b"")


def test_prefix_rules_and_join():
    assert check_prefix("") == "" and check_prefix("a/b/") == "a/b/"
    assert join_key("ckpt/", "/step-1", "", "MANIFEST.json") == "ckpt/step-1/MANIFEST.json"


def test_local_writes_leave_no_temp_files(tmp_path):
    store = LocalStore(str(tmp_path))
    store.put_bytes("a/b", b"1")
    store.put_file(str(tmp_path / "a" / "b"), "a/c")
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "c"]
    # A crashed writer's temp file is invisible to list().
    (tmp_path / "a" / f"{TMP_PREFIX}c-123").write_bytes(b"partial")
    assert store.list() == ["a/b", "a/c"]


def test_local_key_under_an_existing_file_is_a_storage_error(tmp_path):
    store = LocalStore(str(tmp_path))
    store.put_bytes("a", b"1")
    with pytest.raises(StorageError, match=r"writing .*/a/b: "):
        store.put_bytes("a/b", b"2")  # a file cannot also be a directory (S3 allows it)
    assert store.get_bytes("a") == b"1"


def test_open_store_uris(tmp_path):
    assert open_store(f"file://{tmp_path}").root == tmp_path.resolve()
    assert open_store(str(tmp_path)).uri("x/y") == (tmp_path / "x" / "y").resolve().as_uri()
    with pytest.raises(ValueError, match="unsupported store URI scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="S3 options"):
        open_store(str(tmp_path), max_attempts=3)
    with pytest.raises(ValueError, match="no bucket"):
        open_store("s3:///x")


def test_s3_config_validation():
    from masa.storage.s3 import S3Config, parse_s3_uri

    with pytest.raises(ValueError) as e:
        S3Config(max_attempts=0, multipart_chunksize=1024, endpoint_url="localhost:9000")
    msg = str(e.value)
    assert "max_attempts" in msg and "multipart_chunksize" in msg and "endpoint_url" in msg
    assert parse_s3_uri("s3://b/x/y/") == ("b", "x/y/")
    assert parse_s3_uri("s3://b") == ("b", "")


def test_s3_endpoint_from_env_precedence(monkeypatch):
    from masa.storage.s3 import endpoint_from_env

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-var:1")
    monkeypatch.delenv("MASA_S3_ENDPOINT_URL", raising=False)
    assert endpoint_from_env() == "http://aws-var:1"
    monkeypatch.setenv("MASA_S3_ENDPOINT_URL", "http://masa-var:2")
    assert endpoint_from_env() == "http://masa-var:2"


@pytest.mark.slow
def test_s3_multipart_upload_and_download(s3_root, tmp_path):
    """A file over the (small) threshold goes up in parts: its ETag is '<md5 of md5s>-<parts>'."""
    store = open_store(s3_root, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 << 20))  # 11 MiB -> parts of 5 + 5 + 1 MiB
    info = store.put_file(str(src), "big.bin")
    assert info.etag.endswith("-3"), info.etag
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    got = store.get_file("big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert got.size == 11 << 20
    head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + "big.bin")
    assert head["Metadata"]["sha256"] == info.sha256  # recorded as object metadata on upload


@pytest.mark.slow
def test_s3_missing_credentials_clear_error_without_secrets(s3_root, s3_server, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no S3 credentials"):
        open_store(s3_root).get_bytes("x")
    # Wrong credentials: refused, and neither the secret nor the key id leaks into the message.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3_server.secret_key)
    store = open_store(s3_root, max_attempts=1)
    with pytest.raises(StorageError) as e:
        store.put_bytes("x", b"1")
    assert s3_server.secret_key not in str(e.value) and s3_server.secret_key not in repr(store)


_SEG = st.text(alphabet="ab1-_.", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
_KEY = st.lists(_SEG, min_size=1, max_size=3).map("/".join)


def _no_file_dir_clash(keys: set[str]) -> bool:
    """A filesystem cannot hold both 'a' and 'a/b' (documented local-store limitation)."""
    return not any(k2.startswith(k + "/") for k in keys for k2 in keys)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.sets(_KEY, min_size=1, max_size=8).filter(_no_file_dir_clash),
       prefix=st.one_of(st.just(""), _KEY, _KEY.map(lambda k: k + "/"), _KEY.map(lambda k: k[:-1] or k)))
def test_local_list_matches_the_s3_reference_semantics(tmp_path_factory, keys, prefix):
    """list(prefix) == sorted(k for k in keys if k.startswith(prefix)), for any keys and prefix."""
    try:
        check_prefix(prefix)
    except ValueError:
        return
    store = LocalStore(str(tmp_path_factory.mktemp("prop")))
    for k in keys:
        store.put_bytes(k, k.encode())
    assert store.list(prefix) == sorted(k for k in keys if k.startswith(prefix))
    assert all(store.get_bytes(k) == k.encode() for k in keys)
