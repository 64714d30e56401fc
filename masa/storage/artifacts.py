"""Atomic directory artifacts (checkpoints, models) on any store, committed by a manifest.

Protocol: a writer uploads every file first and `MANIFEST.json` LAST; the manifest lists each
file's size and sha256. A prefix without a readable manifest is incomplete and is never loaded;
a reader verifies every downloaded file against the manifest and refuses, naming the file, any
that is missing, truncated or altered. Re-writing a prefix deletes its old manifest first, so a
half-rewritten prefix is incomplete rather than "complete with mixed files".

This replaces verl's / the MASA code's convention of "the newest `global_step_N` directory plus a
`latest_checkpointed_iteration.txt`", which trusts whatever a crashed writer left behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from masa.storage.base import (
    TMP_PREFIX,
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
    Store,
    check_key,
    join_key,
    sha256_file,
)
from masa.storage.local import atomic_write

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
HASH_WORKERS = 8  # local_manifest: the serving TrainJob's node has cores to spare (resources.cpu_request)


class CheckpointError(StorageError):
    """A directory artifact is incomplete, or a file in it is missing or does not match its manifest."""


class CorruptArtifactError(CheckpointError):
    """A committed artifact's content does not match its manifest (not a transfer glitch: the bytes
    were read in full). `uri` is the artifact, `file` the first bad file in it."""

    def __init__(self, message: str, *, uri: str, file: str) -> None:
        super().__init__(message)
        self.uri, self.file = uri, file


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Contents of MANIFEST.json: relative path -> FileEntry, plus free-form `meta` (e.g. step)."""

    files: dict[str, FileEntry]
    created_at: str
    format_version: int = FORMAT_VERSION
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["files"] = {k: asdict(v) for k, v in sorted(self.files.items())}
        return json.dumps(d, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        try:
            d = json.loads(data)
            version = d["format_version"]
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{where}: manifest format_version {version} is not supported "
                                      f"(this code reads {FORMAT_VERSION})")
            files = {check_key(k): FileEntry(size=int(v["size"]), sha256=str(v["sha256"]))
                     for k, v in d["files"].items()}  # check_key: no '..' escaping the target dir
            return cls(files=files, created_at=str(d["created_at"]), format_version=version,
                       meta=dict(d.get("meta", {})))
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{where}: unreadable manifest ({type(e).__name__}: {e})") from e


def _local_files(local_dir: Path) -> list[str]:
    """Relative '/'-paths of the regular files under `local_dir` (no manifest, no temp files)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(local_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(TMP_PREFIX))
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(local_dir).as_posix()
            if rel != MANIFEST and not name.startswith(TMP_PREFIX):
                out.append(rel)
    return out


def local_manifest(local_dir: str | Path, *, meta: dict | None = None, workers: int = HASH_WORKERS) -> Manifest:
    """The manifest `put_dir_atomic` would write for `local_dir`, computed before any upload: its
    digest names the artifact while it is still uploading (a serving TrainJob hands the model over
    from memory and uploads it afterwards, masa.train.listen). Files are hashed `workers` at a time
    (hashlib lets go of the GIL): a sharded 8B model in a fraction of one core's time."""
    root = Path(local_dir)
    rels = _local_files(root)
    with ThreadPoolExecutor(max(1, min(workers, len(rels)))) as pool:
        hashed = list(pool.map(lambda rel: sha256_file(str(root / rel)), rels))
    files = {rel: FileEntry(size=size, sha256=sha) for rel, (sha, size) in zip(rels, hashed, strict=True)}
    return Manifest(files=files, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), meta=dict(meta or {}))


def put_dir_atomic(store: Store, local_dir: str, key_prefix: str, *, meta: dict | None = None,
                   manifest: Manifest | None = None) -> Manifest:
    """Upload every file of `local_dir` under `key_prefix/`, then commit it with MANIFEST.json.

    The sha256 recorded is the one computed from the bytes actually sent; with `manifest`
    (`local_manifest` of the same directory) that manifest is committed, byte for byte, once every
    file sent matches its entry. Returns the manifest. Raises StorageError (no manifest written: the
    prefix stays incomplete) if any upload fails, CheckpointError if a file changed since `manifest`.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise CheckpointError(f"cannot upload {local_dir}: not a directory")
    rels = _local_files(root)
    if not rels:
        raise CheckpointError(f"cannot upload {local_dir}: no files in it")
    try:
        json.dumps(meta)
    except TypeError as e:  # fail before uploading anything, not after
        raise CheckpointError(f"cannot upload {local_dir}: meta is not JSON-serialisable ({e})") from e
    manifest_key = join_key(key_prefix, MANIFEST)
    if store.exists(manifest_key):
        store.delete(manifest_key)  # uncommit first: a half-overwritten prefix must read as incomplete
    files = {}
    for rel in rels:
        info = store.put_file(str(root / rel), join_key(key_prefix, rel))
        sha = info.sha256 or sha256_file(str(root / rel))[0]
        files[rel] = FileEntry(size=info.size, sha256=sha)
    if manifest is not None and manifest.files != files:
        changed = min(k for k in manifest.files.keys() | files.keys() if manifest.files.get(k) != files.get(k))
        raise CheckpointError(f"cannot commit {store.uri(key_prefix)}: {changed} is not what its manifest says")
    manifest = manifest or Manifest(files=files, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    meta=dict(meta or {}))
    store.put_bytes(manifest_key, manifest.to_json())
    return manifest


def read_manifest(store: Store, prefix: str) -> Manifest:
    """The manifest of the artifact at `prefix`; CheckpointError if absent (incomplete) or unreadable."""
    key = join_key(prefix, MANIFEST)
    try:
        data = store.get_bytes(key)
    except ObjectNotFoundError as e:
        raise CheckpointError(f"incomplete artifact {store.uri(join_key(prefix))}: no {MANIFEST}") from e
    return Manifest.from_json(data, where=store.uri(key))


def is_complete(store: Store, prefix: str) -> bool:
    """True iff `prefix` has a readable manifest and every file it lists exists with its size.

    Cheap (one GET and one LIST); content hashes are checked on download by `get_dir_verified`.
    """
    try:
        manifest = read_manifest(store, prefix)
    except CheckpointError:
        return False
    base = join_key(prefix)
    sizes = {i.key: i.size for i in store.list_info(base + "/" if base else "")}
    return all(sizes.get(join_key(prefix, rel)) == e.size for rel, e in manifest.files.items())


def verify_stored(store: Store, prefix: str) -> list[str]:
    """Check a committed artifact against its manifest without downloading it; [] when it verifies.

    Each listed file's size and sha256 as `store.stat` tells them: on S3 the sha256 recorded in the
    object's metadata at upload (one HEAD per file), so a same-size rewrite by anything but masa is
    caught; on a local store the file is hashed. Each problem names the file. A store that cannot be
    reached raises StorageError: that is not a verdict on the artifact.
    """
    try:
        manifest = read_manifest(store, prefix)
    except CheckpointError as e:
        return [str(e)]
    problems = []
    for rel, entry in sorted(manifest.files.items()):
        try:
            info = store.stat(join_key(prefix, rel))
        except ObjectNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        if info.size != entry.size:
            problems.append(f"{rel}: size {info.size} != {entry.size} in the manifest")
        elif info.sha256 is None:
            problems.append(f"{rel}: no sha256 recorded with the object (rewritten outside masa)")
        elif info.sha256 != entry.sha256:
            problems.append(f"{rel}: sha256 {info.sha256[:12]}… != {entry.sha256[:12]}… in the manifest")
    return problems


@dataclass(frozen=True)
class TreeCheck:
    """`verify_tree`'s verdict: each committed artifact's problems ([] = verifies), and the objects
    that no manifest lists (an interrupted writer's leftovers, or something written outside masa)."""

    artifacts: dict[str, list[str]]
    unlisted: list[str]

    @property
    def bad(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.artifacts.items() if v}


# The model registry's single objects (masa.storage.registry): the `latest` pointer, swapped whole by a
# conditional PUT, and the version records; each is one atomic object, not a manifest-committed directory.
REGISTRY_OBJECT = re.compile(r"(^|/)models/[^/]+/(latest|records/[^/]+\.json)$")


def verify_tree(store: Store, *, deep: bool = False) -> TreeCheck:
    """Verify every committed artifact in the store (every prefix holding a MANIFEST.json).

    `deep=False`: `verify_stored` (HEADs on S3, hashes locally). `deep=True`: download each into a
    temporary directory and hash it (`get_dir_verified`), which also catches an object whose bytes
    changed behind metadata that still claims the old sha256.
    """
    import tempfile

    keys = store.list("")
    prefixes = [k[: -len(MANIFEST)].rstrip("/") for k in keys if k == MANIFEST or k.endswith("/" + MANIFEST)]
    artifacts: dict[str, list[str]] = {}
    listed = {join_key(p, MANIFEST) for p in prefixes}
    for prefix in prefixes:
        try:
            listed.update(join_key(prefix, rel) for rel in read_manifest(store, prefix).files)
        except CheckpointError as e:
            artifacts[prefix] = [str(e)]
            continue
        if not deep:
            artifacts[prefix] = verify_stored(store, prefix)
            continue
        with tempfile.TemporaryDirectory(prefix="masa-verify-") as tmp:
            try:
                get_dir_verified(store, prefix, tmp)
                artifacts[prefix] = []
            except CheckpointError as e:
                artifacts[prefix] = [str(e)]
    return TreeCheck(artifacts=artifacts, unlisted=[k for k in keys if k not in listed and not REGISTRY_OBJECT.search(k)])


def uncommit(store: Store, prefix: str) -> None:
    """Delete the artifact's MANIFEST.json: it reads as incomplete, so its producer recomputes it."""
    store.delete(join_key(prefix, MANIFEST))


def get_dir_verified(store: Store, prefix: str, local_dir: str,
                     only: Callable[[str], bool] | None = None) -> Manifest:
    """Download the artifact at `prefix` into `local_dir`, verifying each file against the manifest.

    Raises CheckpointError naming the file when it is missing or its size/sha256 differ (the bad
    local copy is removed), or when the prefix has no manifest. Files already verified stay in
    `local_dir`; MANIFEST.json is written there last, so a complete local copy is recognisable.
    `only(rel)`: download just those files (e.g. a tokenizer without the weights); no MANIFEST.json
    is written then, since the copy is not complete.
    """
    manifest = read_manifest(store, prefix)
    root = Path(local_dir)
    for rel, entry in sorted(manifest.files.items()):
        if only is not None and not only(rel):
            continue
        key = join_key(prefix, rel)
        dest = root / rel
        try:
            got = store.get_file(key, str(dest))
        except ObjectNotFoundError as e:
            raise CorruptArtifactError(f"checkpoint file {rel} missing: {store.uri(key)} is listed in the "
                                       "manifest but does not exist", uri=store.uri(prefix), file=rel) from e
        except IntegrityError as e:
            raise CheckpointError(f"checkpoint file {rel} failed verification: {e}") from e
        # Hash the local copy unless the store already hashed exactly the bytes it wrote there.
        sha, size = (got.sha256, got.size) if got.sha256 else sha256_file(str(dest))
        if size != entry.size or sha != entry.sha256:
            dest.unlink(missing_ok=True)
            what = f"size {size} != {entry.size}" if size != entry.size else f"sha256 {sha[:12]}… != {entry.sha256[:12]}…"
            raise CorruptArtifactError(f"checkpoint file {rel} failed verification ({what}): {store.uri(key)}",
                                       uri=store.uri(prefix), file=rel)
    if only is not None:
        return manifest
    atomic_write(root / MANIFEST, [manifest.to_json()], uri=(root / MANIFEST).absolute().as_uri(), durable=False)
    return manifest


def latest_complete(store: Store, prefix_root: str, pattern: str = r"step-(\d+)") -> str | None:
    """The prefix (e.g. 'ckpt/step-000012') of the newest complete artifact under `prefix_root`.

    Candidates are the direct children of `prefix_root` whose name fully matches the regex
    `pattern`; its first group, as an integer, orders them. Incomplete ones are skipped.
    """
    regex = re.compile(pattern)
    if regex.groups < 1:
        raise ValueError(f"pattern {pattern!r} needs a capturing group with the step number")
    base = join_key(prefix_root)
    children: dict[str, int] = {}
    for key in store.list(base + "/" if base else ""):
        name = key[len(base) + 1 if base else 0:].split("/", 1)[0]
        m = regex.fullmatch(name)
        if m and "/" in key[len(base):].lstrip("/"):
            children[name] = int(m.group(1))
    for name in sorted(children, key=lambda n: children[n], reverse=True):
        candidate = join_key(base, name)
        if is_complete(store, candidate):
            return candidate
    return None
