"""`masa step NAME`: each pipeline step run alone from the command line, through the same `masa.steps`
function its component calls, on the configuration the pipeline would give it (issue 12 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from masa.commands.step import STEPS, parse_step_args
from masa.components import FUNCTIONS


def _masa(*args):
    return subprocess.run([sys.executable, "-m", "masa.cli", "step", *args], capture_output=True, text=True,
                          timeout=900)


def test_every_component_has_a_step_twin():
    # components/ call these functions (their bodies import them); the twin table names the same ones
    # every one but configure (it only applies the UI's parameters to the compiled configuration)
    names = set(FUNCTIONS) - {"configure"}
    assert {"rollout", "merge_rollouts", "benchmark_shard", "merge_benchmarks"} <= names
    assert {n.replace("_", "-") for n in names} == set(STEPS)


def test_step_args_parse_json_values():
    assert parse_step_args(["round_idx=2", "history_path=null", "out_ptr=/tmp/o.json", "evals={\"base\": null}"]) == \
        {"round_idx": 2, "history_path": None, "out_ptr": "/tmp/o.json", "evals": {"base": None}}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_step_args(["round_idx"])


@pytest.mark.slow
def test_prepare_then_data_filter_alone_as_the_pipeline_runs_them(tmp_path):
    store, base = tmp_path / "store", tmp_path / "base.json"
    r = _masa("prepare", "--preset", "smoke", "--store", str(store), "--arg", f"model_out={base}")
    assert r.returncode == 0, r.stderr[-2000:]
    ptr = json.loads(base.read_text())
    assert ptr["store"] == str(store) and ptr["prefix"].endswith("/base/checkpoint")
    outs = {k: tmp_path / k for k in ("prompts_out", "heldout_out", "report_out")}
    r = _masa("data-filter", "--preset", "smoke", "--store", str(store), "--arg", f"base_model={base}",
              *[a for k, v in outs.items() for a in ("--arg", f"{k}={v}")])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["kept"] > 0 and all(p.exists() for p in outs.values())
    again = _masa("prepare", "--preset", "smoke", "--store", str(store), "--arg", f"model_out={base}")
    assert json.loads(again.stdout).get("reused") is True  # a finished part is reused, as in the pipeline


def test_a_missing_or_unknown_argument_is_one_line_naming_the_step_arguments(tmp_path):
    r = _masa("prepare", "--preset", "smoke", "--store", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "masa step prepare: missing a required argument: 'model_out'; its arguments: model_out"]
    r = _masa("prepare", "--preset", "smoke", "--store", str(tmp_path), "--arg", "model_out=x", "--arg", "out=y")
    assert r.returncode == 2 and "takes no out; its arguments: model_out" in r.stderr
