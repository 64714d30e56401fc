"""A local-directory store with atomic, durable writes.

Every write goes to a temporary file in the destination's own directory (same filesystem), is
fsync'ed, then `os.replace`d over the key, and the directory is fsync'ed: a crash or a full disk
leaves either the previous object or the new one, never a torn file. On any error the temporary
file is removed and a `StorageError` names the key (ENOSPC says "no space left").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from masa.storage.base import (
    TMP_PREFIX,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    check_key,
    check_prefix,
    sha256_file,
)

_COPY_CHUNK = 1 << 20


def path_from_uri(uri: str) -> Path:
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URI {uri!r} names host {parsed.netloc!r}; only local paths are supported")
        return Path(unquote(parsed.path))
    return Path(uri)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _io_error(action: str, uri: str, e: OSError) -> StorageError:
    reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return StorageError(e.errno, f"{action} {uri}: {reason}")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def atomic_write(dest: Path, chunks, *, uri: str, durable: bool = True) -> tuple[str, int]:
    """Write the byte `chunks` to `dest` atomically (temp + replace); return (sha256, size).

    `durable` also fsyncs the file and its directory (store writes: a crash right after must not
    lose the object). Downloads skip it: a lost local copy is simply fetched again.
    """
    tmp = dest.parent / f"{TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:12]}"
    h = hashlib.sha256()
    size = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        if durable:
            _fsync_dir(dest.parent)
    except OSError as e:
        _remove_quietly(tmp)
        raise _io_error("writing", uri, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    return h.hexdigest(), size


def _read_chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            yield chunk


class LocalStore:
    """Store rooted at a local directory (created on first write)."""

    def __init__(self, uri: str) -> None:
        self.root = path_from_uri(uri).resolve()
        self.root_uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({self.root_uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str = "") -> str:
        return (self.root / key).as_uri() if key else self.root_uri

    def _info(self, key: str, path: Path, sha256: str | None = None) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}", sha256=sha256)

    def put_file(self, local: str, key: str) -> ObjectInfo:
        dest = self._path(key)
        if not Path(local).is_file():
            raise StorageError(errno.ENOENT, f"uploading {local} to {self.uri(key)}: no such local file")
        sha, _ = atomic_write(dest, _read_chunks(Path(local)), uri=self.uri(key))
        return self._info(key, dest, sha)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        dest = self._path(key)
        sha, _ = atomic_write(dest, [bytes(data)], uri=self.uri(key))
        return self._info(key, dest, sha)

    def put_bytes_if(self, key: str, data: bytes, *, etag: str | None) -> ObjectInfo:
        """Compare-and-swap under an exclusive `flock` on a lock file beside the object (hidden from
        listings by its temporary-file prefix): check the ETag, then write atomically."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / f"{TMP_PREFIX}{dest.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if the process dies
            now = self._info(key, dest).etag if dest.is_file() else None
            if now != etag:
                raise PreconditionFailedError(f"conditional write of {self.uri(key)}: expected "
                                              f"{etag or 'no object'}, found {now or 'no object'}")
            return self.put_bytes(key, data)

    def get_file(self, key: str, local: str) -> ObjectInfo:
        src = self._path(key)
        try:
            info = self._info(key, src)
            dest = Path(local).absolute()
            sha, size = atomic_write(dest, _read_chunks(src), uri=dest.as_uri(), durable=False)
        except FileNotFoundError as e:
            if not src.is_file():
                raise ObjectNotFoundError(errno.ENOENT, f"no object {self.uri(key)}") from e
            raise
        return ObjectInfo(key=key, size=size, etag=info.etag, sha256=sha)

    def get_bytes(self, key: str) -> bytes:
        src = self._path(key)
        try:
            return src.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as e:
            raise ObjectNotFoundError(errno.ENOENT, f"no object {self.uri(key)}") from e
        except OSError as e:
            raise _io_error("reading", self.uri(key), e) from e

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag and sha256 of the object: on local disk hashing is the cheap way to know."""
        path = self._path(key)
        try:
            sha, _ = sha256_file(str(path))
            return self._info(key, path, sha)
        except (FileNotFoundError, IsADirectoryError) as e:
            raise ObjectNotFoundError(errno.ENOENT, f"no object {self.uri(key)}") from e
        except OSError as e:
            raise _io_error("reading", self.uri(key), e) from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix` (string match, like S3), sorted by key."""
        check_prefix(prefix)
        # Walk only the deepest directory the prefix pins down, then filter by the string prefix.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        out.append(self._info(key, path))
                    except FileNotFoundError:  # deleted while listing
                        continue
        return sorted(out, key=lambda i: i.key)

    def list(self, prefix: str = "") -> list[str]:
        return [i.key for i in self.list_info(prefix)]

    def delete(self, prefix: str) -> int:
        """Delete every object under `prefix` (non-empty); return how many; prune empty dirs."""
        if not prefix:
            raise ValueError("refusing to delete with an empty prefix (the whole store)")
        infos = self.list_info(prefix)
        for info in infos:
            path = self.root / info.key
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        if prefix.endswith("/") and (self.root / prefix).is_dir():
            shutil.rmtree(self.root / prefix, ignore_errors=True)  # leftover temp files only
        return len(infos)
