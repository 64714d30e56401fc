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


def test_writes_from_parallel_threads_reach_the_log_whole(tmp_path):
    """kfp.local runs a ParallelFor's iterations in threads that all print to the tee. Unserialized,
    a text file written from two threads can lose text or write uninitialized memory (cpython#118138;
    a sharded run's pipeline.log once held 2 KB of heap bytes). print() writes its text and its newline
    in two calls, so pieces of different threads may alternate; each piece must arrive whole, once."""
    import re
    import threading

    log_path = tmp_path / "pipeline.log"
    with log_path.open("a") as log:
        tee = _ProgressTee(log, io.StringIO(), total=1)

        def writer(t: int) -> None:
            for i in range(2000):
                tee.write(f"<{t}:{i}>")
                tee.write("é\n")  # a two-byte character: a torn write would not decode

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        tee.flush()
    text = log_path.read_bytes().decode("utf-8")
    tokens = re.findall(r"<(\d+):(\d+)>", text)
    assert sorted(tokens) == sorted((str(t), str(i)) for t in range(8) for i in range(2000))
    assert text.count("é\n") == 8 * 2000
    assert re.sub(r"<\d+:\d+>|é\n", "", text) == ""  # nothing else: no torn or foreign bytes
