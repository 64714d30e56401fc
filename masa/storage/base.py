"""The `Store` protocol, its errors, key rules, and `open_store(uri)`.

A store maps '/'-separated keys (relative to the store root) to immutable byte objects, with S3
semantics everywhere: `list(prefix)` is a plain string-prefix match, a "directory" is only a common
prefix, and every write replaces a whole object atomically (a reader sees the old object or the new
one, never a torn one). Two backends: a local directory (`/path`, `file:///path`) and S3
(`s3://bucket/prefix`, any S3-compatible server through `MASA_S3_ENDPOINT_URL`/`AWS_ENDPOINT_URL`).

Integrity is not left to the backend: every `put_file`/`put_bytes` returns the sha256 and size of
what it wrote, and `masa.storage.artifacts` records them in a manifest that readers verify
(S3 ETags are not content hashes for multipart uploads, so they are used as change tags only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Writers put their temporary files under this name prefix; `list` never reports them.
TMP_PREFIX = ".masa-tmp-"
_HASH_CHUNK = 1 << 20


class StorageError(OSError):
    """A store operation failed; the message names the object URI and the cause."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The key does not exist in the store."""


class PreconditionFailedError(StorageError):
    """A conditional write found the object changed (or present, or absent) since it was read."""


class IntegrityError(StorageError):
    """What was read does not match what was written (size or sha256)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object.

    `etag` changes whenever the object is rewritten (S3 ETag; mtime+size for local files) but is
    NOT a content hash. `sha256`, when set, was computed by this call over the very bytes it moved
    (always on writes; on local reads); None where the store did not hash them (listings, S3 reads).
    """

    key: str
    size: int
    etag: str
    sha256: str | None = None


@runtime_checkable
class Store(Protocol):
    """An object store rooted at `root_uri`; keys are relative, '/'-separated."""

    root_uri: str

    def put_file(self, local: str, key: str) -> ObjectInfo: ...

    def get_file(self, key: str, local: str) -> ObjectInfo: ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...

    def get_bytes(self, key: str) -> bytes: ...

    def put_bytes_if(self, key: str, data: bytes, *, etag: str | None) -> ObjectInfo:
        """Compare-and-swap: write only if the object's ETag is still `etag` (None: only if the object
        does not exist); else raise PreconditionFailedError. For small pointers (the model registry)."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and sha256 as cheaply as the store can tell: a local store hashes the file; S3
        returns the sha256 recorded at upload (one HEAD, no download; None if none was recorded)."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def list_info(self, prefix: str = "") -> list[ObjectInfo]: ...

    def delete(self, prefix: str) -> int: ...

    def uri(self, key: str = "") -> str: ...


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise ValueError saying why.

    Valid: non-empty, relative, '/'-separated, no empty/'.'/'..' segments, no backslashes,
    no segment starting with the writers' temporary prefix.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid key {key!r}: must be a non-empty string")
    if key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid key {key!r}: must be relative and '/'-separated")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"invalid key {key!r}: empty, '.' or '..' segment")
        if part.startswith(TMP_PREFIX):
            raise ValueError(f"invalid key {key!r}: {TMP_PREFIX!r} is reserved for temporary files")
    return key


def check_prefix(prefix: str) -> str:
    """Like `check_key`, but '' (everything) and a trailing '/' are allowed."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with single '/' (empty parts are skipped)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def sha256_file(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a local file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
