"""Resolve a model reference (local dir, s3:// URI, Hugging Face id) to a verified local directory.

Called before any engine starts, so a missing or unreadable model fails at once with an error
naming the path, not minutes later inside vLLM or DeepSpeed.

S3 models are cached under `cache_dir/<name>-<digest>`, where the digest covers the URI and every
object's (key, size, ETag): a changed object gives a new cache entry, an unchanged one is reused
without any download. Downloads are serialised by an exclusive `flock` per entry (safe across
processes and threads), go to a temporary directory renamed into place when complete, and are
verified against MANIFEST.json when the prefix has one (sizes are always checked).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from masa.storage.artifacts import MANIFEST, get_dir_verified
from masa.storage.base import TMP_PREFIX, ObjectInfo, StorageError
from masa.storage.local import path_from_uri
from masa.storage.registry import resolve_ref
from masa.storage.stores import open_store

_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# The "download finished" marker lives BESIDE the cache entry (`<entry>.masa-complete`), never inside
# it: the entry is the model directory itself, which training copies from and republishes, so any
# bookkeeping file inside it would leak into published checkpoints and their manifests (issue 18).
_DONE_SUFFIX = ".masa-complete"


def _done(entry: Path) -> Path:
    return entry.with_name(entry.name + _DONE_SUFFIX)


class ModelNotFoundError(StorageError, FileNotFoundError):
    """The model reference does not resolve to a readable model directory."""


def default_cache_dir() -> Path:
    """`MASA_MODEL_CACHE`, else `$XDG_CACHE_HOME/masa/models`, else `~/.cache/masa/models`."""
    if os.environ.get("MASA_MODEL_CACHE"):
        return Path(os.environ["MASA_MODEL_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "masa" / "models"


def check_model_dir(path: str | Path, *, ref: str | None = None) -> str:
    """Return `path` as a string if it is a directory with a readable JSON config.json, else raise."""
    p = Path(path)
    named = f"model {ref!r} ({p})" if ref and ref != str(p) else f"model directory {str(p)!r}"
    if not p.is_dir():
        raise ModelNotFoundError(errno.ENOENT, f"{named}: no such directory")
    try:
        json.loads((p / "config.json").read_text())
    except FileNotFoundError as e:
        raise ModelNotFoundError(errno.ENOENT, f"{named}: no config.json in it") from e
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(errno.EIO, f"{named}: config.json unreadable ({e})") from e
    return str(p)


def resolve_model(uri_or_path: str, *, cache_dir: str | None = None, store: str | None = None) -> str:
    """Local directory holding the model `uri_or_path` (checked to contain a readable config.json).

    - a local path or `file://` URI: returned as is;
    - `s3://bucket/prefix`: downloaded once into the cache (see module docstring), then reused;
    - `org/name`: `huggingface_hub.snapshot_download` (offline when HF_HUB_OFFLINE=1);
    - `latest:<name>` (in `store`) or a registry pointer's URI: the promoted version (masa.storage.registry).
    """
    if not isinstance(uri_or_path, str) or not uri_or_path:
        raise ModelNotFoundError(errno.EINVAL, f"invalid model reference {uri_or_path!r}")
    uri_or_path = resolve_ref(uri_or_path, store)
    if uri_or_path.startswith("s3://"):
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return check_model_dir(_resolve_s3(uri_or_path, cache), ref=uri_or_path)
    if uri_or_path.startswith("file://"):
        return check_model_dir(path_from_uri(uri_or_path), ref=uri_or_path)
    if "://" in uri_or_path:
        raise ModelNotFoundError(errno.EINVAL, f"model {uri_or_path!r}: unsupported scheme (use a path, s3:// or org/name)")
    looks_local = os.path.isabs(uri_or_path) or uri_or_path.startswith((".", "~")) or os.path.exists(uri_or_path)
    if looks_local or not _HF_ID.fullmatch(uri_or_path):
        return check_model_dir(os.path.expanduser(uri_or_path))
    return check_model_dir(_resolve_hf(uri_or_path, cache_dir), ref=uri_or_path)


def _resolve_hf(repo_id: str, cache_dir: str | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # Read the flag at call time: huggingface_hub freezes its own copy at import.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=offline)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        why = "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" if offline else f"{type(e).__name__}: {e}"
        raise ModelNotFoundError(errno.ENOENT, f"model {repo_id!r}: no local directory of that name, and as a "
                                 f"Hugging Face id it is unavailable ({why})") from e


def _cache_entry(uri: str, infos: list[ObjectInfo], cache: Path) -> Path:
    tag = json.dumps([uri] + [[i.key, i.size, i.etag] for i in infos]).encode()
    name = re.sub(r"[^\w.-]", "_", uri.rstrip("/").rsplit("/", 1)[-1]) or "model"
    return cache / f"{name}-{hashlib.sha256(tag).hexdigest()[:16]}"


def _resolve_s3(uri: str, cache: Path) -> Path:
    store = open_store(uri)
    infos = store.list_info("")
    if not infos:
        raise ModelNotFoundError(errno.ENOENT, f"model {uri!r}: no objects under that prefix")
    entry = _cache_entry(uri, infos, cache)
    if _done(entry).exists() and entry.is_dir():
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        if _done(entry).exists() and entry.is_dir():  # another process finished while we waited
            return entry
        tmp = cache / f"{TMP_PREFIX}{entry.name}-{uuid.uuid4().hex[:8]}"
        try:
            _download(store, infos, tmp)
            check_model_dir(tmp, ref=uri)  # never cache something that is not a model
            if entry.exists():  # a stale, unfinished entry (no marker), or one of the older layout
                shutil.rmtree(entry)
            os.rename(tmp, entry)
            _done(entry).write_text(uri + "\n")  # after the rename: a marker always means a whole entry
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _download(store, infos: list[ObjectInfo], dest: Path) -> None:
    if any(i.key == MANIFEST for i in infos):
        get_dir_verified(store, "", str(dest))
        return
    for info in infos:
        got = store.get_file(info.key, str(dest / info.key))
        if got.size != info.size:
            raise StorageError(f"model object {store.uri(info.key)}: got {got.size} bytes, listed {info.size}")
