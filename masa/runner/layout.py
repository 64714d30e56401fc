"""Where a run's artifacts live in the store, pointer artifacts, and run-once steps.

Large outputs (checkpoints, rollout shards) live in the artifact store under
`<run_id>/<branch>/round-NNN/<part>/`, each a directory written files-first, manifest-last
(`masa.storage`). KFP artifacts carry only small JSON *pointers* to them, so the Kubeflow UI shows
lineage without copying gigabytes through the pipeline root.

`run_once` makes every step idempotent: a part whose manifest exists and whose recorded input
fingerprint matches is reused, not recomputed. A step killed mid-way leaves no manifest, so its
rerun recomputes exactly that part; later steps never see a partial one.

Reuse is verified, not trusted (issue 18): a part is reused only if every file still matches its
manifest's size and sha256 (`verify_stored`: one HEAD per file on S3, a hash on local disk); one
that does not is recomputed with a warning naming it. A step that downloads a corrupt input
uncommits that part (deletes its manifest) and fails naming it and the command that heals it:
`masa run --recheck` recomputes the part and, through the input fingerprints, everything after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.storage import (
    MANIFEST,
    CheckpointError,
    CorruptArtifactError,
    get_dir_verified,
    is_complete,
    open_store,
    put_dir_atomic,
    uncommit,
    verify_stored,
)
from masa.train.handover import is_light
from masa.train.served import ServedTrainer, read_key, running_address
from masa.train.spec import HeldBy

STATS_FILE = "stats.json"
HEAL = ("rerun `masa run --recheck` with the same --preset/--store/--set (on Kubeflow: rerun the pipeline "
        "with caching off); it recomputes that part and every part that depends on it")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLayout:
    store_uri: str
    run_id: str

    def part(self, branch: str, round_idx: int, part: str) -> str:
        return f"{self.run_id}/{branch}/round-{round_idx:03d}/{part}"

    def base(self, part: str) -> str:
        return f"{self.run_id}/base/{part}"

    def uri(self, prefix: str) -> str:
        return open_store(self.store_uri).uri(prefix)


@dataclass(frozen=True)
class Pointer:
    """The content of a KFP pointer artifact: where a part lives in the store (`store`, `prefix`), and what
    it is. Written as JSON of its set fields (`write_pointer`), read back by `read_pointer`."""

    store: str
    prefix: str
    kind: str | None = None  # "checkpoint", "rollouts", "scored"; None for the base model
    name: str | None = None  # a checkpoint's branch, or "base"
    round: int | None = None  # a checkpoint's round index
    shard: int | None = None  # a rollout shard's index (`resources.rollout_shards` > 1)
    uri: str | None = None  # the part's URI when it differs from store/prefix
    # a checkpoint a serving TrainJob hands over while its upload runs (masa.train.handover): the digest
    # of the manifest it will commit, and the job that holds it (`local_model`, `policy_tokenizer`)
    digest: str | None = None
    held_by: HeldBy | None = None

    def to_json(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return json.dumps(fields, sort_keys=True, indent=1)


_POINTER_FIELDS = {f.name for f in dataclasses.fields(Pointer)}


def train_stats_key(prefix: str) -> str:
    """Where the train step's stats live: a sealed part of their own beside the checkpoint (with a
    serving TrainJob, the model's identity and the job that holds it while it uploads)."""
    return f"{prefix}-stats/{STATS_FILE}"


def write_pointer(path: str | Path, pointer: Pointer) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(pointer.to_json())


def read_pointer(path: str | Path) -> Pointer:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"artifact {path} is not a masa pointer: {e}") from e
    if not isinstance(data, dict) or "store" not in data or "prefix" not in data:
        raise ValueError(f"artifact {path} is not a masa pointer (needs store and prefix)")
    unknown = sorted(set(data) - _POINTER_FIELDS)
    if unknown:
        raise ValueError(f"artifact {path}: unknown pointer fields {unknown} (known: {sorted(_POINTER_FIELDS)})")
    if data.get("held_by") is not None:
        data = {**data, "held_by": HeldBy.from_dict(data["held_by"])}
    return Pointer(**data)


def reusable(store_uri: str, prefix: str, fingerprint: str, *, stats_key: str | None = None,
             ) -> tuple[dict[str, Any] | None, str | None]:
    """(stats, None) when the part can be reused; (None, why) when a committed part with this
    fingerprint fails verification (it is recomputed; `why` names the part and file); (None, None)
    when there is nothing to reuse."""
    store = open_store(store_uri)
    stats_key = stats_key or f"{prefix}/{STATS_FILE}"
    if not is_complete(store, prefix) or not store.exists(stats_key):
        return None, None
    stats = json.loads(store.get_bytes(stats_key))
    if stats.get("fingerprint") != fingerprint:
        return None, None
    bad = verify_stored(store, prefix)
    if bad:
        why = f"{store.uri(prefix)} failed verification ({'; '.join(bad)})"
        log.warning("not reusing %s; recomputing it", why)
        print(f"masa: warning: not reusing {why}; recomputing it", flush=True)
        return None, why
    return stats, None


def run_once(store_uri: str, prefix: str, fingerprint: str,
             produce: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `produce(tmpdir) -> stats` unless a complete part with this fingerprint exists; publish
    the directory atomically (files, then manifest) and return its stats (with `reused`)."""
    hit, why = reusable(store_uri, prefix, fingerprint)
    if hit is not None:
        return {**hit, "reused": True}
    work = Path(tempfile.mkdtemp(prefix="masa-part-"))
    started = time.time()
    try:
        stats = produce(work)
        # wall-clock stamps let the report measure the run end to end (timing.total_s)
        stats = {**stats, "fingerprint": fingerprint, "started_at": started, "finished_at": time.time()}
        (work / STATS_FILE).write_text(json.dumps(stats, sort_keys=True, indent=1, default=float))
        put_dir_atomic(open_store(store_uri), str(work), prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**stats, "reused": False, **({"recomputed": why} if why else {})}


def fetch(store_uri: str, prefix: str, dest: str | Path) -> Path:
    """Download a complete part, verifying every file against its manifest. A corrupt one is
    uncommitted, so its producer recomputes it, and the error names it and the healing command."""
    dest = Path(dest)
    store = open_store(store_uri)
    try:
        get_dir_verified(store, prefix, str(dest))
    except CorruptArtifactError as e:
        raise corrupt_input(store, prefix, e) from e
    return dest


def corrupt_input(store, prefix: str, e: Exception) -> CorruptArtifactError:
    """Uncommit the corrupt part at `prefix` and return the error to raise: it names the part, what
    is wrong, and how to heal it."""
    uncommit(store, prefix)
    msg = f"input part {store.uri(prefix)} is corrupt: {e}. Its manifest was removed; to heal, {HEAL}"
    print(f"masa: error: {msg}", flush=True)  # the line `masa run` shows on the terminal
    return CorruptArtifactError(msg, uri=store.uri(prefix), file=getattr(e, "file", ""))


def local_tokenizer(store_uri: str, prefix: str, cache_root: str | Path) -> Path:
    """The checkpoint's tokenizer and config without its weights or optimizer state: the data filter
    and scoring only count and re-tokenize, and an 8B checkpoint is ~16 GB of weights."""
    dest = Path(cache_root) / (prefix.replace("/", "__") + "__light")
    done = dest.with_name(dest.name + ".verified")  # beside the copy, as in local_path_or_fetch
    if not (done.exists() and dest.is_dir()):
        shutil.rmtree(dest, ignore_errors=True)
        get_dir_verified(open_store(store_uri), prefix, str(dest), only=is_light)
        done.touch()
    return dest


def local_path_or_fetch(store_uri: str, prefix: str, cache_root: str | Path) -> Path:
    """A local directory holding the part: the store's own directory when it is local and
    verified, else a verified download under `cache_root`."""
    dest = Path(cache_root) / prefix.replace("/", "__")
    # the marker sits beside the copy, not in it: the copy is a model directory that training
    # republishes, and it must hold exactly the part's own files (issue 18)
    done = dest.with_name(dest.name + ".verified")
    if done.exists() and dest.is_dir():
        return dest
    done.unlink(missing_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    fetch(store_uri, prefix, dest)
    done.touch()
    return dest


def run_layout(cfg: RunConfig) -> RunLayout:
    """Where `cfg`'s run keeps its artifacts: `<store>/<name>-<fingerprint>/`."""
    if not cfg.store:
        raise ValueError("store: the artifact store URI is not set (masa run sets <out>/store)")
    return RunLayout(cfg.store, f"{cfg.name}-{cfg.fingerprint()}")


def local_model(ptr: Pointer, cache_root: str | Path) -> Path:
    """A verified local copy of the checkpoint behind a Model pointer (from the serving TrainJob that
    holds it while the store's copy is still uploading)."""
    if handed_over(ptr):
        return _from_trainer(ptr, Path(cache_root) / ptr.prefix.replace("/", "__"), light=False)
    return local_path_or_fetch(ptr.store, ptr.prefix, cache_root)


def policy_tokenizer(ptr: Pointer, cache_root: str | Path) -> Path:
    """`local_tokenizer` of the checkpoint behind a Model pointer, handed over as `local_model` is."""
    if handed_over(ptr):
        return _from_trainer(ptr, Path(cache_root) / (ptr.prefix.replace("/", "__") + "__light"), light=True)
    return local_tokenizer(ptr.store, ptr.prefix, cache_root)


def handed_over(ptr: Pointer) -> bool:
    """Whether the checkpoint is to be taken from the serving TrainJob: it names one, and the store's
    copy is not complete yet (its background upload runs)."""
    return ptr.held_by is not None and ptr.digest is not None and not is_complete(open_store(ptr.store), ptr.prefix)


def _from_trainer(ptr: Pointer, dest: Path, *, light: bool) -> Path:
    """`dest`, the hand-over's verified copy (fetched once; the marker beside it, as local_path_or_fetch)."""
    done = dest.with_name(dest.name + ".verified")
    if done.exists():
        return dest
    held = ptr.held_by
    address = running_address(held)
    if address is None:
        raise CheckpointError(f"{open_store(ptr.store).uri(ptr.prefix)} is incomplete in the store and the TrainJob "
                              f"{held.namespace}/{held.job} that held it is gone (its upload did not finish): "
                              f"resubmit the run that trained {ptr.name} round {(ptr.round or 0) + 1}")
    shutil.rmtree(dest, ignore_errors=True)
    trainer = ServedTrainer(address, read_key(held.key_uri), timeout_s=60)
    try:
        trainer.fetch(ptr.digest, dest, light=light)
    finally:
        trainer.close()
    done.touch()
    return dest


def toy_source(cfg: RunConfig, cache_root: str | Path, split: str = "heldout") -> str:
    """The toy task's parquet of `split`, shipped beside the base checkpoint in the store."""
    base = local_path_or_fetch(cfg.store, run_layout(cfg).base("checkpoint"), Path(cache_root) / "base")
    return str(base / f"toy-{split}.parquet")


HISTORY = "history.json"  # in the round's `history` part: the score history up to this round


def digest(*parts: Any) -> str:
    """A short content hash of JSON-able parts: the input fingerprint `run_once` compares."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def manifest_digest(ptr: Pointer) -> str:
    """Hash of the part's manifest (which holds each file's sha256): its content's identity (the
    pointer's `digest`, when it carries the one of a manifest still uploading)."""
    if ptr.digest:
        return ptr.digest[:16]
    data = open_store(ptr.store).get_bytes(f"{ptr.prefix}/{MANIFEST}")
    return hashlib.sha256(data).hexdigest()[:16]


def read_history(path: str | None) -> list[dict[str, Any]]:
    """The score history a step received (a JSON list of per-round records), [] for the first round."""
    return json.loads(Path(path).read_text()) if path else []
