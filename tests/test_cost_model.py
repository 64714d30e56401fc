"""bench/paper_cost_model.py: the JSON a reader (and the docs) rely on. What the figures mean is the
model's business (docs/deploy.md); here: every design has an overhead share and its parts, the
parts add up, and every constant says whether it was measured here, cited, or assumed, and from where."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"generation", "scoring", "training", "engine_start", "model_load", "checkpoint_load", "checkpoint_save",
         "pipeline_scheduling"}


def test_cost_model_json_has_today_chosen_and_labelled_constants():
    out = json.loads(subprocess.run([sys.executable, str(ROOT / "bench" / "paper_cost_model.py"), "--json"],
                                    capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    for design in ("today", "chosen", "bounded_runs", "local_handoff", "persistent_engines"):
        d = out[design]
        assert set(d["parts_s"]) == PARTS and 0 <= d["overhead_share"] <= 1
        useful = sum(d["parts_s"][k] for k in ("generation", "scoring", "training"))
        assert abs(d["overhead_share"] - (1 - useful / sum(d["parts_s"].values()))) < 1e-9
    # the chosen design drops one checkpoint download per round (tokenizer-only scoring)
    assert out["chosen"]["parts_s"]["checkpoint_load"] < out["today"]["parts_s"]["checkpoint_load"]
    assert out["size"]["tasks_per_run"] <= 40 < out["size"]["today_tasks"]
    assert out["size"]["workflow_bytes_est"] < out["size"]["etcd_limit_bytes"] < out["size"]["today_workflow_bytes_est"]
    for name, c in out["constants"].items():
        assert c["kind"] in ("measured", "cited", "assumed") and c["source"], name
