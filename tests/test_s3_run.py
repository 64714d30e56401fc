"""`masa run` on a real SeaweedFS store, as a user runs it (issue 18): the `smoke` preset with 2 rounds
and both branches finishes, every artifact in the bucket is inside a manifest that verifies (the
report and every stats file included), and corrupted checkpoints are caught where the issue found
them trusted: on reuse of a round's checkpoint (recomputed, with a warning naming it) and as a
consumer's input (named, uncommitted, healed by the command the message gives).

The round-2 training step is what the model cache's `.masa-complete` marker broke: it was published
inside round 1's checkpoint, rewritten by the next download, and refused by round 2's verification.

The first run is the preset as a user runs it (vLLM, two training ranks); the rerun that recomputes its
corrupted checkpoint reuses everything else. The corrupt base is found in the undisturbed run that the
store's fault tests share (tests/s3_fast_run.py, also tests/test_s3_outage_run.py's reference): about the
store, not the engine or the launcher, it generates with the transformers backend and trains on one rank,
which skips a vLLM import and start per rollout and benchmark and torchrun's extra interpreters per round.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_fast_run import BUCKET as FAST_BUCKET
from s3_fast_run import masa_run as fast_masa_run

from masa.storage import open_store, verify_tree

pytestmark = pytest.mark.slow

BUCKET = "s3run"
STORE = f"s3://{BUCKET}/runs"


def masa(s3, *args, cache: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, **s3.env(), "MASA_MODEL_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "masa.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_smoke(s3, out: Path, *extra: str, cache: Path) -> subprocess.CompletedProcess:
    return masa(s3, "run", "--preset", "smoke", "--store", STORE, "--out", str(out), *extra, cache=cache)


@pytest.fixture(scope="module")
def first_run(s3_server, tmp_path_factory):
    """One undisturbed `masa run --preset smoke` (2 rounds, GRPO vs MASA) on the S3 store."""
    for k, v in s3_server.env().items():
        os.environ[k] = v  # for this process's own checks (verify_tree); the CLI gets them per call
    s3_server.make_bucket(BUCKET)
    tmp = tmp_path_factory.mktemp("s3run")
    r = run_smoke(s3_server, tmp / "out", cache=tmp / "models")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, r


def _keys(s3, store: str = STORE) -> list[str]:
    """The object keys under `store` (s3://bucket/prefix)."""
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def _report(out: Path) -> dict:
    return json.loads((out / "report" / "report.json").read_text())


def test_two_rounds_both_branches_finish_and_every_manifest_verifies(s3_server, first_run):
    tmp, r = first_run
    check = verify_tree(open_store(STORE), deep=True)  # downloads and hashes every file
    assert check.bad == {} and check.unlisted == [], (check.bad, check.unlisted)
    parts = set(check.artifacts)
    for branch in ("grpo", "masa-efficient"):
        for rnd in ("000", "001"):
            for part in ("rollouts", "scored", "checkpoint", "checkpoint-stats", "checkpoint/train_state"):
                assert any(p.endswith(f"/{branch}/round-{rnd}/{part}") for p in parts), (branch, rnd, part)
    # one run's artifacts under one run prefix
    assert len({p.split("/")[0] for p in parts if "/round-" in p or "/base/" in p}) == 1, parts
    assert any(k.endswith("base/checkpoint/model.safetensors") for k in _keys(s3_server))
    # the promote step published the run's candidate as the first version, with its model card
    assert any("/models/smoke/" in k and k.endswith("/README.md") for k in _keys(s3_server))
    assert all(_report(tmp / "out")["checkpoints"][name].startswith(f"{STORE}/") for name in ("grpo", "masa"))
    # the report lives in the store too, sealed like the rest, and is the one `masa run` printed
    report_prefix = next(p for p in parts if p.endswith("/report"))
    store = open_store(STORE)
    assert json.loads(store.get_bytes(f"{report_prefix}/report.json")) == _report(tmp / "out")
    assert {f"{report_prefix}/{n}" for n in ("report.html", "report.md")} <= set(store.list(report_prefix))
    assert f"{STORE}/{report_prefix}" in r.stdout
    # the report's summary on the terminal (its Markdown, as the Kubeflow UI shows it), before the paths
    table = r.stdout.index("| checkpoint | benchmark | avg@k |")
    assert r.stdout.index("Speedup to GRPO's final held-out accuracy") < table < r.stdout.index("report:     ")
    # cache bookkeeping never reaches the store (the marker bug)
    assert not [k for k in _keys(s3_server) if ".masa-complete" in k or ".verified" in k]
    for name in ("grpo", "masa"):
        assert f"checkpoint: {name:<5} {STORE}/" in r.stdout
        assert [row["round"] for row in _report(tmp / "out")["rounds"][name]] == [0, 1]
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in r.stdout + r.stderr + (tmp / "out" / "pipeline.log").read_text()


def _flip_byte(s3, key: str, *, keep_sha256_claim: bool, bucket: str = BUCKET) -> None:
    """Same-size corruption of one object: one byte flipped. With `keep_sha256_claim` the object
    keeps the sha256 metadata of its old content (what bit rot under the S3 server would look like:
    only a download and hash can tell); without it, the way any other writer (`aws s3 cp`) leaves it."""
    c = s3.client()
    head = c.head_object(Bucket=bucket, Key=key)
    data = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    meta = head.get("Metadata", {}) if keep_sha256_claim else {}
    c.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=meta)


def test_store_verify_names_a_corrupt_checkpoint_and_a_rerun_recomputes_it(s3_server, first_run):
    tmp, _ = first_run
    key = next(k for k in _keys(s3_server) if k.endswith("masa-efficient/round-001/checkpoint/model.safetensors"))
    before = _report(tmp / "out")
    _flip_byte(s3_server, key, keep_sha256_claim=False)
    run_uri = f"s3://{BUCKET}/{key.split('/masa-efficient/')[0]}"
    v = masa(s3_server, "store", "verify", run_uri, cache=tmp / "models")
    assert v.returncode == 1, v.stdout + v.stderr
    bad = [line for line in v.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and "round-001/checkpoint: model.safetensors" in bad[0], v.stdout

    # the same --out: kfp.local would reuse every task from its cache; the final check catches it
    r = run_smoke(s3_server, tmp / "out", cache=tmp / "models")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "warning: checkpoint masa at s3://" in r.stdout and "model.safetensors" in r.stdout
    assert "recomputing it" in r.stdout
    assert "not reusing s3://" in r.stdout  # the train step's own notice, shown on the terminal
    assert masa(s3_server, "store", "verify", run_uri, "--deep", cache=tmp / "models").returncode == 0
    after = _report(tmp / "out")
    # recomputed from the same inputs and seeds: the same figures
    def figures(report):
        return {k: v for k, v in report["eval"]["masa"]["toy"].items() if k not in ("wall_s", "samples_per_s")}

    assert figures(after) == figures(before)


def test_corrupt_base_checkpoint_is_named_and_healed_by_recheck(s3_server, s3_fast_run, monkeypatch):
    # on the shared undisturbed run of the store's fault tests (tests/s3_fast_run.py: 2 rounds of one
    # branch, fewer steps to recompute than this module's first run); nothing reads its store after this
    base = [k for k in _keys(s3_server, s3_fast_run.store) if k.endswith("/base/checkpoint/model.safetensors")]
    assert len(base) == 1, base
    _flip_byte(s3_server, base[0], keep_sha256_claim=True, bucket=FAST_BUCKET)  # invisible to HEAD: found by the first download
    fresh = s3_fast_run.tmp / "fresh"
    r = _communicate(fast_masa_run(s3_server, s3_fast_run.store, fresh, s3_fast_run.cache))
    assert r.returncode != 0
    shown = r.stdout + r.stderr
    assert "base/checkpoint is corrupt" in shown and "model.safetensors" in shown, shown[-3000:]
    assert "masa run --recheck" in shown
    healed = _communicate(fast_masa_run(s3_server, s3_fast_run.store, fresh, s3_fast_run.cache, "--recheck"))
    assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr[-3000:]
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)  # for this process's own check; the CLI gets them per call
    check = verify_tree(open_store(s3_fast_run.store), deep=True)
    assert check.bad == {}, check.bad


def _communicate(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
