"""S3 store over boto3: multipart transfers, bounded retries, size checks, endpoint override.

- Endpoint: `S3Config.endpoint_url`, else `MASA_S3_ENDPOINT_URL`, else `AWS_ENDPOINT_URL`, else AWS.
  With an override (MinIO, SeaweedFS, Ceph) path-style addressing is used.
- Credentials: only the standard boto3 chain (environment, profile, instance role). Nothing here
  reads, stores or prints them; `repr` shows the bucket URI and endpoint only.
- Retries: botocore "standard" or "adaptive" mode with `max_attempts` per request (connection
  refused/reset, throttling and 5xx are retried with exponential backoff); s3transfer retries
  interrupted downloads on top.
- Integrity: every upload records its sha256 as object metadata (`x-amz-meta-sha256`) and returns
  it; every download checks the byte count against the object's size. Content hashes are verified
  by the manifest layer (`masa.storage.artifacts`), not by ETag (multipart ETags are not hashes).
  A PUT or a completed multipart upload replaces the object atomically, so an interrupted upload
  leaves the previous object (or none), never a partial one.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from s3transfer.exceptions import S3DownloadFailedError

from masa.configbase import check, raise_if
from masa.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    check_key,
    check_prefix,
    sha256_file,
)

_MIB = 1 << 20
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class S3Config:
    """Transfer and retry settings of an S3 store (no credentials: those come from boto3's chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 10
    retry_mode: Literal["standard", "adaptive"] = "standard"
    multipart_threshold: int = 64 * _MIB
    multipart_chunksize: int = 16 * _MIB
    max_concurrency: int = 4
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.max_attempts >= 1, "max_attempts", f"must be >= 1, got {self.max_attempts}", p)
        check(self.retry_mode in ("standard", "adaptive"), "retry_mode",
              f"must be 'standard' or 'adaptive', got {self.retry_mode!r}", p)
        # S3 rejects multipart parts under 5 MiB (except the last); s3transfer would silently raise it.
        check(self.multipart_chunksize >= 5 * _MIB, "multipart_chunksize",
              f"must be >= 5 MiB (S3 minimum part size), got {self.multipart_chunksize}", p)
        check(self.multipart_threshold >= 1, "multipart_threshold", "must be >= 1 byte", p)
        check(self.max_concurrency >= 1, "max_concurrency", "must be >= 1", p)
        check(self.connect_timeout_s > 0 and self.read_timeout_s > 0, "timeouts", "must be > 0 seconds", p)
        if self.endpoint_url is not None:
            check(self.endpoint_url.startswith(("http://", "https://")), "endpoint_url",
                  f"must start with http:// or https://, got {self.endpoint_url!r}", p)
        raise_if(p)


# The Kubernetes Secret that carries S3 credentials into pods. One definition, read by the DAG
# (pipeline/k8s.py), the TrainJob (masa/train/trainjob.py) and `masa preflight`; the template
# (manifests/templates/s3-credentials.secret.yaml) and docs/deploy.md are pinned to it by tests.
# Keys are the environment names boto3 and `endpoint_from_env` read, so pods get them unchanged.
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # required: a pod without them fails to start
SECRET_OPTIONAL_KEYS = ("MASA_S3_ENDPOINT_URL",)  # optional: absent means AWS S3


def endpoint_from_env() -> str | None:
    """The S3 endpoint override: MASA_S3_ENDPOINT_URL, then AWS_ENDPOINT_URL, else None (AWS)."""
    return os.environ.get("MASA_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix/'); the prefix is '' or ends with '/'."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket name")
    prefix = prefix.strip("/")
    if prefix:
        check_prefix(prefix)
    return bucket, prefix + "/" if prefix else ""


@functools.cache
def _model_loader() -> botocore.loaders.Loader:
    """botocore's loader of (immutable) service models, shared by all stores: without it every
    new client re-parses the S3 model (~0.3 s)."""
    return botocore.loaders.create_loader()


def make_client(endpoint_url: str | None, config: botocore.config.Config):
    """An S3 client in a private botocore session (sessions are not thread-safe to share)."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _model_loader())
    return boto3.session.Session(botocore_session=session).client("s3", endpoint_url=endpoint_url, config=config)


def _client_error_code(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


class S3Store:
    """Store rooted at `s3://bucket/prefix` (the bucket must exist)."""

    def __init__(self, uri: str, config: S3Config | None = None) -> None:
        self.config = config or S3Config()
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = self.config.endpoint_url or endpoint_from_env()
        c = self.config
        s3_opts = {"addressing_style": "path"} if self.endpoint_url else {}
        region = c.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region is None and self.endpoint_url:
            region = "us-east-1"  # S3-compatible servers ignore it, but SigV4 needs one
        bc = botocore.config.Config(
            # total_max_attempts counts the first try (botocore's "max_attempts" would count retries only).
            retries={"mode": c.retry_mode, "total_max_attempts": c.max_attempts},
            connect_timeout=c.connect_timeout_s,
            read_timeout=c.read_timeout_s,
            s3=s3_opts,
            region_name=region,
        )
        self.client = make_client(self.endpoint_url, bc)
        self.transfer = TransferConfig(
            multipart_threshold=c.multipart_threshold,
            multipart_chunksize=c.multipart_chunksize,
            max_concurrency=c.max_concurrency,
            num_download_attempts=c.max_attempts,
            preferred_transfer_client="classic",
        )

    def __repr__(self) -> str:
        return f"S3Store({self.root_uri!r}, endpoint={self.endpoint_url or 'aws'})"

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}" if key else self.root_uri

    def _error(self, action: str, key: str, e: Exception) -> StorageError:
        uri = self.uri(key)
        if _client_error_code(e) in _NOT_FOUND:
            return ObjectNotFoundError(errno.ENOENT, f"no object {uri}")
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return StorageError(f"{action} {uri}: no S3 credentials found (set AWS_ACCESS_KEY_ID/"
                                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE; they are never read from config)")
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return StorageError(f"{action} {uri}{where} failed: {type(e).__name__}: {e} (transient errors are "
                            f"retried, at most {self.config.max_attempts} attempts in all)")

    def _head(self, key: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error("reading", key, e) from e

    def put_file(self, local: str, key: str) -> ObjectInfo:
        full = self._full(key)
        if not Path(local).is_file():
            raise StorageError(errno.ENOENT, f"uploading {local} to {self.uri(key)}: no such local file")
        sha, size = sha256_file(local)
        try:
            self.client.upload_file(local, self.bucket, full, Config=self.transfer,
                                    ExtraArgs={"Metadata": {"sha256": sha}})
        except (Boto3Error, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error("uploading", key, e) from e
        head = self._head(key)
        if head["ContentLength"] != size:
            raise IntegrityError(f"uploading {self.uri(key)}: server has {head['ContentLength']} bytes, sent {size}")
        return ObjectInfo(key=key, size=size, etag=head["ETag"].strip('"'), sha256=sha)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, Metadata={"sha256": sha})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error("writing", key, e) from e
        return ObjectInfo(key=key, size=len(data), etag=r["ETag"].strip('"'), sha256=sha)

    def put_bytes_if(self, key: str, data: bytes, *, etag: str | None) -> ObjectInfo:
        """Compare-and-swap with S3 conditional writes: PUT with If-Match: <etag>, or If-None-Match: *
        to create (AWS S3 since 2024; SeaweedFS answers 412 likewise, tests/test_registry.py)."""
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        cond = {"IfMatch": f'"{etag}"'} if etag is not None else {"IfNoneMatch": "*"}
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data,
                                       Metadata={"sha256": sha}, **cond)
        except botocore.exceptions.ClientError as e:
            if _client_error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise PreconditionFailedError(f"conditional write of {self.uri(key)}: the object is no longer "
                                              f"{etag or 'absent'}") from e
            raise self._error("writing", key, e) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error("writing", key, e) from e
        return ObjectInfo(key=key, size=len(data), etag=r["ETag"].strip('"'), sha256=sha)

    def get_file(self, key: str, local: str) -> ObjectInfo:
        """Download to `local` (s3transfer writes a temp file and renames it); check the size."""
        head = self._head(key)
        Path(local).absolute().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._full(key), local, Config=self.transfer)
        except (S3DownloadFailedError, Boto3Error, botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError) as e:
            raise self._error("downloading", key, e) from e
        except OSError as e:
            raise StorageError(e.errno, f"downloading {self.uri(key)} to {local}: {e.strerror or e}") from e
        size = os.path.getsize(local)
        if size != head["ContentLength"]:
            os.unlink(local)
            raise IntegrityError(f"downloading {self.uri(key)}: got {size} bytes, object has {head['ContentLength']}")
        # sha256 stays None: the uploader's x-amz-meta-sha256 is a claim, not a hash of these bytes.
        return ObjectInfo(key=key, size=size, etag=head["ETag"].strip('"'))

    def stat(self, key: str) -> ObjectInfo:
        """One HEAD, no download: size, ETag, and the sha256 recorded in the object's metadata when
        it was uploaded (None for an object written by anything else, e.g. a plain `aws s3 cp`).
        A rewrite of the object drops that metadata unless the writer sets it again."""
        head = self._head(key)
        return ObjectInfo(key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'),
                          sha256=(head.get("Metadata") or {}).get("sha256"))

    def get_bytes(self, key: str) -> bytes:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            data = r["Body"].read()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error("reading", key, e) from e
        if len(data) != r["ContentLength"]:
            raise IntegrityError(f"reading {self.uri(key)}: got {len(data)} bytes, object has {r['ContentLength']}")
        return data

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFoundError:
            return False
        return True

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix` (relative to the store root), sorted by key."""
        check_prefix(prefix)
        out = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    out.append(ObjectInfo(key=key, size=obj["Size"], etag=obj["ETag"].strip('"')))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error("listing", prefix, e) from e
        return sorted(out, key=lambda i: i.key)

    def list(self, prefix: str = "") -> list[str]:
        return [i.key for i in self.list_info(prefix)]

    def delete(self, prefix: str) -> int:
        """Delete every object under `prefix` (non-empty); return how many."""
        if not prefix:
            raise ValueError("refusing to delete with an empty prefix (the whole store)")
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self.prefix + k} for k in keys[start:start + 1000]]
            try:
                r = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                raise self._error("deleting", prefix, e) from e
            if r.get("Errors"):
                first = r["Errors"][0]
                raise StorageError(f"deleting {self.uri(first.get('Key', prefix))}: {first.get('Code')} "
                                   f"{first.get('Message')} ({len(r['Errors'])} objects not deleted)")
        return len(keys)
