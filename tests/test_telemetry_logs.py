"""Structured logs (JSON lines off a terminal, human lines on one) and TTY-aware progress bars."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from masa.telemetry import bind, configure_logging, progress
from masa.telemetry.progress import enabled


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_off_a_terminal(restore_root):
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    log = bind(logging.getLogger("masa.runner.rollout"), run="toy", branch="masa", round=2)
    log.info("rollout done in %.1f s", 3.25, extra={"samples": 64, "round": 3})
    logging.getLogger("masa.x").debug("hidden below INFO")
    try:
        raise ValueError("bad shard")
    except ValueError:
        logging.getLogger("masa.runner.scoring").exception("scoring failed", extra={"path": object()})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {"level": "INFO", "logger": "masa.runner.rollout", "msg": "rollout done in 3.2 s",
                     "run": "toy", "branch": "masa", "round": 3, "samples": 64}  # the call's round wins
    assert second["level"] == "ERROR" and second["msg"] == "scoring failed"
    assert "ValueError: bad shard" in second["exc"]
    assert second["path"].startswith("<object")  # non-JSON values are written as str()


def test_human_lines_on_a_terminal_and_reconfiguring_replaces_the_handler(restore_root):
    tty = FakeTTY()
    configure_logging("INFO", stream=io.StringIO())
    configure_logging("INFO", stream=tty)
    assert sum(type(h).__name__ == "_MasaHandler" for h in logging.getLogger().handlers) == 1
    bind(logging.getLogger("masa.train"), run="toy").warning("slow step", extra={"step": 7})
    line = tty.getvalue().strip()
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING masa\.train: slow step  run=toy step=7", line)


def test_bound_fields_that_clash_with_log_records_are_refused():
    with pytest.raises(ValueError, match=r"\['name'\] clash with LogRecord"):
        bind(logging.getLogger("x"), name="run-1")


def test_progress_is_silent_off_a_terminal(monkeypatch):
    monkeypatch.delenv("MASA_PROGRESS", raising=False)
    pipe, tty = io.StringIO(), FakeTTY()
    assert list(progress(range(3), desc="rollout", stream=pipe)) == [0, 1, 2]
    assert pipe.getvalue() == ""
    with progress(total=4, desc="toy build", unit="prompt", stream=tty) as bar:
        bar.update(4)
    assert "toy build" in tty.getvalue() and "4/4" in tty.getvalue()
    assert enabled(pipe, {"MASA_PROGRESS": "1"}) and not enabled(tty, {"MASA_PROGRESS": "0"})
