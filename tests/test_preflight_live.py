"""`masa preflight --kubeconfig`: the checks that read the cluster (pipeline/live_checks.py).

No Kubernetes runs here: the API server is a STAND-IN (`FakeApiServer`), an HTTP server on loopback that
answers the GETs the checks make with the objects a test put in it (404 otherwise), reached through the real
kubernetes client and a real kubeconfig file.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from masa.config import load_config
from masa.pipeline.live_checks import api_clients, live_checks
from masa.storage.s3 import SECRET_KEYS

NS = "kubeflow-user-team"


class FakeApiServer:
    """STAND-IN for a Kubernetes API server: path -> JSON object; records every request's method."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.methods: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.methods.append("GET")
                obj = outer.objects.get(self.path.split("?")[0])
                body = json.dumps(obj or {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "NotFound", "code": 404}).encode()
                self.send_response(200 if obj else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def put(self, path: str, obj: dict) -> None:
        self.objects[path] = obj

    def kubeconfig(self, path) -> str:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "team",
            "clusters": [{"name": "c", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "team", "context": {"cluster": "c", "user": "u", "namespace": NS}}]}))
        return str(path)


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.httpd.shutdown()


def _secret(keys):
    return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "masa-s3-credentials"},
            "data": {k: base64.b64encode(b"x").decode() for k in keys}}


def _ready(api, pull=()):
    api.put(f"/api/v1/namespaces/{NS}/secrets/masa-s3-credentials", _secret(SECRET_KEYS))
    api.put(f"/api/v1/namespaces/{NS}/serviceaccounts/masa-pipeline",
            {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "masa-pipeline"},
             "imagePullSecrets": [{"name": p} for p in pull]})
    api.put(f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainingruntimes/masa-deepspeed",
            {"kind": "TrainingRuntime", "metadata": {"name": "masa-deepspeed"}})


def _lines(api, tmp_path, cfg):
    core, custom, ns = api_clients(api.kubeconfig(tmp_path / "kubeconfig"))
    assert ns == NS  # the context's namespace
    return {c.name: (c.status, c.message) for c in live_checks(cfg, core, custom, ns)}


def test_a_ready_namespace_passes_every_check_with_reads_only(api, tmp_path):
    _ready(api)
    found = _lines(api, tmp_path, load_config("paper", ["resources.train_nodes=2"]))
    assert {k: s for k, (s, _) in found.items()} == {
        "cluster-secret": "ok", "cluster-service-account": "ok", "cluster-pull-secrets": "ok",
        "cluster-trainingruntime": "ok"}
    assert set(api.methods) == {"GET"}  # nothing created or changed


def test_each_missing_object_is_named(api, tmp_path):
    _ready(api, pull=["regcred"])  # the account names a pull secret that is not there
    api.put(f"/api/v1/namespaces/{NS}/secrets/masa-s3-credentials", _secret(SECRET_KEYS[:1]))
    del api.objects[f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainingruntimes/masa-deepspeed"]
    found = _lines(api, tmp_path, load_config("paper", ["resources.train_nodes=2"]))
    assert found["cluster-secret"] == ("FAIL", f"Secret {NS}/masa-s3-credentials lacks "
                                       f"{', '.join(SECRET_KEYS[1:])}: step pods fail with CreateContainerConfigError")
    assert found["cluster-pull-secrets"][0] == "FAIL" and "regcred" in found["cluster-pull-secrets"][1]
    assert found["cluster-trainingruntime"][0] == "FAIL" and "manifests/trainingruntime.yaml" in \
        found["cluster-trainingruntime"][1]
    # the paper preset's serving TrainJob needs it on one node too; training in the step pod never does
    assert load_config("paper").resources.train_nodes == 1
    assert _lines(api, tmp_path, load_config("paper"))["cluster-trainingruntime"][0] == "FAIL"
    off = load_config("paper", ["resources.train_service=false"])
    assert _lines(api, tmp_path, off)["cluster-trainingruntime"][0] == "ok"


def test_preflight_cli_reads_the_cluster_and_fails_in_one_line_when_unreachable(api, tmp_path):
    _ready(api)
    del api.objects[f"/api/v1/namespaces/{NS}/serviceaccounts/masa-pipeline"]
    cmd = [sys.executable, "-m", "masa.cli", "preflight", "--preset", "smoke"]
    r = subprocess.run([*cmd, "--kubeconfig", api.kubeconfig(tmp_path / "kc")], capture_output=True, text=True,
                       env={**os.environ, "MASA_IMAGE_REGISTRY": ""})
    assert "ok   cluster-secret:" in r.stdout
    assert f"FAIL cluster-service-account: ServiceAccount {NS}/masa-pipeline not found" in r.stdout
    assert r.returncode == 1
    api.httpd.shutdown()
    api.httpd.server_close()
    r = subprocess.run([*cmd, "--kubeconfig", str(tmp_path / "kc"), "--namespace", "other"], capture_output=True,
                       text=True, env={**os.environ, "MASA_IMAGE_REGISTRY": ""}, timeout=120)
    cluster = [line for line in r.stdout.splitlines() if line.startswith("FAIL cluster")]
    assert len(cluster) == 1 and cluster[0].startswith("FAIL cluster: cannot read namespace other:"), r.stdout
    assert "Traceback" not in r.stdout + r.stderr
