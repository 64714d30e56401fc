"""The S3 server killed while round 2's checkpoint is being uploaded, then restarted (issue 18, item 5):
the run fails saying which step, nothing partial is trusted, and a rerun with the same `--out`
finishes with the same figures as an undisturbed run of the same settings.

The smoke preset's policy gets no reward signal in 2 rounds of 4 prompts, so `train.entropy_coef`
is set above 0: every update then changes the weights (grad_norm > 0) and "the same figures" covers
the trained checkpoints, not only untouched ones. Like tests/test_s3_run.py, the runs generate with the
transformers backend and train on one rank: the claim is the store's, and it saves a vLLM start per
rollout and benchmark and torchrun's interpreters per round.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from masa.storage import open_store, verify_tree

pytestmark = pytest.mark.slow

BUCKET = "s3outage"
SETTINGS = ("--preset", "smoke", "--set", "compare=false", "--set", "train.entropy_coef=0.01",
            "--set", "rollout.backend=transformers", "--set", "train_processes=1")


def _masa_run(s3, store: str, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, **s3.env(), "MASA_MODEL_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "masa.cli", "run", *SETTINGS, "--store", store, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _figures(out: Path) -> dict:
    r = json.loads((out / "report" / "report.json").read_text())
    untimed = ("wall_s", "samples_per_s", "generation_s", "scoring_s", "training_s", "startup_s")
    rounds = [{k: v for k, v in row.items() if k not in untimed} for row in r["rounds"]["masa"]]
    evals = {c: {k: v for k, v in e["toy"].items() if k not in untimed} for c, e in r["eval"].items()}
    return {"rounds": rounds, "eval": evals}


def _kill_when_round2_uploads(s3, prefix: str, proc: subprocess.Popen, seen: list[str]) -> None:
    client = s3.client()
    while proc.poll() is None:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
        hit = [k for k in keys if "/round-001/checkpoint/" in k]
        if hit:
            s3.kill()  # SIGKILL mid-upload: no graceful close of anything
            seen.extend(hit)
            return
        time.sleep(0.1)


def test_server_killed_during_round2_upload_then_rerun_gives_the_undisturbed_figures(s3_server, tmp_path):
    s3_server.make_bucket(BUCKET)
    calm = _masa_run(s3_server, f"s3://{BUCKET}/calm", tmp_path / "calm", tmp_path / "models")
    out, err = calm.communicate(timeout=900)
    assert calm.returncode == 0, out[-3000:] + err[-3000:]
    undisturbed = _figures(tmp_path / "calm")
    assert all(row["grad_norm"] > 0 for row in undisturbed["rounds"]), undisturbed["rounds"]

    run = _masa_run(s3_server, f"s3://{BUCKET}/hit", tmp_path / "hit", tmp_path / "models")
    seen: list[str] = []
    watcher = threading.Thread(target=_kill_when_round2_uploads, args=(s3_server, "hit/", run, seen))
    watcher.start()
    try:
        out, err = run.communicate(timeout=900)
    finally:
        watcher.join()
        if seen:
            s3_server.start()  # same data and ports
    assert seen, "the run finished before round 2's checkpoint upload began"
    assert run.returncode != 0
    failed = [line for line in out.splitlines() if "✗" in line]
    assert failed and "round 2 · train" in failed[0], out[-2000:]  # the step that failed, on the terminal
    assert "round 2 · train failed:" in err and "full log:" in err, err[-2000:]
    for k, v in s3_server.env().items():
        os.environ[k] = v
    store = open_store(f"s3://{BUCKET}/hit")
    assert verify_tree(store).bad == {}  # what was committed before the kill is intact; the rest has no manifest

    rerun = _masa_run(s3_server, f"s3://{BUCKET}/hit", tmp_path / "hit", tmp_path / "models")
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-3000:] + err[-3000:]
    assert "(cached)" in out  # round 1 and everything before the kill is reused
    assert _figures(tmp_path / "hit") == undisturbed
    check = verify_tree(store, deep=True)
    assert check.bad == {} and check.unlisted == [], (check.bad, check.unlisted)
