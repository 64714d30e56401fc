"""Checkpoints of the training step: the consolidated Hugging Face model and the resumable DeepSpeed state.

Layout written to the artifact store (via `masa.storage`, files first, MANIFEST.json last):

    {out}/                 consolidated HF checkpoint (safetensors, config, tokenizer, generation_config):
                           what the next rollout step's vLLM loads directly
    {out}/train_state/     DeepSpeed state (optimizer moments, LR scheduler) + train_state.json, so the
                           next round continues AdamW and the warm-up instead of restarting them
    {resume_root}/step-NNNNNN/   the same state, saved every `save_every` optimizer steps inside a round

Each of these is its own manifest-sealed directory: a reader trusts only one whose manifest is present
and whose files match it, so a rank killed mid-save leaves nothing that can be loaded.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
from pathlib import Path

from masa.storage import (
    MANIFEST,
    CorruptArtifactError,
    FileEntry,
    Manifest,
    get_dir_verified,
    latest_complete,
    open_store,
    put_dir_atomic,
    read_manifest,
)
from masa.storage import is_complete as _complete
from masa.storage.base import join_key, sha256_file
from masa.train.handover import WEIGHT_SUFFIXES, is_light

STATE_DIR = "train_state"
STATE_FILE = "train_state.json"
DS_TAG = "ds"
# shards of the consolidated model (transformers' default is one file up to 50GB): the model's hand-over
# and its manifest's hashing go file by file, side by side (masa.train.handover.STREAMS), ~9 files at 8B
SHARD_SIZE = "2GB"
# files of a HF model directory that the training step rewrites; everything else (tokenizer, chat
# template, ...) is copied over unchanged from the input model
_REWRITTEN = {"config.json", "generation_config.json", "model.safetensors.index.json", MANIFEST,
              "metrics.jsonl", STATE_FILE}


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy the non-weight files of a HF model dir (tokenizer, chat template, ...) to dst."""
    for f in Path(src).iterdir():
        # dot-files are some tool's bookkeeping (caches' markers), never part of a model: a published
        # checkpoint holds only its own files, so its manifest stays true wherever it is copied
        if f.name.startswith("."):
            continue
        if f.is_file() and f.name not in _REWRITTEN and not f.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(f, Path(dst) / f.name)


def consolidated_state_dict(engine, zero_stage: int) -> dict | None:
    """The full model weights on rank 0 (None elsewhere). Collective under ZeRO-3: call on every rank."""
    import torch.distributed as dist

    if zero_stage == 3:
        sd = engine._zero3_consolidated_16bit_state_dict()  # gathers partitions (despite its name: model dtype)
    else:
        sd = engine.module.state_dict() if dist.get_rank() == 0 else None  # ZeRO-2: weights are replicated
    return sd if dist.get_rank() == 0 else None


def save_hf(engine, zero_stage: int, model_src: Path, out_dir: Path) -> None:
    """Write the consolidated HF checkpoint to out_dir (rank 0 writes; every rank must call)."""
    import torch.distributed as dist

    sd = consolidated_state_dict(engine, zero_stage)
    if dist.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
        engine.module.save_pretrained(out_dir, state_dict=sd, safe_serialization=True, max_shard_size=SHARD_SIZE)
        copy_tokenizer_files(model_src, out_dir)
    dist.barrier()


def save_state(engine, state_dir: Path, train_state: dict) -> None:
    """DeepSpeed state + train_state.json into state_dir (every rank calls; shared local directory)."""
    import torch.distributed as dist

    state_dir.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(state_dir), tag=DS_TAG, save_latest=False)
    if dist.get_rank() == 0:
        (state_dir / STATE_FILE).write_text(json.dumps(train_state, indent=1))
    dist.barrier()


def read_train_state(state_dir: Path) -> dict | None:
    f = Path(state_dir) / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def load_state(engine, state_dir: Path, *, with_optimizer: bool = True) -> None:
    """Restore DeepSpeed state saved by `save_state` (module weights, and optimizer + LR scheduler)."""
    path, _ = engine.load_checkpoint(str(state_dir), tag=DS_TAG, load_optimizer_states=with_optimizer,
                                     load_lr_scheduler_states=with_optimizer)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {state_dir}/{DS_TAG}")


# ---- artifact store side (parent process and rank 0) ----

def step_prefix(step: int) -> str:
    return f"step-{step:06d}"


def _store_and_prefix(uri: str):
    """(store at the parent, last component): the artifact lives under a non-empty prefix of its parent."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or not parent or parent.endswith(":/"):
        raise ValueError(f"artifact URI {uri!r} needs a parent directory or bucket and a name")
    return open_store(parent), name


def publish(local_dir: Path, uri: str, manifest: Manifest | None = None) -> None:
    """Upload local_dir to `uri` atomically (files first, manifest last; `manifest`: the one computed
    before, whose digest already names it, masa.storage.local_manifest)."""
    store, prefix = _store_and_prefix(uri)
    put_dir_atomic(store, str(local_dir), prefix, manifest=manifest)


def publish_sharded(local_dir: Path, uri: str) -> None:
    """`publish` for a directory whose files are spread over nodes (each rank's ZeRO partition is
    written on its own node). Every rank calls it: each node's local rank 0 uploads the files its node
    holds, then global rank 0 writes the manifest of all of them, last. On one node it is `publish`.
    """
    import os
    import time

    import torch.distributed as dist

    store, prefix = _store_and_prefix(uri)
    manifest_key = join_key(prefix, MANIFEST)
    if dist.get_rank() == 0 and store.exists(manifest_key):
        store.delete(manifest_key)  # uncommit first, as put_dir_atomic does
    dist.barrier()
    mine: dict[str, FileEntry] = {}
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        for f in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            rel = f.relative_to(local_dir).as_posix()
            info = store.put_file(str(f), join_key(prefix, rel))
            mine[rel] = FileEntry(size=info.size, sha256=info.sha256 or sha256_file(str(f))[0])
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if dist.get_rank() == 0:
        files = {k: v for part in everyone for k, v in part.items()}
        manifest = Manifest(files=files, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        store.put_bytes(manifest_key, manifest.to_json())
    dist.barrier()


def fetch_light(uri: str, local_dir: Path) -> Path:
    """A checkpoint's top-level files but its weights (config, tokenizer, markers), verified against
    its manifest: what a trainer that holds the weights needs of the policy."""
    store, prefix = _store_and_prefix(uri)
    shutil.rmtree(local_dir, ignore_errors=True)
    get_dir_verified(store, prefix, str(local_dir), only=is_light)
    return Path(local_dir)


def fetch_verified(uri: str, local_dir: Path) -> Path:
    """Download a manifest-sealed directory, refusing a missing or altered file (CheckpointError)."""
    store, prefix = _store_and_prefix(uri)
    get_dir_verified(store, prefix, str(local_dir))
    return local_dir


def is_complete(uri: str) -> bool:
    store, prefix = _store_and_prefix(uri)
    return _complete(store, prefix)


class StateUnavailableError(FileNotFoundError):
    """A round starts from a checkpoint whose DeepSpeed state a trainer service kept (or was uploading)
    and that is neither in the store nor held any longer."""


def kept_state(model_dir: Path) -> dict | None:
    """The train_state.json a round writes into its model when a trainer service keeps the state
    ({"global_step", ..., "state": "kept" | "background"}), else None."""
    f = Path(model_dir) / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def identity(uri: str) -> str | None:
    """sha256 of a published checkpoint's manifest (which holds every file's sha256): what a trainer
    service compares to know that the state it holds is the one this checkpoint was saved from.
    None for a directory without a manifest (a model never published by a round)."""
    import hashlib

    try:
        store, prefix = _store_and_prefix(uri)
        return hashlib.sha256(store.get_bytes(join_key(prefix, MANIFEST))).hexdigest()
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return None


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether two published checkpoints hold the same weight files (their manifests' sha256)."""
    def weights(uri) -> dict[str, str]:
        store, prefix = _store_and_prefix(str(uri))
        return {k: v.sha256 for k, v in read_manifest(store, prefix).files.items() if k.endswith(WEIGHT_SUFFIXES)}

    return weights(a) == weights(b)


def latest_resume_point(resume_root: str) -> str | None:
    """URI of the newest complete step-NNNNNN state under resume_root, or None. Incomplete ones are skipped."""
    prefix = latest_complete(open_store(resume_root), "", pattern=r"step-(\d+)")
    return None if prefix is None else resume_root.rstrip("/") + "/" + prefix


def drop_resume_points(resume_root: str) -> int:
    """Delete the step-NNNNNN states under resume_root (once the round's output is published they are
    dead weight: a full optimizer state each). Manifests go first, so a crash mid-way leaves only
    incomplete, never-loaded prefixes. Returns the number of objects deleted."""
    store = open_store(resume_root)
    steps = sorted({k.split("/", 1)[0] for k in store.list("step-") if "/" in k})
    n = sum(store.delete(f"{s}/{MANIFEST}") for s in steps)
    return n + sum(store.delete(f"{s}/") for s in steps)


def verify_local(model_dir: Path) -> None:
    """Check a local directory against its MANIFEST.json (if it has one), naming any missing/altered file."""
    if not (Path(model_dir) / MANIFEST).is_file():
        return
    store, prefix = _store_and_prefix(str(Path(model_dir).absolute()))
    uri = Path(model_dir).absolute().as_uri()
    for rel, entry in sorted(read_manifest(store, prefix).files.items()):
        f = Path(model_dir) / rel
        if not f.is_file():
            raise CorruptArtifactError(f"checkpoint file {rel} missing from {model_dir}", uri=uri, file=rel)
        sha, size = sha256_file(str(f))
        if (sha, size) != (entry.sha256, entry.size):
            raise CorruptArtifactError(f"checkpoint file {rel} failed verification (altered) in {model_dir}",
                                       uri=uri, file=rel)


class BackgroundUploads:
    """Uploads of local directories after the step that made them has ended, one after another, in
    order (a trainer service's kept state, masa.train.service; a serving TrainJob's model and state,
    masa.train.listen, whose hand-over directory is removed once a newer one has replaced it and its
    own upload is done). `drain` waits for them and returns the ones that failed, a line each."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, src: Path, uri: str | None, manifest: Manifest | None = None, *, remove: bool = True) -> None:
        """Publish `src` to `uri` (None: only remove it), committing `manifest` when given."""
        self.queue.put((src, uri, manifest, remove))

    def _run(self) -> None:
        while True:
            src, uri, manifest, remove = self.queue.get()
            try:
                if uri is not None:
                    publish(Path(src), uri, manifest)
            except Exception as e:  # noqa: BLE001 - reported by drain: the caller says what a failure costs
                self.errors.append(f"{uri}: {type(e).__name__}: {e}")
            finally:
                if remove:
                    shutil.rmtree(src, ignore_errors=True)
                self.queue.task_done()

    def drain(self) -> list[str]:
        self.queue.join()
        errors, self.errors = self.errors, []
        return errors
