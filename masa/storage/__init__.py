"""Artifact storage: local directories and S3 behind one `Store` protocol, manifest-committed
directory artifacts (checkpoints), and model resolution with a verified download cache.

    store = open_store("s3://bucket/run-1")          # or "/data/run-1", "file:///data/run-1"
    put_dir_atomic(store, "out/step-12", "ckpt/step-000012", meta={"step": 12})
    prefix = latest_complete(store, "ckpt")          # 'ckpt/step-000012' (partial ones skipped)
    get_dir_verified(store, prefix, "/tmp/resume")   # CheckpointError names any bad file
    model_dir = resolve_model("s3://bucket/models/qwen")  # cached by ETag, reused

See docs/storage.md.
"""

from masa.storage.artifacts import (
    MANIFEST,
    CheckpointError,
    CorruptArtifactError,
    FileEntry,
    Manifest,
    TreeCheck,
    get_dir_verified,
    is_complete,
    latest_complete,
    local_manifest,
    put_dir_atomic,
    read_manifest,
    uncommit,
    verify_stored,
    verify_tree,
)
from masa.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageError,
    Store,
)
from masa.storage.models import ModelNotFoundError, check_model_dir, resolve_model
from masa.storage.stores import open_store

__all__ = [
    "MANIFEST",
    "CheckpointError",
    "CorruptArtifactError",
    "FileEntry",
    "IntegrityError",
    "Manifest",
    "ModelNotFoundError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "StorageError",
    "Store",
    "TreeCheck",
    "check_model_dir",
    "get_dir_verified",
    "is_complete",
    "latest_complete",
    "open_store",
    "local_manifest",
    "put_dir_atomic",
    "read_manifest",
    "resolve_model",
    "uncommit",
    "verify_stored",
    "verify_tree",
]
