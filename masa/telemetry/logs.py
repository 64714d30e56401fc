"""Structured logs with the standard library: JSON lines for machines, short lines for people.

`configure_logging()` picks JSON when the stream is not a terminal (a pod's stderr collected by
Loki/Cloud Logging, a CI log) and human lines when it is. Every record has ts, level, logger, msg; any
`extra={...}` fields (run, round, step, ...) are added as top-level keys, and `bind(logger, run=...)`
attaches fields to every record of a logger.

    configure_logging()
    log = bind(logging.getLogger("masa.runner.rollout"), run="toy", branch="masa", round=2)
    log.info("rollout done", extra={"samples": 64})
    # {"ts": "2026-11-26T02:40:01.123Z", "level": "INFO", "logger": "masa.runner.rollout",
    #  "msg": "rollout done", "run": "toy", "branch": "masa", "round": 2, "samples": 64}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
LEVEL_ENV = "MASA_LOG_LEVEL"


def _factory_fields() -> frozenset[str]:
    """Attributes the installed record factory adds to every record (vLLM adds `vllm_process_name`):
    they are context of the process, not the `extra=` fields of one call."""
    record = logging.getLogRecordFactory()("", 0, "", 0, "", (), None)
    return frozenset(record.__dict__) - _STANDARD


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    skip = _STANDARD | _factory_fields()
    return {k: v for k, v in record.__dict__.items() if k not in skip and not k.startswith("_")}


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, extra fields, exc (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _utc(record.created), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        for k, v in extra_fields(record).items():
            out.setdefault(k, v)  # an extra field never hides the four standard ones
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`02:40:01 INFO  masa.runner.rollout: rollout done  run=toy round=2`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = (f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<5} "
                f"{record.name}: {record.getMessage()}" + (f"  {fields}" if fields else ""))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _MasaHandler(logging.StreamHandler):
    """Marks the handler `configure_logging` installed, so a second call replaces it, not adds one."""


def configure_logging(level: int | str | None = None, *, stream: TextIO | None = None,
                      json_lines: bool | None = None) -> logging.Handler:
    """Install one handler on the root logger (replacing a previous one from here); returns it.

    level: default $MASA_LOG_LEVEL or INFO. stream: default sys.stderr. json_lines: default True
    unless `stream` is a terminal.
    """
    import os

    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    level = level if level is not None else os.environ.get(LEVEL_ENV, "INFO").upper()
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _MasaHandler)]:
        root.removeHandler(h)
    handler = _MasaHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class BoundLogger(logging.LoggerAdapter):
    """A LoggerAdapter whose fields are merged with each call's `extra` (the call's win)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bind(logger: logging.Logger, **fields: Any) -> BoundLogger:
    """`logger` with `fields` (run, branch, round, step, ...) added to every record."""
    _check_fields(fields)
    return BoundLogger(logger, fields)


def _check_fields(fields: Mapping[str, Any]) -> None:
    clash = sorted(set(fields) & _STANDARD)
    if clash:  # logging itself would raise KeyError at the first record, far from the cause
        raise ValueError(f"log fields {clash} clash with LogRecord attributes; rename them")
