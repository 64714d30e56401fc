"""What `masa run` shows on the terminal: one line per step with the DAG's names, a failed step's own
error instead of tracebacks, Ctrl-C without a traceback, and one run per output directory."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masa.config import load_config
from masa.pipeline.dag import build_pipeline
from masa.pipeline.local import _exclusive, _ProgressTee, display_names, total_steps

# kfp.local's own lines, colours included, as pipeline.log records them
RED, CYAN, END = "\x1b[91m", "\x1b[96m", "\x1b[0m"
FAILED_TASK = f"13:12:11.450 - ERROR - Task {CYAN}'data-filter'{END} finished with status {RED}FAILURE{END}\n"


def _tee(names: dict[str, str] | None = None) -> tuple[_ProgressTee, io.StringIO]:
    term = io.StringIO()
    tee = _ProgressTee(io.StringIO(), term, total=3)
    tee.names = names or {}
    return tee, term


def test_a_failed_step_is_named_with_the_last_line_of_its_own_traceback():
    tee, term = _tee({"data-filter": "data filter"})
    tee.write(f"13:12:10.000 - INFO - Executing task {CYAN}'data-filter'{END}\n")
    tee.write("    Traceback (most recent call last):\n"
              "    pyarrow.lib.ArrowInvalid: Parquet magic bytes not found in footer.\n"
              "    The above exception was the direct cause of the following exception:\n"
              "    Traceback (most recent call last):\n"
              "    masa.data.records.DataError: cannot read parquet file /x.parquet: magic bytes\n")
    tee.write(FAILED_TASK)
    # the chained cause is passed over: the closing line is the step's own error, module path dropped
    assert tee.failed == ("data filter", "DataError: cannot read parquet file /x.parquet: magic bytes")
    assert term.getvalue() == "  ✗ data filter\n"  # no colour codes; the reason closes the run


def test_a_traceback_belongs_to_the_task_that_printed_it():
    tee, _ = _tee()
    tee.write("    ValueError: handled and logged by an earlier task\n")
    tee.write(f"Executing task {CYAN}'data-filter'{END}\n")
    tee.write(FAILED_TASK)
    assert tee.failed == ("data-filter", "see the log")


def test_cached_steps_are_named_as_in_the_dag_and_configure_is_not_counted():
    tee, term = _tee({"rollout-3": "grpo · round 2 · rollout", "configure": "configure"})
    for task in ("configure", "rollout-3", "rollout-3", "rollout-3", "rollout-3"):
        tee.write(f"INFO - Task {task} cache hit (key=0123456789ab); outputs reused\n")
    lines = term.getvalue().splitlines()
    assert len(lines) == 4 and all("grpo · round 2 · rollout" in ln and "(cached)" in ln for ln in lines)
    # more lines than the planned total (3) never read "[4/3]"
    assert lines[0].startswith("[  1/3]")
    assert lines[-1].startswith("[  4/4]")


def test_progress_lines_name_the_checkpoint_and_show_counts_whole():
    from masa.telemetry.stepmetrics import progress_line

    tee, term = _tee({"benchmark-2": "benchmark · masa"})
    for name in ("masa", "base"):
        tee.write(progress_line("benchmark", {"accuracy": 0.241, "n": 700}, of=name) + "\n")
    tee.write("INFO - Task benchmark-2 cache hit (key=0123456789ab); outputs reused\n")
    tee.write(progress_line("promote", {"decision": "first", "promoted": 1}) + "\n")
    tee.write(progress_line("data_filter", {"kept": 4000, "heldout": 700}) + "\n")
    tee.write(progress_line("train", {"policy_loss": 0.0020512, "grad_norm": 0.0, "wall_s": 1.2}) + "\n")
    lines = [re.sub(r"\s+\(\s*\d+s\)$", "", ln.split("] ", 1)[1]) for ln in term.getvalue().splitlines()]
    # three benchmarks in a run: each line says which checkpoint, in the DAG's words
    assert lines[0].split() == ["benchmark", "·", "masa", "accuracy=0.241"]
    assert lines[1].split() == ["benchmark", "·", "base", "accuracy=0.241"]
    assert lines[2].split() == ["benchmark", "·", "masa", "(cached)"]
    assert lines[3].split() == ["promote", "decision=first"]
    # counts whole (the metrics are floats: 4000.0 read "4e+03"), other figures to 3 digits
    assert lines[4].split() == ["data_filter", "kept=4,000", "heldout=700"]
    assert lines[5].split() == ["train", "policy_loss=0.00205", "grad_norm=0", "wall_s=1.2"]


def test_display_names_cover_every_task_of_the_smoke_dag():
    cfg = load_config("smoke")
    names = display_names(build_pipeline(cfg, 0))
    assert names["configure"] == "configure" and names["data-filter"] == "data filter"
    assert "grpo · round 2 · train" in names.values() and "benchmark · masa" in names.values()
    # every shown step has a name: all tasks less configure, as total_steps counts them
    assert len(names) - 1 == total_steps(cfg)


def _masa_run(out: Path, *args: str, **kw) -> subprocess.Popen:
    # the toy model cache the other pipeline tests share: a private one would rebuild the smoke toy per test
    return subprocess.Popen([sys.executable, "-m", "masa.cli", "run", "--preset", "smoke", "--out", str(out),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_second_run_on_the_same_output_refuses_naming_the_first(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with _exclusive(out):  # this process is "the first run"
        proc = _masa_run(out)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    assert f"another masa run (pid {os.getpid()}) is using {out}" in stderr and "Traceback" not in stderr


def test_folders_the_run_cannot_write_are_named_before_it_starts(tmp_path):
    # a file where a folder must go: mkdir fails with ENOTDIR, for root too (permission bits do not stop
    # root, so they cannot stand in for a read-only place here); every such folder named, nothing made
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "MASA_CACHE_DIR": str(blocker / "cache")}
    proc = _masa_run(blocker / "run", "--store", str(blocker / "store"), env=env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    assert stderr == ("masa: cannot start:\n"
                      f"  - --out: cannot write to {blocker / 'run'}: Not a directory\n"
                      f"  - store: cannot write to {blocker / 'store'}: Not a directory\n"
                      f"  - MASA_CACHE_DIR: cannot write to {blocker / 'cache' / 'toy'}: Not a directory\n")
    assert stdout == ""
    # the store read as the store reads its URI: file:// is a folder too, another scheme is named
    for uri, why in ((f"file://{blocker / 'store'}", f"cannot write to {blocker / 'store'}: Not a directory"),
                     ("gs://bucket/run", "unsupported store URI scheme 'gs'")):
        proc = _masa_run(tmp_path / "run", "--store", uri)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and f"  - store: {why}" in stderr, stderr


@pytest.mark.slow
def test_bad_data_fails_in_one_line_naming_the_step_and_its_reason(tmp_path):
    bad = tmp_path / "train.parquet"
    bad.write_text("not parquet")
    proc = _masa_run(tmp_path / "run", "--set", f"data.train={bad}")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stdout + stderr
    assert f"masa: data filter failed: DataError: cannot read parquet file {bad}" in stderr
    assert "rerun the same command" in stderr and "pipeline.log" in stderr
    assert "Traceback" not in stdout + stderr and "\x1b[" not in stdout + stderr


@pytest.mark.slow
def test_ctrl_c_stops_without_a_traceback_and_says_how_to_go_on(tmp_path):
    # SIGINT at its default, as under a terminal: a shell that starts this suite in the background
    # without job control (`bash -c 'make test &'`, nohup) hands it on ignored, and masa run with it
    proc = _masa_run(tmp_path / "run", start_new_session=True,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    for line in proc.stdout:  # wait for the first finished step, then interrupt as a terminal would
        if line.startswith("[  1/"):
            break
        assert time.monotonic() - t0 < 600, "no step finished"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "rerun the same command" in stderr
    assert "Traceback" not in stdout + stderr


def test_the_report_summary_wraps_its_prose_for_the_terminal_and_keeps_tables_whole():
    from masa.commands.run import terminal_text

    prose = " ".join(["word"] * 30)  # 149 characters: two lines at 100
    table = "| checkpoint | avg@k |\n|---|---|\n| base | 0.211 ± 0.021 |"
    text = terminal_text(f"{prose}\n\n{table}\n\nPromotion: **first**\n")
    assert text.split("\n\n") == [" ".join(["word"] * 20) + "\n" + " ".join(["word"] * 10), table,
                                  "Promotion: **first**"]
