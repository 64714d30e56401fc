"""Pushgateway pushes and `step_telemetry`, against a local HTTP stand-in of the Pushgateway."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from masa.telemetry import Telemetry, step_telemetry
from masa.telemetry.telemetry import PORT_ENV, PUSHGATEWAY_ENV


class PushgatewayStandIn:
    """A STAND-IN for the Prometheus Pushgateway (not the real one): a loopback HTTP server that records
    each request's method, path and body and answers `status` (the real gateway answers 200 to a PUT)."""

    def __init__(self, status: int = 200):
        self.requests: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                outer.requests.append((self.command, self.path, body))
                self.send_response(status)
                self.end_headers()

            do_PUT = do_POST = do_DELETE = _record

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def samples(body: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def dead_url() -> str:
    """A loopback URL nothing listens on (bound then closed: connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_push_puts_the_exposition_text_to_the_group_url():
    tel = Telemetry("run-a", "masa-efficient", registry=CollectorRegistry())
    tel.observe_scoring(3, {"n_solution_rows": 16, "train_accuracy": 0.25, "meta_reward_mean": 0.5,
                            "reused": False}, outcomes={"correct": 4, "incorrect": 12})
    with PushgatewayStandIn() as gw:
        assert tel.push(gw.url, grouping_key={"round": "3", "step": "score"})
    [(method, path, body)] = gw.requests
    assert method == "PUT"  # PUT replaces the group: a retried step never leaves stale series behind
    assert path == "/metrics/job/masa/branch/masa-efficient/round/3/run/run-a/step/score"  # keys sorted
    s = samples(body)
    lab = {"run": "run-a", "branch": "masa-efficient", "round": "3"}
    assert s[("masa_verifier_outcomes_total", frozenset({**lab, "outcome": "incorrect"}.items()))] == 12
    assert s[("masa_score_samples_total", frozenset({**lab, "path": "solution"}.items()))] == 16
    assert s[("masa_score_meta_reward", frozenset({**lab, "component": "total"}.items()))] == 0.5
    assert s[("masa_step_reused", frozenset({**lab, "step": "score"}.items()))] == 0


def test_dead_or_failing_gateway_only_warns(caplog):
    tel = Telemetry("run-a", registry=CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="masa.telemetry"):
        assert tel.push(dead_url()) is False
        with PushgatewayStandIn(status=500) as gw:
            assert tel.push(gw.url) is False
        assert tel.push("not a url") is False
    assert caplog.text.count("metrics push to") == 3
    assert "HTTP Error 500" in caplog.text


def test_step_telemetry_serves_during_the_step_and_pushes_at_the_end(monkeypatch):
    monkeypatch.delenv(PORT_ENV, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASA_METRICS_ADDR", "127.0.0.1")
    with PushgatewayStandIn() as gw:
        monkeypatch.setenv(PUSHGATEWAY_ENV, gw.url)
        with step_telemetry("train", run="run-a", branch="grpo", round_idx=0, port=port) as tel:
            tel.observe_train_step(0, {"step": 1, "loss": 0.5, "seconds": 0.2})
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b'masa_train_loss{branch="grpo",round="0",run="run-a"} 0.5' in r.read()
        assert tel.server is None  # stopped on the way out
        with pytest.raises(OSError):  # and the port is released: nothing answers any more
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    [(_, path, body)] = gw.requests
    assert path == "/metrics/job/masa/branch/grpo/round/0/run/run-a/step/train"
    s = samples(body)
    step = frozenset({"run": "run-a", "branch": "grpo", "round": "0", "step": "train"}.items())
    assert s[("masa_step_success", step)] == 1
    assert s[("masa_step_duration_seconds", step)] > 0


def test_a_failing_step_still_pushes_success_0_and_reraises(monkeypatch):
    monkeypatch.delenv(PORT_ENV, raising=False)
    with PushgatewayStandIn() as gw, contextlib.suppress(RuntimeError):
        with step_telemetry("benchmark", run="run-a", gateway_url=gw.url, grouping_key={"checkpoint": "base"}):
            raise RuntimeError("engine died")
    [(_, path, body)] = gw.requests
    assert path == "/metrics/job/masa/checkpoint/base/run/run-a/step/benchmark"  # no branch, no round
    assert samples(body)[("masa_step_success", frozenset({"run": "run-a", "branch": "", "round": "",
                                                           "step": "benchmark"}.items()))] == 0


def test_step_telemetry_with_a_dead_gateway_does_not_fail_the_step(monkeypatch, caplog):
    monkeypatch.setenv(PORT_ENV, "0")
    monkeypatch.setenv(PUSHGATEWAY_ENV, dead_url())
    with caplog.at_level(logging.WARNING, logger="masa.telemetry"):
        with step_telemetry("score", run="run-a", round_idx=1) as tel:
            assert tel.server is None  # port 0: no endpoint
    assert "metrics push to" in caplog.text
