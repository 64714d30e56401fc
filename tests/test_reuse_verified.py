"""Reuse is verified, not trusted (issue 18), on a local store (the S3 side: tests/test_s3_run.py):
a part whose file no longer matches its manifest is recomputed with a warning naming it; a step
that downloads a corrupt input uncommits it and names it and the healing command; cache
bookkeeping never enters a copied model directory; `masa store verify` exits 1 naming bad parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masa.cli import main
from masa.runner.layout import HEAL, local_path_or_fetch, reusable, run_once
from masa.storage import CorruptArtifactError, is_complete, open_store
from masa.train.checkpoint import copy_tokenizer_files


def _produce(calls: list[int]):
    def produce(work: Path) -> dict:
        calls.append(1)
        (work / "shard.parquet").write_bytes(b"p" * 64)
        return {"rows": 3}
    return produce


def test_a_corrupt_part_is_recomputed_with_a_warning_naming_it(tmp_path, capsys):
    store_uri, calls = str(tmp_path / "store"), []
    first = run_once(store_uri, "run/r0/scored", "fp1", _produce(calls))
    assert first["reused"] is False and run_once(store_uri, "run/r0/scored", "fp1", _produce(calls))["reused"]
    (tmp_path / "store" / "run/r0/scored/shard.parquet").write_bytes(b"q" * 64)  # same size
    stats, why = reusable(store_uri, "run/r0/scored", "fp1")
    assert stats is None and "run/r0/scored failed verification (shard.parquet: sha256" in why
    again = run_once(store_uri, "run/r0/scored", "fp1", _produce(calls))
    assert again["reused"] is False and "shard.parquet" in again["recomputed"] and len(calls) == 2
    assert "masa: warning: not reusing file://" in capsys.readouterr().out
    assert (tmp_path / "store" / "run/r0/scored/shard.parquet").read_bytes() == b"p" * 64  # healed


def test_a_corrupt_input_is_uncommitted_and_named_with_its_heal(tmp_path, capsys):
    store_uri = str(tmp_path / "store")
    run_once(store_uri, "run/base/checkpoint", "fp", _produce([]))
    (tmp_path / "store" / "run/base/checkpoint/shard.parquet").write_bytes(b"q" * 64)
    with pytest.raises(CorruptArtifactError) as e:
        local_path_or_fetch(store_uri, "run/base/checkpoint", tmp_path / "cache")
    msg = str(e.value)
    assert msg.startswith(f"input part {open_store(store_uri).uri('run/base/checkpoint')} is corrupt: "
                          "checkpoint file shard.parquet failed verification (sha256")
    assert msg.endswith(f"Its manifest was removed; to heal, {HEAL}") and "masa run --recheck" in HEAL
    assert "masa: error: input part" in capsys.readouterr().out  # the line `masa run` shows
    assert not is_complete(open_store(store_uri), "run/base/checkpoint")  # so its producer recomputes it
    assert run_once(store_uri, "run/base/checkpoint", "fp", _produce([]))["reused"] is False


def test_cached_copy_holds_only_the_parts_files_and_tokenizer_copy_skips_dotfiles(tmp_path):
    store_uri = str(tmp_path / "store")
    run_once(store_uri, "run/m", "fp", _produce([]))
    copy = local_path_or_fetch(store_uri, "run/m", tmp_path / "cache")
    assert sorted(p.name for p in copy.iterdir()) == ["MANIFEST.json", "shard.parquet", "stats.json"]
    assert local_path_or_fetch(store_uri, "run/m", tmp_path / "cache") == copy  # marker beside it: reused
    (copy / ".some-cache-marker").write_text("x")
    (copy / "tokenizer.json").write_text("{}")
    copy_tokenizer_files(copy, (tmp_path / "out").mkdir() or tmp_path / "out")
    assert ".some-cache-marker" not in {p.name for p in (tmp_path / "out").iterdir()}


def test_store_verify_exits_1_naming_the_bad_part(tmp_path, capsys):
    store_uri = str(tmp_path / "store")
    # nothing published there (or a mistyped URI): exit 2 saying so, not "0 of 0 artifacts verify"
    assert main(["store", "verify", store_uri]) == 2
    assert capsys.readouterr().err == (f"masa store verify: no artifacts under {store_uri} (none holds a "
                                       "MANIFEST.json): not a run's store prefix, or nothing published yet\n")
    for part in ("run/r0/rollouts", "run/r0/scored"):
        run_once(store_uri, part, "fp", _produce([]))
    assert main(["store", "verify", store_uri]) == 0
    assert capsys.readouterr().out.strip() == "2 of 2 artifacts verify"
    (tmp_path / "store" / "run/r0/scored/stats.json").write_text(json.dumps({"rows": 4}))
    assert main(["store", "verify", store_uri, "--deep"]) == 1
    out = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert out[0].startswith(f"BAD  {open_store(store_uri).uri('run/r0/scored')}: ")
    assert "stats.json" in out[0] and out[-1].startswith("1 of 2 artifacts verify (deep); 1 bad")
