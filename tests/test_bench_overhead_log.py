"""bench/bench_step_overhead.py --log: kfp.local's time-of-day stamps placed on the right day."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("bench_step_overhead",
                                               Path(__file__).parents[1] / "bench" / "bench_step_overhead.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _task(name: str, start: dt.datetime, seconds: float) -> str:
    # kfp.local prints local time of day only; the step's progress line carries epoch clocks
    end = start + dt.timedelta(seconds=seconds)
    clock = {"process_start": start.timestamp() + 0.1, "printed": end.timestamp() - 0.1,
             "started_at": start.timestamp() + 0.5, "finished_at": end.timestamp() - 0.2}
    return "\n".join([
        f"{start:%H:%M:%S}.{start.microsecond // 1000:03d} - INFO - Executing task '{name}'",
        "    MASA-PROGRESS " + json.dumps({"step": "score", "reused": False, "clock": clock}),
        f"{end:%H:%M:%S}.{end.microsecond // 1000:03d} - INFO - Task '{name}' finished with status SUCCESS"])


def test_a_log_that_crosses_midnight_keeps_each_task_on_its_own_day():
    # Two 10 s tasks, one at 23:59:40 and one at 00:00:05 the next day; the log file was last written
    # on the second day (the day the bench assumed for every stamp before: -86400 s for the first).
    before = dt.datetime(2026, 12, 2, 23, 59, 40)
    after = dt.datetime(2026, 12, 3, 0, 0, 5)
    text = _task("score", before, 10.0) + "\n" + _task("score-2", after, 10.0)
    tasks = bench.parse_log(text, after.date())
    assert [t["t1"] - t["t0"] for t in tasks] == pytest.approx([10.0, 10.0], abs=1e-3)
    assert tasks[0]["t0"] == pytest.approx(before.timestamp(), abs=1e-3)
    rows = [bench.split(t) for t in tasks]
    assert [r["kfp<"] for r in rows] == pytest.approx([0.1, 0.1], abs=1e-3)
    assert [r["kfp>"] for r in rows] == pytest.approx([0.1, 0.1], abs=1e-3)
