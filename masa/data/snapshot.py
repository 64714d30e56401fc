"""The training data's snapshot fingerprint: what changes when the data behind a URI changes.

- a local file: the sha256 of its bytes (`sha256:<hex16>`);
- an `s3://` object: its ETag (`etag:<etag>`; one HEAD, no download), which changes on every rewrite;
- a Hugging Face dataset id: the revision (commit) of the cached or remote snapshot (`hf:<sha>`), else a
  hash of its rows when no revision can be read;
- the embedded toy: `toy` (its data is built from the recipe, which the configuration already names).

The configure step of every run writes it into `data.snapshot`, so it is part of the run's identity and
of every step's inputs: KFP's cache and `run_once` both see new data as new (docs/promotion.md).
"""

from __future__ import annotations

import hashlib
import json

from masa.data.records import DataError, read_rows, source_kind


def data_snapshot(source: str, *, split: str = "train") -> str:
    """The fingerprint of the data at `source` now; DataError naming the source when it cannot be read."""
    if source == "toy":
        return "toy"
    kind = source_kind(source)
    if kind == "s3":
        return "etag:" + _s3_etag(source)
    if kind == "hf":
        return "hf:" + (_hf_revision(source) or _rows_hash(source, split))
    from masa.storage.base import sha256_file

    return "sha256:" + sha256_file(source)[0][:16]


def _s3_etag(uri: str) -> str:
    from masa.storage import StorageError, open_store

    bucket_prefix, _, name = uri.rpartition("/")
    try:
        return open_store(bucket_prefix).stat(name).etag
    except (StorageError, ValueError) as e:
        raise DataError(f"cannot fingerprint data {uri}: {e}") from e


def _hf_revision(dataset_id: str) -> str | None:
    """The commit of the dataset's snapshot: the local cache's when offline, else the hub's."""
    try:
        from huggingface_hub import HfApi, snapshot_download

        try:
            path = snapshot_download(dataset_id, repo_type="dataset", local_files_only=True)
            return path.rstrip("/").rsplit("/", 1)[-1]
        except Exception:  # not cached: ask the hub (fails offline)
            return HfApi().dataset_info(dataset_id).sha
    except Exception:  # offline and uncached, or hub unreachable: fall back to the rows
        return None


def _rows_hash(source: str, split: str) -> str:
    rows = read_rows(source, split=split)
    h = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode())
    return "rows-" + h.hexdigest()[:16]
