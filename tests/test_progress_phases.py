"""What a long step is doing shows on `masa run`'s terminal while it runs (issue 16, item 3): a step's
`MASA-PHASE` lines (masa.telemetry.progress.phase) appear under the running step's DAG name, at most
one per PHASE_EVERY_S, and never count as a finished step."""

import io
import json

from masa.pipeline.local import PHASE_EVERY_S, _ProgressTee
from masa.telemetry.progress import PHASE, phase

CYAN, END = "\x1b[96m", "\x1b[0m"


def test_phase_prints_one_json_line(capsys):
    phase("starting the vllm engine")
    out = capsys.readouterr().err  # stderr: a command's stdout stays its JSON
    assert out.startswith(PHASE) and json.loads(out[len(PHASE):]) == {"phase": "starting the vllm engine"}


def test_phases_show_under_the_running_step_at_most_every_few_seconds(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("masa.pipeline.local.time.monotonic", lambda: clock[0])
    term = io.StringIO()
    tee = _ProgressTee(io.StringIO(), term, total=3)
    tee.names = {"rollout-3": "grpo · round 2 · rollout"}
    tee.write(f"13:12:10.000 - INFO - Executing task {CYAN}'rollout-3'{END}\n")
    tee.write('    MASA-PHASE {"phase": "starting the vllm engine"}\n')
    clock[0] += 1.0
    tee.write('    MASA-PHASE {"phase": "engine ready in 5.1 s; generating"}\n')  # 1 s later: not shown
    clock[0] += PHASE_EVERY_S
    tee.write('    MASA-PHASE {"phase": "optimizer step 2 done"}\n')
    lines = term.getvalue().splitlines()
    assert [ln.split("  (")[0] for ln in lines] == ["      · grpo · round 2 · rollout: starting the vllm engine",
                                                    "      · grpo · round 2 · rollout: optimizer step 2 done"]
    assert tee.done == 0  # phases are not finished steps
