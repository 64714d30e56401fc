"""compile / submit / schedule. Submit and schedule run against a local HTTP STAND-IN for the KFP
API server (tests/kfp_standin.py): no KFP backend or Kubernetes runs here, so these tests check what
the kfp client would send, not what a cluster would do with it."""

import socket
import subprocess
import sys

import pytest
import yaml

from masa.config import load_config
from masa.pipeline.compile import ClusterError, compile_pipeline, schedule, submit
from tests.kfp_standin import KfpStandIn

COMPONENTS = {"configure", "prepare", "data-filter", "rollout", "score", "train", "benchmark", "promote", "report"}


def test_compile_holds_every_component_and_round(tmp_path):
    cfg = load_config("toy", ["rounds=2"])
    # two YAML documents: the pipeline spec, then the Kubernetes platform spec (kfp-kubernetes)
    spec, platform = yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text())
    names = {k.removeprefix("comp-").rstrip("-0123456789") for k in spec["components"]}
    assert COMPONENTS <= names
    tasks = spec["root"]["dag"]["tasks"]
    # 4 before the rounds (configure, prepare, data filter, base benchmark) + per branch 3 x rounds + 1
    # + promote + report
    assert len(tasks) == 4 + 2 * (3 * 2 + 1) + 2
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"model", "train_data", "store", "n_solution", "learning_rate"} <= set(params)
    execs = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in execs.values()}
    assert images == {cfg.images.cpu, cfg.images.vllm, cfg.images.deepspeed}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for e in executors.values():  # non-root, writable /tmp, scraped by the PodMonitor
        assert e["securityContext"]["runAsNonRoot"] is True
        assert e["emptyDirMounts"][0]["mountPath"] == "/tmp"
        assert e["podMetadata"]["labels"]["masa.io/metrics"] == "true"


def test_compile_cli_writes_yaml_without_credentials(tmp_path, monkeypatch):
    secret = "AKIAEXAMPLESECRET1234"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret + "xyz")
    out = tmp_path / "pipeline.yaml"
    r = subprocess.run([sys.executable, "-m", "masa.cli", "compile", "--preset", "paper", "--set", "rounds=2",
                        "--image-registry", "registry.example.com/team", "--store", "s3://my-bucket/runs",
                        "--set", "model=s3://my-bucket/m", "--set", "data.train=s3://my-bucket/d.parquet",
                        "--set", "benchmark.datasets=[s3://my-bucket/b.parquet]", "-o", str(out)],
                       capture_output=True, text=True, check=True)
    text = out.read_text()
    assert secret not in text and secret not in r.stdout + r.stderr
    # on S3 the credentials come from the Secret named in the config, by reference only
    assert "masa-s3-credentials" in text


def test_submit_sends_the_compiled_pipeline():
    cfg = load_config("smoke")
    with KfpStandIn() as kfp:
        (run_id,) = submit(cfg, host=kfp.host, experiment="masa-tests")
    assert run_id == "run-standin"
    runs = [b for m, p, b in kfp.requests if m == "POST" and p.startswith("/apis/v2beta1/runs")]
    assert len(runs) == 1
    spec = runs[0]["pipeline_spec"]["pipeline_spec"]  # beside it: the Kubernetes platform_spec
    assert spec["pipelineInfo"]["name"] == "masa-smoke"
    assert "kubernetes" in runs[0]["pipeline_spec"]["platform_spec"]["platforms"]
    assert runs[0]["experiment_id"] == "exp-standin"
    assert runs[0]["service_account"] == "masa-pipeline"  # manifests/rbac.yaml's account


def test_submit_no_cache_turns_caching_off_in_every_task():
    cfg = load_config("smoke", ["rounds=1"])
    with KfpStandIn() as kfp:
        submit(cfg, host=kfp.host, experiment="masa-tests", cache=False)
    (run,) = [b for m, p, b in kfp.requests if m == "POST" and p.startswith("/apis/v2beta1/runs")]
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks and all(t["cachingOptions"].get("enableCache", False) is False for t in tasks.values())


def test_schedule_sends_cron_concurrency_one_no_catchup():
    cfg = load_config("smoke")
    with KfpStandIn() as kfp:
        job = schedule(cfg, host=kfp.host, cron="0 0 3 * * *", experiment="retrain")
    assert job == "rr-standin"
    (body,) = [b for m, p, b in kfp.requests if m == "POST" and p.startswith("/apis/v2beta1/recurringruns")]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["service_account"] == "masa-pipeline"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "masa-smoke"


def test_an_endpoint_that_refuses_or_cannot_be_reached_is_one_line_naming_it():
    # the SDK raises the generated client's ApiException (status, headers, body) or urllib3's retry
    # error, thirty frames deep; the user gets the host and what it said
    cfg = load_config("smoke", ["rounds=1"])
    denied = "user system:anonymous cannot create runs in namespace kubeflow"
    with KfpStandIn(refuse=(403, denied)) as kfp:
        with pytest.raises(ClusterError) as refused:
            submit(cfg, host=kfp.host, experiment="masa-tests")
        with pytest.raises(ClusterError) as refused_schedule:
            schedule(cfg, host=kfp.host, cron="0 0 3 * * *", experiment="retrain")
    assert str(refused.value) == f"the KFP API at {kfp.host} answered 403 Forbidden: {denied}"
    assert str(refused_schedule.value) == str(refused.value)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = subprocess.run([sys.executable, "-m", "masa.cli", "submit", "--preset", "smoke", "--set", "rounds=1",
                        "--image-registry", "reg.example", "--store", "s3://b/p", "--host", host],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "FutureWarning" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"masa: cannot reach the KFP API at {host}: ")
    assert "Connection refused" in r.stderr.splitlines()[-1]


def test_schedule_rejects_five_field_cron():
    with pytest.raises(ValueError, match="6 fields"):
        schedule(load_config("smoke"), host="http://127.0.0.1:9", cron="0 3 * * *", experiment="x")


def test_bad_config_fails_before_anything_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "masa.cli", "run", "--preset", "smoke", "--out", str(tmp_path),
                        "--set", "algorithm.name=ppo", "--set", "rounds=0", "--set", "train.lr=-1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    for key in ("algorithm.name", "rounds", "train.lr"):
        assert key in r.stderr
    assert "'grpo', 'masa', 'masa-efficient'" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written
