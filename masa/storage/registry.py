"""The model registry: promoted models under `<store>/models/<name>/`, and the `latest` pointer.

    models/<name>/<version>/            a Hugging Face model directory + README.md (model card),
                                        committed manifest-last (masa.storage.artifacts)
    models/<name>/records/<version>.json  what the promote step knew: figures, data snapshot, run id
    models/<name>/latest                the pointer: {"version", "history", "seq", "nonce", ...}

A version is written whole (files, then its manifest) before the pointer moves, so a promotion killed at
any point leaves the old pointer valid and at most an uncommitted version directory, never listed.
The pointer moves by compare-and-swap on the ETag it read (`Store.put_bytes_if`: S3 conditional PUT,
If-Match / If-None-Match, which SeaweedFS and AWS S3 honour; a `flock` on a local store), so of two
promotions racing from the same read exactly one wins and the other gets `PreconditionFailedError`.
Versions are never deleted: rollback moves the pointer back along its history.

`latest:<name>` (resolved against a store) and the store URI of a pointer (`.../models/<name>/latest`)
both resolve to the version's URI (`resolve_ref`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from masa.storage.artifacts import MANIFEST, is_complete, put_dir_atomic
from masa.storage.base import ObjectNotFoundError, PreconditionFailedError, StorageError, Store
from masa.storage.stores import open_store

ROOT = "models"
LATEST = "latest"
LATEST_REF = "latest:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RegistryError(StorageError):
    """A registry operation cannot proceed (no such model or version, nothing to roll back to)."""


@dataclass(frozen=True)
class Pointer:
    """The `latest` object. `history` lists the versions that were latest, oldest first, ending with
    `version`; `seq` counts the moves and `nonce` makes every write's bytes (so its ETag) unique."""

    version: str
    history: tuple[str, ...]
    seq: int
    updated_at: str
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "history": list(self.history)}, indent=1, sort_keys=True).encode()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def model_prefix(name: str, version: str | None = None) -> str:
    return f"{ROOT}/{check_name(name)}" + (f"/{version}" if version else "")


def new_version() -> str:
    """Sortable by time and unique without coordination (two racing promotions never share one)."""
    ns = time.time_ns()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns // 1000 % 10**6:06d}Z-{uuid.uuid4().hex[:6]}"


def versions(store: Store, name: str) -> list[str]:
    """Committed versions of `name`, oldest first (an uncommitted one, from a killed promotion, is not listed)."""
    base = model_prefix(name) + "/"
    names = sorted({k[len(base):].split("/", 1)[0] for k in store.list(base) if k.endswith("/" + MANIFEST)})
    return [v for v in names if v != "records" and is_complete(store, model_prefix(name, v))]


def read_latest(store: Store, name: str) -> tuple[Pointer | None, str | None]:
    """(pointer, its ETag), or (None, None) when nothing was promoted yet."""
    key = f"{model_prefix(name)}/{LATEST}"
    try:
        info = store.stat(key)
        data = json.loads(store.get_bytes(key))
    except ObjectNotFoundError:
        return None, None
    except ValueError as e:
        raise RegistryError(f"{store.uri(key)}: not a registry pointer ({e})") from e
    # stat then get: if the pointer moved in between, the swap's If-Match fails, as it should
    p = Pointer(version=data["version"], history=tuple(data["history"]), seq=data["seq"],
                updated_at=data["updated_at"], nonce=data.get("nonce", ""))
    return p, info.etag


def read_record(store: Store, name: str, version: str) -> dict:
    try:
        return json.loads(store.get_bytes(f"{model_prefix(name)}/records/{version}.json"))
    except ObjectNotFoundError:
        return {}


def write_record(store: Store, name: str, version: str, record: dict) -> None:
    store.put_bytes(f"{model_prefix(name)}/records/{version}.json", json.dumps(record, indent=1, sort_keys=True,
                                                                               default=str).encode())


def publish(store: Store, name: str, local_dir: str, record: dict) -> str:
    """Write a new version (record first, then the directory, manifest last); the pointer is not moved."""
    version = new_version()
    write_record(store, name, version, {**record, "version": version})
    put_dir_atomic(store, local_dir, model_prefix(name, version), meta={"model": name, "version": version})
    return version


def move_latest(store: Store, name: str, version: str, *, expect: tuple[Pointer | None, str | None],
                rollback: bool = False) -> Pointer:
    """Point `latest` at `version` if the pointer is still `expect` (what the caller read); else raise
    PreconditionFailedError. A rollback drops the current version from the history instead of adding."""
    if version not in versions(store, name):
        raise RegistryError(f"{store.uri(model_prefix(name, version))}: no such committed version of {name!r}")
    old, etag = expect
    history = old.history if old else ()
    history = history[:-1] if rollback else (*history, version)
    new = Pointer(version=version, history=history, seq=(old.seq if old else 0) + 1,
                  updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store.put_bytes_if(f"{model_prefix(name)}/{LATEST}", new.to_json(), etag=etag)
    return new


def promote(store: Store, name: str, version: str) -> Pointer:
    """Move `latest` to an existing version (read, then compare-and-swap)."""
    return move_latest(store, name, version, expect=read_latest(store, name))


def rollback(store: Store, name: str) -> Pointer:
    """Point `latest` back at the version before the current one in its history."""
    cur = read_latest(store, name)
    if cur[0] is None or len(cur[0].history) < 2:
        raise RegistryError(f"model {name!r}: no earlier promoted version to roll back to")
    return move_latest(store, name, cur[0].history[-2], expect=cur, rollback=True)


def models(store: Store) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list(f"{ROOT}/") if k.endswith(f"/{LATEST}") and k.count("/") == 2})


def resolve_ref(ref: str, store_uri: str | None = None) -> str:
    """The store URI of the version a reference points at: `latest:<name>` (in `store_uri`) or the URI of
    a pointer object (`<store>/models/<name>/latest`). Anything else is returned unchanged."""
    if ref.startswith(LATEST_REF):
        if not store_uri:
            raise RegistryError(f"model {ref!r}: a registry reference needs the store (set `store`)")
        store, name = open_store(store_uri), check_name(ref[len(LATEST_REF):])
    elif ref.rstrip("/").endswith(f"/{LATEST}") and f"/{ROOT}/" in ref:
        head, _, rest = ref.rstrip("/").rpartition(f"/{ROOT}/")
        store, name = open_store(head), rest.split("/")[0]
    else:
        return ref
    pointer, _ = read_latest(store, name)
    if pointer is None:
        raise RegistryError(f"model {ref!r}: nothing promoted under {store.uri(model_prefix(name))} yet")
    return store.uri(model_prefix(name, pointer.version))


__all__ = ["PreconditionFailedError", "Pointer", "RegistryError", "model_prefix", "models", "move_latest", "promote",
           "publish", "read_latest", "read_record", "resolve_ref", "rollback", "versions", "write_record"]
