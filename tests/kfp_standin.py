"""A STAND-IN for the Kubeflow Pipelines API server (no KFP backend runs here).

It answers the few v2beta1 calls `kfp.Client` makes to create experiments, runs and recurring runs,
on loopback, and records each request body, so tests can check exactly what `masa submit` and
`masa schedule` would send to a real cluster. It implements no pipeline execution.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiments": [], "total_size": 0})
        if self.path.startswith("/apis/v2beta1/runs/"):  # every run has finished, successfully
            return self._reply({"run_id": self.path.rsplit("/", 1)[-1].split("?")[0], "state": "SUCCEEDED"})
        return self._reply({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(("POST", self.path, body))
        if self.server.refuse:  # as a real API answers a call it refuses: grpc-gateway's status JSON
            status, message = self.server.refuse
            data = json.dumps({"code": 7, "message": message, "details": []}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiment_id": "exp-standin", "display_name": body.get("display_name")})
        if self.path.startswith("/apis/v2beta1/runs"):
            return self._reply({"run_id": "run-standin", "display_name": body.get("display_name"), "state": "PENDING"})
        if self.path.startswith("/apis/v2beta1/recurringruns"):
            return self._reply({"recurring_run_id": "rr-standin", "display_name": body.get("display_name")})
        return self._reply({})


class KfpStandIn:
    """`with KfpStandIn() as s: s.host, s.requests`; `refuse=(403, "why")` answers every POST so."""

    def __init__(self, refuse: tuple[int, str] | None = None) -> None:
        self.refuse = refuse

    def __enter__(self) -> KfpStandIn:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.requests = []
        self.server.refuse = self.refuse
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    @property
    def requests(self) -> list:
        return self.server.requests

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
