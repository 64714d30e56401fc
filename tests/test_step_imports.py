"""The scoring and report steps load neither vLLM nor DeepSpeed (issue 16): each step process pays
only for what it uses, and the CPU image's steps must not need the engine or trainer packages. The
training step's own process only stages, launches the DeepSpeed workers and publishes: it loads not
even torch (~2-3 s per round on a 2-core machine; the workers import it themselves).

A fresh interpreter imports what kfp.local's executor runs for those steps (the component modules and
the `masa` modules their bodies import) and lists the heavy packages that ended up in sys.modules.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("vllm", "deepspeed", "torch")

STEP_MODULES = {
    "score": ["masa.components.score", "masa.config", "masa.telemetry.stepmetrics", "masa.steps.score",
              "masa.runner.scoring", "masa.algo.verifier", "masa.telemetry"],
    "report": ["masa.components.report", "masa.config", "masa.telemetry.stepmetrics", "masa.steps.report"],
    "train": ["masa.components.train", "masa.config", "masa.telemetry.stepmetrics", "masa.steps.train",
              "masa.runner.training", "masa.telemetry"],
}
# what each step may load of HEAVY: scoring computes advantages with torch (masa.algo)
ALLOWED = {"score": {"torch"}, "report": set(), "train": set()}


def _loaded(modules: list[str]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted({{k.split('.')[0] for k in sys.modules}} & set({HEAVY!r}))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("step", sorted(STEP_MODULES))
def test_step_imports_only_what_it_uses(step):
    extra = set(_loaded(STEP_MODULES[step])) - ALLOWED[step]
    assert not extra, f"the {step} step's process imports {sorted(extra)}"


def test_the_check_sees_a_heavy_import():
    # the same probe given a module that does load DeepSpeed reports it: the check above can fail
    # (a probe that never saw a heavy module would pass vacuously)
    assert "deepspeed" in _loaded(["deepspeed"])
