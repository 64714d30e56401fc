"""The trainer service (masa.train.service) on real DeepSpeed ranks (gloo, 2 CPU processes): rounds
that continue from the engine the service holds give the weights, bit for bit, and the metrics of
rounds restored from the published checkpoint and state, as a cold step's ranks do."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from masa.runner.training import train_round
from masa.train.checkpoint import StateUnavailableError
from masa.train.config import TrainConfig
from masa.train.worker import FAULT_ENV

pytestmark = pytest.mark.slow

CFG = TrainConfig(lr=1e-3, warmup_steps=2, steps_per_round=2, max_tokens_per_microbatch=48, seed=3, bc_coef=0.1)
# the expert phase with moments of its own: what a rank holds between rounds besides its engine (the
# phase's buffer and AdamW state) must carry as the published state does (2 experts a round, batches of 2)
PHASE = dataclasses.replace(CFG, bc_mode="phase", bc_phase_batch=2, bc_phase_steps=2, bc_phase_lr=1e-3,
                            bc_phase_moments="own")

# A warm `masa run` task (as masa.pipeline.warm makes it: the modules a rank imports imported, no tensor
# op run, declared fork-safe) with the run's services folder; it trains the rounds it is given in
# order, each as a train step would, and prints each round's result or failure.
_WARM_TASK = """
import json, os, sys
import deepspeed, transformers  # noqa: F401
from masa.configbase import from_dict
from masa.engines.service import SERVICES_ENV
from masa.runner.training import train_round
from masa.train.checkpoint import StateUnavailableError
from masa.train import launch, worker  # noqa: F401
from masa.train.config import TrainConfig
launch.allow_forked_ranks()
a = json.loads(sys.argv[1])
os.environ[SERVICES_ENV] = a["folder"] + ":" + str(os.getpid())
for r in a["rounds"]:
    try:
        out = train_round(*r["args"], from_dict(TrainConfig, a["cfg"]), nproc=2, chain="b", env=r.get("env"),
                          state=r.get("state", "publish"))
        print("RESULT " + json.dumps(out, default=str), flush=True)
    except launch.TrainingFailed as e:
        print("FAILED " + json.dumps(str(e)), flush=True)
from masa.train.service import drain_all
print("DRAINED " + json.dumps(drain_all(__import__("pathlib").Path(a["folder"]))), flush=True)
"""


def _weights(d) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(d) / "model.safetensors"))


def _rows(steps: list[dict]) -> list[dict]:
    drop = ("seconds", "tokens_per_s", "restored_from")
    return [{k: v for k, v in r.items() if k not in drop} for r in steps]


@pytest.fixture(scope="module")
def data(train_data):
    return train_data


@pytest.fixture
def services():
    """The run's services folder, made where `masa run` makes it (pipeline/warm.py: a mkdtemp in TMPDIR):
    a socket's path has at most 107 bytes, which a pytest-xdist worker's tmp_path plus a trainer's
    socket name exceeds."""
    folder = Path(tempfile.mkdtemp(prefix="masa-eng-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _warm(rounds: list[dict], folder: Path, train_cfg: TrainConfig = CFG) -> list[tuple[str, object]]:
    cfg = json.loads(json.dumps(dataclasses.asdict(train_cfg)))
    r = subprocess.run([sys.executable, "-c", _WARM_TASK, json.dumps({"rounds": rounds, "cfg": cfg,
                                                                      "folder": str(folder)})],
                       capture_output=True, text=True, timeout=600)
    out = [x.split(" ", 1) for x in r.stdout.splitlines() if x.startswith(("RESULT ", "FAILED ", "DRAINED "))]
    assert len(out) == len(rounds) + 1, f"rc {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert out[-1] == ["DRAINED", "[]"], out[-1]  # every background upload published
    return [(kind, json.loads(body)) for kind, body in out[:-1]]


def test_rounds_from_the_held_engine_equal_rounds_restored_from_the_store(data, tmp_path, services):
    d = data
    cold = tmp_path / "cold"
    c1 = train_round(d["model"], d["scored"], d["experts"], str(cold / "r1"), PHASE, nproc=2)
    c2 = train_round(str(cold / "r1"), d["scored"], d["experts"], str(cold / "r2"), PHASE, nproc=2)
    assert c2["steps"][0]["restored_from"] == "init_state_dir:2"  # the cold round loads r1's state
    # each round cloned its batch in 2 phase steps, round 2 on the phase moments round 1 left
    assert [sum("phase" in r for r in c["steps"]) for c in (c1, c2)] == [2, 2]

    warm = tmp_path / "warm"
    rounds = [{"args": [d["model"], d["scored"], d["experts"], str(warm / "r1")]},
              # a round whose ranks fail (a malformed fault spec: rank 1 raises) in a service of its own
              # (its environment differs): the round fails with the rank's error
              {"args": [str(warm / "r1"), d["scored"], d["experts"], str(warm / "bad")],
               "env": {FAULT_ENV: "rank=1,step=oops"}},
              {"args": [str(warm / "r1"), d["scored"], d["experts"], str(warm / "r2")]}]
    (k1, w1), (kb, bad), (k2, w2) = _warm(rounds, services, PHASE)
    assert (k1, kb, k2) == ("RESULT", "FAILED", "RESULT"), (w1, bad, w2)
    assert "invalid literal for int" in bad
    # round 2 continued from the engine that trained round 1, without loading its state
    assert [r["restored_from"] for r in w2["steps"] if "phase" not in r] == ["service:2", "service:2"]
    for a, b in (("r1", "r1"), ("r2", "r2")):
        wc, ww = _weights(cold / a), _weights(warm / b)
        assert all(torch.equal(wc[k], ww[k]) for k in wc), a
    assert _rows(w1["steps"]) == _rows(c1["steps"]) and _rows(w2["steps"]) == _rows(c2["steps"])
    assert w2["global_step"] == c2["global_step"] == 4
    # both rounds' state is published as a cold step publishes it: a cold round 3 can start from it
    assert json.loads((warm / "r2" / "train_state" / "train_state.json").read_text())["global_step"] == 4


def test_a_round_from_another_checkpoint_builds_the_engine_from_the_store(data, tmp_path, services):
    """The service holds r1's successor; a round starting from r1 again (a rerun of round 2) must not
    continue from the held engine."""
    d = data
    warm = tmp_path / "warm"
    args = [d["scored"], d["experts"]]
    rounds = [{"args": [d["model"], *args, str(warm / "r1")]},
              {"args": [str(warm / "r1"), *args, str(warm / "r2")]},
              {"args": [str(warm / "r1"), *args, str(warm / "r2b")]}]
    out = _warm(rounds, services)
    assert [k for k, _ in out] == ["RESULT"] * 3
    assert out[2][1]["steps"][0]["restored_from"] == "init_state_dir:2"
    w2, w2b = _weights(warm / "r2"), _weights(warm / "r2b")
    assert all(torch.equal(w2[k], w2b[k]) for k in w2)


def test_state_kept_in_the_service_and_published_in_the_background(data, tmp_path, services):
    """resources.train_state: run. Rounds 1-2 keep their DeepSpeed state in the service (their models
    carry only train_state.json), round 3 (a run's last) has the service upload it after the step: the
    weights are those of three cold rounds, round 3's state is complete once drained, and a round that
    starts from round 2 without the service refuses to restart AdamW, naming the step."""
    d = data
    args = [d["scored"], d["experts"]]
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    prev = d["model"]
    for r in ("r1", "r2", "r3"):
        train_round(prev, *args, str(cold / r), CFG, nproc=2)
        prev = str(cold / r)
    rounds = [{"args": [d["model"], *args, str(warm / "r1")], "state": "keep"},
              {"args": [str(warm / "r1"), *args, str(warm / "r2")], "state": "keep"},
              {"args": [str(warm / "r2"), *args, str(warm / "r3")], "state": "background"}]
    out = _warm(rounds, services)
    assert [k for k, _ in out] == ["RESULT"] * 3, out
    for r in ("r1", "r2", "r3"):
        wc, ww = _weights(cold / r), _weights(warm / r)
        assert all(torch.equal(wc[k], ww[k]) for k in wc), r
    for r, step, how in (("r1", 2, "keep"), ("r2", 4, "keep"), ("r3", 6, "background")):
        marker = json.loads((warm / r / "train_state.json").read_text())
        assert (marker["global_step"], marker["state"]) == (step, how)
    assert not (warm / "r2" / "train_state").exists()
    assert json.loads((warm / "r3" / "train_state" / "train_state.json").read_text())["global_step"] == 6
    assert (warm / "r3" / "train_state" / "MANIFEST.json").is_file()
    with pytest.raises(StateUnavailableError, match=r"global step 4"):
        train_round(str(warm / "r2"), *args, str(tmp_path / "r3b"), CFG, nproc=2)
    # round 3's published state is what a cold round 4 starts from
    r4 = train_round(str(warm / "r3"), *args, str(tmp_path / "r4"), CFG, nproc=2)
    assert r4["steps"][0]["restored_from"] == "init_state_dir:6"
