"""Fault injection at the step level: a rollout step killed mid-way (kill -9) leaves no part behind,
and its rerun recomputes exactly that step while everything upstream is reused. On the way, the rollout
step's held-out check runs only in the rounds `data.heldout_every` picks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masa.config import load_config
from masa.runner.layout import read_pointer, run_layout
from masa.steps.prepare import filter_data, prepare_base
from masa.steps.rollout import rollout_step
from masa.steps.score import score_step
from masa.storage import is_complete, open_store

pytestmark = pytest.mark.slow

CHILD = """
import sys
from masa.config import config_from_json
from masa.steps.rollout import rollout_step
cfg = config_from_json(open(sys.argv[1]).read())
print("started", flush=True)
rollout_step(cfg, branch="masa-efficient", round_idx=0, prompts_path=sys.argv[2], policy_ptr=sys.argv[3],
             history_path=None, out_ptr=sys.argv[4], heldout_path=sys.argv[5])
"""


def test_killed_rollout_step_leaves_nothing_and_rerun_recomputes_only_it(tmp_path):
    cfg = load_config("smoke", [f"store={tmp_path / 'store'}", "rounds=2", "compare=false", "data.heldout_every=2"])
    base, prompts, heldout = tmp_path / "base.json", tmp_path / "prompts", tmp_path / "heldout"
    prepare_base(cfg, model_out=str(base))
    filter_data(cfg, base_model=str(base), prompts_out=str(prompts), heldout_out=str(heldout),
                report_out=str(tmp_path / "filter.md"))
    store, layout = open_store(cfg.store), run_layout(cfg)
    part = layout.part("masa-efficient", 0, "rollouts")
    base_manifest = Path(cfg.store) / layout.base("checkpoint") / "MANIFEST.json"
    base_mtime = base_manifest.stat().st_mtime_ns

    (tmp_path / "cfg.json").write_text(cfg.to_json())
    out_ptr = tmp_path / "rollouts.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "cfg.json"), str(prompts), str(base),
                              str(out_ptr), str(heldout)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "MASA_METRICS_PORT": "0"})
    assert child.stdout.readline().strip() == "started"
    time.sleep(3.0)  # inside the step: engine start-up or generation, long before its publish
    assert child.poll() is None, "the step finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    assert not is_complete(store, part)  # a killed step publishes nothing a reader would trust
    assert not out_ptr.exists()

    # the rerun: upstream reused, the killed step computed, then itself reused
    assert prepare_base(cfg, model_out=str(base))["reused"] is True
    first = rollout_step(cfg, branch="masa-efficient", round_idx=0, prompts_path=str(prompts), policy_ptr=str(base),
                         history_path=None, out_ptr=str(out_ptr), heldout_path=str(heldout))
    assert first["reused"] is False and is_complete(store, part)
    assert read_pointer(out_ptr).prefix == part
    again = rollout_step(cfg, branch="masa-efficient", round_idx=0, prompts_path=str(prompts), policy_ptr=str(base),
                         history_path=None, out_ptr=str(out_ptr), heldout_path=str(heldout))
    assert again["reused"] is True and again["samples"] == first["samples"]
    assert 0 <= first["heldout"]["accuracy"] <= 1 and first["heldout"]["n_problems"] > 0  # round 0: checked
    unchecked = rollout_step(cfg, branch="masa-efficient", round_idx=1, prompts_path=str(prompts), policy_ptr=str(base),
                             history_path=None, out_ptr=str(tmp_path / "rollouts-1.json"), heldout_path=str(heldout))
    assert "heldout" not in unchecked and unchecked["samples"] == first["samples"]  # round 1 of every 2nd: not
    assert base_manifest.stat().st_mtime_ns == base_mtime  # nothing upstream was rewritten

    # the next step reads the recomputed part; a corrupted part is refused, naming the file
    scored = score_step(cfg, branch="masa-efficient", round_idx=0, rollouts_ptr=str(out_ptr), policy_ptr=str(base),
                        history_path=None, out_ptr=str(tmp_path / "scored.json"), history_out=str(tmp_path / "h.json"))
    assert scored["reused"] is False and scored["n_meta_rows"] > 0
    shard = Path(cfg.store) / part / "rollouts.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    store.delete(layout.part("masa-efficient", 0, "scored") + "/")  # force the score step to read it again
    with pytest.raises(Exception, match="rollouts.parquet"):
        score_step(cfg, branch="masa-efficient", round_idx=0, rollouts_ptr=str(out_ptr), policy_ptr=str(base),
                   history_path=None, out_ptr=str(tmp_path / "scored2.json"), history_out=str(tmp_path / "h2.json"))
