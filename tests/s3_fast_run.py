"""One undisturbed `masa run` on the SeaweedFS store with the settings the store's fault tests use
(tests/test_s3_faults_run.py, fixture `s3_fast_run`): the outage test compares its rerun with this run's
figures, the corrupt-base test corrupts this run's base checkpoint. One run serves both (each had a run
of its own: ~2 minutes each on the 2-core machine, 2026-12-02).

Smoke with 2 rounds of one branch. The claims are the store's, so it generates with the transformers
backend and trains on one rank: that saves a vLLM start per rollout and benchmark and torchrun's
interpreters per round (the preset as a user runs it, vLLM and two ranks, is tests/test_s3_run.py's
first run). The smoke policy gets no reward signal in 2 rounds of 4 prompts, so `train.entropy_coef` is
above 0: every update then changes the weights (grad_norm > 0) and "the same figures" covers the trained
checkpoints, not only untouched ones.

The runs set `MKL_CBWR=AUTO,STRICT` (MKL's strict conditional numerical reproducibility, masa's default
since 2026-12-05, set here too so that a caller's `MKL_CBWR=` cannot turn it off): without it two runs of
the same settings can differ in the last bits from round 1 on (MKL's kernels take paths that depend on
memory alignment, which differs between processes; docs/training.md, "Bit-equal runs"), and the
comparison would need a tolerance. Their toy cache is their own, beside their model cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BUCKET = "s3fast"
SETTINGS = ("--preset", "smoke", "--set", "compare=false", "--set", "train.entropy_coef=0.01",
            "--set", "rollout.backend=transformers", "--set", "train_processes=1")


def masa_run(s3, store: str, out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """`masa run` with SETTINGS (and `extra`) on `store`, started; the caller communicates with it."""
    env = {**os.environ, **s3.env(), "MASA_MODEL_CACHE": str(cache), "MASA_CACHE_DIR": str(cache.parent / "masa-cache"),
           "MKL_CBWR": "AUTO,STRICT"}
    return subprocess.Popen([sys.executable, "-m", "masa.cli", "run", *SETTINGS, "--store", store, "--out", str(out),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass(frozen=True)
class FastRun:
    store: str  # s3://BUCKET/<prefix>: this run's store, no other run's
    out: Path  # its --out (report/report.json)
    cache: Path  # its MASA_MODEL_CACHE; a run of the same settings may share it
    tmp: Path  # room for the tests' own --out directories


def fast_run(s3, tmp: Path) -> FastRun:
    s3.make_bucket(BUCKET)
    run = FastRun(store=f"s3://{BUCKET}/calm", out=tmp / "calm", cache=tmp / "models", tmp=tmp)
    proc = masa_run(s3, run.store, run.out, run.cache)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return run
