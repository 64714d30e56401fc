"""Staging: copy a Hugging Face model, dataset or benchmark into the artifact store once, pinned by
revision, so that cluster steps (whose images run with HF_HUB_OFFLINE=1) read only from the store.

Run where the hub is reachable (`masa stage`, a workstation or a one-off pod). A hub revision (branch,
tag or commit) is resolved to its commit sha first, and the sha names the staged prefix: restaging the
same revision lands on the same key, a moved branch on a new one, so a run's inputs never change
under it. Gated repositories read the token huggingface_hub reads (`HF_TOKEN`, or `hf auth login`).
A local directory or file stages too (revision = digest of its content), which is what tests use.

Layout: `<store>/staged/models/<name>@<rev>/` (files + MANIFEST.json, verified on read by
`masa.storage.models.resolve_model`) and `<store>/staged/data/<name>@<rev>/<split>.parquet`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
from pathlib import Path

from masa.config import RunConfig
from masa.data.records import read_rows
from masa.storage import open_store
from masa.storage.artifacts import put_dir_atomic
from masa.storage.base import sha256_file
from masa.storage.models import check_model_dir


def staged_key(kind: str, name: str, revision: str) -> str:
    """'staged/models/qwen-qwen3-8b-base@1a2b3c4d5e6f' (kind: models | data)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "unnamed"
    return f"staged/{kind}/{slug}@{revision[:12]}"


def _content_revision(path: Path) -> str:
    """sha256 over (relative path, file sha256) of a local file or directory."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{sha256_file(str(f))[0]}\n".encode())
    return h.hexdigest()


def _hub_sha(repo: str, revision: str | None, repo_type: str) -> str:
    from huggingface_hub import HfApi

    info = HfApi().repo_info(repo, revision=revision, repo_type=repo_type)
    return info.sha


def stage_model(source: str, store: str, *, revision: str | None = None) -> str:
    """The store URI of the staged model (a local dir, or a hub id at `revision`, default main)."""
    local = Path(source).expanduser()
    with tempfile.TemporaryDirectory(prefix="masa-stage-") as tmp:
        if local.is_dir():
            rev, src = _content_revision(local), local
        else:
            from huggingface_hub import snapshot_download

            rev = _hub_sha(source, revision, "model")
            src = Path(snapshot_download(source, revision=rev, local_dir=tmp))
            for extra in src.glob(".cache"):  # huggingface_hub's download bookkeeping
                import shutil

                shutil.rmtree(extra, ignore_errors=True)
        check_model_dir(src, ref=source)  # a config.json the engines can read, before any upload
        key = staged_key("models", source if not local.is_dir() else local.name, rev)
        st = open_store(store)
        put_dir_atomic(st, str(src), key, meta={"source": source, "revision": rev})
        return st.uri(key)


def stage_dataset(source: str, store: str, *, split: str = "train", revision: str | None = None) -> str:
    """The store URI of `<split>.parquet` holding the dataset's rows (a local parquet/JSONL file, or a
    hub dataset id at `revision`); the data filter and benchmarks read it like the hub dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq


    local = Path(source).expanduser()
    if local.is_file():
        rev, rows = _content_revision(local), read_rows(str(local), split=split)
        name = local.stem
    else:
        import datasets

        rev, name = _hub_sha(source, revision, "dataset"), source
        rows = datasets.load_dataset(source, split=split, revision=rev).to_list()
    key = f"{staged_key('data', name, rev)}/{split}.parquet"
    with tempfile.TemporaryDirectory(prefix="masa-stage-") as tmp:
        path = Path(tmp) / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        st = open_store(store)
        st.put_file(str(path), key)
        return st.uri(key)


def _needs_staging(source: str | None) -> bool:
    return bool(source) and source != "toy" and not source.startswith(("s3://", "latest:"))


def stage_inputs(cfg: RunConfig) -> RunConfig:
    """The pipeline's `stage` step (`resources.stage_inputs`): `cfg` with its model, training data,
    held-out data and benchmarks replaced by their staged store URIs, each staged once per revision (a
    rerun lands on the same keys). Inputs already in the store, and the built-in toy, are left as they are."""
    data, store = cfg.data, cfg.store
    model = stage_model(cfg.model, store) if _needs_staging(cfg.model) else cfg.model
    train = stage_dataset(data.train, store, split=data.split) if _needs_staging(data.train) else data.train
    heldout = stage_dataset(data.heldout, store, split="test") if _needs_staging(data.heldout) else data.heldout
    bench = tuple(stage_dataset(d, store, split="test") if _needs_staging(d) else d for d in cfg.benchmark.datasets)
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(data, train=train, heldout=heldout),
                               benchmark=dataclasses.replace(cfg.benchmark, datasets=bench))
