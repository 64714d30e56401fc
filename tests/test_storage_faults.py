"""Fault injection for the artifact store: real network cuts, a real S3 server killed and
restarted mid-upload, and a real full disk.

What must hold in every case: the operation either succeeds and what was written verifies
byte-for-byte, or it raises a clear StorageError naming the object, and then the artifact is
incomplete (no manifest), is skipped by `latest_complete`, and is refused by `get_dir_verified`.
No torn object ever passes verification.

The S3 tests use their own SeaweedFS server (module-scoped), never the shared session one,
since they kill it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from s3server import CuttingProxy, seaweedfs

from masa.storage import (
    CheckpointError,
    StorageError,
    get_dir_verified,
    is_complete,
    latest_complete,
    open_store,
    put_dir_atomic,
)

MIB = 1 << 20
BUCKET = "faults"


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("fault-s3")) as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def server(fault_server, monkeypatch):
    """The module's server, running (a previous test may have killed it), env pointed at it."""
    if fault_server.proc.poll() is not None:
        fault_server.start()
    for k, v in fault_server.env().items():
        monkeypatch.setenv(k, v)
    return fault_server


def make_ckpt(root, sizes: dict[str, int]) -> dict[str, bytes]:
    files = {rel: os.urandom(n) for rel, n in sizes.items()}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def assert_verifies(store, prefix, files, dst):
    get_dir_verified(store, prefix, str(dst))
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data, rel


def assert_not_loadable(store, prefix, dst):
    assert not is_complete(store, prefix)
    with pytest.raises(CheckpointError):
        get_dir_verified(store, prefix, str(dst))


@pytest.mark.slow
def test_connection_cut_mid_body_is_retried_and_never_stores_a_torn_object(server, monkeypatch, tmp_path):
    """A proxy resets the TCP connection after 3 MiB of an 8 MiB single PUT and inside a part of a
    multipart upload. With retries the checkpoint verifies; without, the PUT fails clearly and the
    server holds no object under that key (S3 PUTs are all-or-nothing)."""
    files = make_ckpt(tmp_path / "src", {"weights.bin": 8 * MIB, "big.bin": 12 * MIB, "config.json": 100})
    proxy = CuttingProxy(server.endpoint_url.removeprefix("http://"), cut_after=3 * MIB, cuts=2)
    try:
        monkeypatch.setenv("MASA_S3_ENDPOINT_URL", proxy.listen_url)
        store = open_store(f"s3://{BUCKET}/cut", multipart_threshold=10 * MIB, multipart_chunksize=5 * MIB,
                           max_concurrency=1, max_attempts=5)
        put_dir_atomic(store, str(tmp_path / "src"), "ckpt/step-1")
        assert proxy.cuts_done == 2  # both faults really happened, and were retried
        assert_verifies(store, "ckpt/step-1", files, tmp_path / "dst1")

        proxy.cuts_left = 1
        no_retry = open_store(f"s3://{BUCKET}/cut", max_attempts=1, multipart_threshold=64 * MIB)
        with pytest.raises(StorageError, match=r"uploading s3://faults/cut/ckpt/step-2/big.bin .*failed"):
            put_dir_atomic(no_retry, str(tmp_path / "src"), "ckpt/step-2")
        assert proxy.cuts_done == 3
        assert not no_retry.exists("ckpt/step-2/big.bin")  # the torn body was discarded, not stored
        assert_not_loadable(no_retry, "ckpt/step-2", tmp_path / "dst2")
        assert latest_complete(no_retry, "ckpt") == "ckpt/step-1"
    finally:
        proxy.close()


@pytest.mark.slow
def test_server_killed_and_restarted_during_multipart_upload_retries_succeed(server, tmp_path):
    """SIGKILL the S3 server as the 2nd part of a 16 MiB multipart upload goes out, restart it
    0.5 s later (same data): botocore's retries carry the upload through, and it verifies.

    botocore backs off rand(0, 1) x 50 ms x 2^i before retry i of a connection error, so 10 attempts
    span 0-25.6 s (~13 s on average) while SeaweedFS takes ~3 s to restart here, longer on a loaded
    machine: left to chance the test failed once in CI (2026-12-04). So a send that would go out
    while the server is down waits until it is back: the failed attempt and its retry still happen,
    the race with the restart does not (an outage longer than the window: the next test)."""
    files = make_ckpt(tmp_path / "src", {"model.bin": 16 * MIB, "config.json": 100})
    store = open_store(f"s3://{BUCKET}/restart", multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
                       max_concurrency=2, max_attempts=10)
    parts, restarted = [], threading.Event()

    def restart_later():
        time.sleep(0.5)
        server.start()
        restarted.set()

    def kill_on_second_part(**_):
        parts.append(1)
        if len(parts) == 2:  # this send goes out to a dead server and fails
            server.kill()
            threading.Thread(target=restart_later, daemon=True).start()
        elif len(parts) > 2:
            restarted.wait(120)

    store.client.meta.events.register("before-send.s3.UploadPart", kill_on_second_part)
    put_dir_atomic(store, str(tmp_path / "src"), "ckpt/step-3")
    assert restarted.is_set() and len(parts) > 4  # 4 parts + the retried ones
    assert_verifies(store, "ckpt/step-3", files, tmp_path / "dst")


@pytest.mark.slow
def test_server_gone_for_good_clear_error_and_artifact_stays_incomplete(server, tmp_path):
    make_ckpt(tmp_path / "src", {"a.bin": 6 * MIB, "z.json": 10})
    store = open_store(f"s3://{BUCKET}/gone", multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
                       max_attempts=2, connect_timeout_s=1)
    put_dir_atomic(store, str(tmp_path / "src"), "ckpt/step-1")
    store.client.meta.events.register("before-send.s3.UploadPart", lambda **_: server.kill())
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=rf"uploading s3://faults/gone/ckpt/step-2/a.bin at "
                                           rf"{server.endpoint_url} failed: .*at most 2 attempts"):
        put_dir_atomic(store, str(tmp_path / "src"), "ckpt/step-2")
    assert time.monotonic() - t0 < 30  # bounded: the retries give up, no hang
    server.start()
    assert store.list("ckpt/step-2/") == []  # the multipart upload never completed
    assert_not_loadable(store, "ckpt/step-2", tmp_path / "dst")
    assert latest_complete(store, "ckpt") == "ckpt/step-1"


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root/CAP_SYS_ADMIN; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_local_store_names_the_key_and_keeps_earlier_artifacts(tiny_disk, tmp_path):
    store = open_store(str(tiny_disk / "store"))
    small = make_ckpt(tmp_path / "small", {"w.bin": 200_000, "config.json": 10})
    put_dir_atomic(store, str(tmp_path / "small"), "ckpt/step-1")
    store.put_bytes("state.json", b'{"step": 1}')
    make_ckpt(tmp_path / "big", {"config.json": 10, "w.bin": 2 * MIB})
    with pytest.raises(StorageError, match=r"writing .*ckpt/step-2/w.bin: no space left on device"):
        put_dir_atomic(store, str(tmp_path / "big"), "ckpt/step-2")
    with pytest.raises(StorageError, match=r"state.json: no space left on device"):
        store.put_bytes("state.json", b"x" * 2 * MIB)  # overwrite fails...
    assert store.get_bytes("state.json") == b'{"step": 1}'  # ...and the old object is intact
    assert [p for p in tiny_disk.rglob("*") if p.name.startswith(".masa-tmp-")] == []  # temps removed
    assert latest_complete(store, "ckpt") == "ckpt/step-1"
    assert_verifies(store, "ckpt/step-1", small, tmp_path / "dst")
    assert_not_loadable(store, "ckpt/step-2", tmp_path / "dst2")
