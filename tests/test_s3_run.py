"""`masa run` on a real SeaweedFS store, as a user runs it (issue 18): the `smoke` preset with 2 rounds
and both branches finishes, every artifact in the bucket is inside a manifest that verifies (the
report and every stats file included), and corrupted checkpoints are caught where the issue found
them trusted: on reuse of a round's checkpoint (recomputed, with a warning naming it) and as a
consumer's input (named, uncommitted, healed by the command the message gives).

The round-2 training step is what the model cache's `.masa-complete` marker broke: it was published
inside round 1's checkpoint, rewritten by the next download, and refused by round 2's verification.

The first run is the preset as a user runs it (vLLM, two training ranks); the rerun that recomputes its
corrupted checkpoint reuses everything else. A corrupt base checkpoint, hidden from HEAD, and the server
killed mid-upload are tests/test_s3_faults_run.py's, on a faster run of one branch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert any(k.endswith("base/checkpoint/model.safetensors") for k in s3_server.keys(STORE))
    # the promote step published the run's candidate as the first version, with its model card
    assert any("/models/smoke/" in k and k.endswith("/README.md") for k in s3_server.keys(STORE))
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
    assert not [k for k in s3_server.keys(STORE) if ".masa-complete" in k or ".verified" in k]
    for name in ("grpo", "masa"):
        assert f"checkpoint: {name:<5} {STORE}/" in r.stdout
        assert [row["round"] for row in _report(tmp / "out")["rounds"][name]] == [0, 1]
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in r.stdout + r.stderr + (tmp / "out" / "pipeline.log").read_text()


def test_store_verify_names_a_corrupt_checkpoint_and_a_rerun_recomputes_it(s3_server, first_run):
    tmp, _ = first_run
    key = next(k for k in s3_server.keys(STORE) if k.endswith("masa-efficient/round-001/checkpoint/model.safetensors"))
    before = _report(tmp / "out")
    s3_server.flip_byte(BUCKET, key, keep_sha256_claim=False)
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
