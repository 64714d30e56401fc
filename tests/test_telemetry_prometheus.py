"""A real Prometheus server scrapes a training-step producer's endpoint; a series is read back via its API.

Needs the `prometheus` binary (Debian: `apt-get install -y --no-install-recommends prometheus`); the test
skips, saying so, where it is absent. Every wait is bounded and the server is always stopped.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import torch

from masa.telemetry import Telemetry
from masa.train.metrics import StepAccumulator

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="no `prometheus` binary on PATH (Debian: apt-get install -y "
                                                  "--no-install-recommends prometheus; .ci/run installs it)"),
]
RUN = "prom-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_row(step: int) -> dict:
    """A real metrics row of the trainer's accumulator: loss -0.1, 120 solution tokens, 0.2 s."""
    acc = StepAccumulator()
    acc.lr, acc.grad_norm = 1e-6, torch.tensor(0.5)
    acc.add({"solution/tokens": torch.tensor(120.0, dtype=torch.float64),
             "solution/pg_loss_sum": torch.tensor(-0.1, dtype=torch.float64)},
            loss=torch.tensor(-0.1, dtype=torch.float64), tokens=120)
    return acc.reduce(step=step, step_in_round=step, seconds=0.2, gap=None, device="cpu")


def producer(tel: Telemetry, stop: threading.Event) -> None:
    """Stands in for train_round's on_step: one optimizer step every 0.2 s."""
    step = 0
    while not stop.wait(0.2):
        step += 1
        tel.observe_train_step(0, step_row(step))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(what: str, fn, timeout_s: float, proc: subprocess.Popen):
    """Poll fn() until it returns a truthy value; fail with `what` after timeout_s or if Prometheus exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}) while waiting for {what}: {proc.stderr.read()[-2000:]}")
        try:
            if out := fn():
                return out
        except OSError:
            pass  # not listening yet
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def test_prometheus_scrapes_and_answers_a_query(tmp_path):
    tel = Telemetry(RUN, "masa")
    target = tel.serve(free_port(), addr="127.0.0.1")
    assert target is not None
    stop = threading.Event()
    feeder = threading.Thread(target=producer, args=(tel, stop), daemon=True)
    feeder.start()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: masa\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n")
    api = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={api.removeprefix('http://')}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("/-/ready", lambda: urllib.request.urlopen(f"{api}/-/ready", timeout=2).status == 200, 30, proc)
        query = f'masa_train_steps_total{{run="{RUN}"}}'

        def series():
            r = get_json(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
            assert r["status"] == "success", r
            return r["data"]["result"]

        [s] = wait_for(f"a sample of {query}", series, 30, proc)
        assert s["metric"] == {"__name__": "masa_train_steps_total", "job": "masa", "instance": f"127.0.0.1:{target}",
                               "run": RUN, "branch": "masa", "round": "0"}
        assert float(s["value"][1]) >= 1
        loss = get_json(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": f'masa_train_loss{{run="{RUN}"}}'}))
        assert float(loss["data"]["result"][0]["value"][1]) == pytest.approx(-0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        stop.set()
        feeder.join(5)
        tel.close()
