"""What a standard Kubeflow cluster would receive for a first run (issue 19), checked on the compiled IR,
the TrainJob request and the CLI's output. No cluster or KFP backend runs here: the TrainJob API is a
recording STAND-IN (`RecordingApi`), and backend-version facts come from the KFP tracker (pipeline/k8s.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from masa.config import UI_PARAMETERS, load_config
from masa.configbase import ConfigError
from masa.pipeline.compile import compile_pipeline, retarget
from masa.pipeline.k8s import MIN_BACKEND, for_backend
from masa.storage.s3 import SECRET_KEYS, SECRET_OPTIONAL_KEYS
from masa.train.config import TrainConfig
from masa.train.spec import RoundRequest
from masa.train.trainjob import TrainJobSettings, current_namespace, follow, job_name, trainjob_manifest

ROOT = Path(__file__).resolve().parents[1]
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a paper run's IR parses in 0.1 s, not 0.6
_REQUEST = RoundRequest(cfg=TrainConfig(), model="s3://b/m", scored="s3://b/s.parquet", experts=None, out="s3://b/o")
REGISTRY = "registry.example.com/team"
# a paper configuration as a cluster needs it: own bucket and registry, inputs staged in the store
PAPER_OK = ["--image-registry", REGISTRY, "--store", "s3://my-bucket/runs",
            "--set", "model=s3://my-bucket/models/qwen3-8b-base",
            "--set", "data.train=s3://my-bucket/data/deepscaler.parquet",
            "--set", "benchmark.datasets=[s3://my-bucket/bench/math500.parquet,s3://my-bucket/bench/aime24.parquet]",
            "--set", "rounds=8"]


def _compile(tmp_path, preset="toy", overrides=(), name="p.yaml"):
    path = compile_pipeline(load_config(preset, list(overrides)), tmp_path / name)
    spec, platform = yaml.load_all(path.read_text(), LOADER)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _executor(spec, task: str) -> str:
    return spec["root"]["dag"]["tasks"][task]["componentRef"]["name"].replace("comp-", "exec-")


def _resources(spec, task):
    return spec["deploymentSpec"]["executors"][_executor(spec, task)]["container"]["resources"]


def _masa(*args, env=None):
    return subprocess.run([sys.executable, "-m", "masa.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("ir"), "toy", ["rounds=1", "resources.node_selector={pool: main}",
                                                            "resources.gpu_tolerations=[{key: gpu, operator: Exists, "
                                                            "effect: NoSchedule}]"])


# ---------------------------------------------------------------- 1. one definition of the Secret's keys
def test_every_pod_and_the_trainjob_read_the_same_secret_keys(toy):
    _, execs = toy
    for name, e in execs.items():  # compiled without a store: the UI may still switch it to s3:// (item 9)
        refs = {r["optional"]: [k["secretKey"] for k in r["keyToEnv"]] for r in e["secretAsEnv"]}
        assert refs == {False: list(SECRET_KEYS), True: list(SECRET_OPTIONAL_KEYS)}, name
    job = trainjob_manifest("j", _REQUEST, TrainJobSettings(image="i", num_nodes=2, proc_per_node=8))
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in job["spec"]["trainer"]["env"]}
    assert list(env) == [*SECRET_KEYS, *SECRET_OPTIONAL_KEYS]
    assert [k for k, ref in env.items() if ref.get("optional")] == list(SECRET_OPTIONAL_KEYS)


def test_template_launcher_and_docs_name_the_same_keys():
    template = yaml.safe_load((ROOT / "manifests/templates/s3-credentials.secret.yaml").read_text())
    assert list(template["stringData"]) == [*SECRET_KEYS, *SECRET_OPTIONAL_KEYS]
    launcher = yaml.safe_load(yaml.safe_load((ROOT / "manifests/kfp-launcher.yaml").read_text())["data"]["providers"])
    ref = launcher["s3"]["default"]["credentials"]["secretRef"]
    assert (ref["accessKeyKey"], ref["secretKeyKey"]) == SECRET_KEYS
    docs = (ROOT / "docs/deploy.md").read_text()
    create = docs[docs.index("kubectl -n masa create secret generic"):][:600]
    for key in (*SECRET_KEYS, *SECRET_OPTIONAL_KEYS):
        assert f"--from-literal={key}=" in create, key


# ---------------------------------------------------------------- 2. image registry at compile
def test_compile_takes_the_build_registry_and_refuses_the_placeholder(tmp_path):
    out = tmp_path / "p.yaml"
    r = _masa("compile", "--preset", "paper", *PAPER_OK[2:], "-o", str(out), env={"MASA_IMAGE_REGISTRY": ""})
    assert r.returncode == 2 and "FAIL images" in r.stderr and "MASA_IMAGE_REGISTRY" in r.stderr
    assert not list(tmp_path.glob("p*.yaml"))
    r = _masa("compile", "--preset", "paper", *PAPER_OK[2:], "--set", "images.cpu=other.io/x/cpu:1",
              "-o", str(out), env={"MASA_IMAGE_REGISTRY": REGISTRY + "/"})
    assert r.returncode == 0, r.stderr
    parts = sorted(tmp_path.glob("p*.yaml"))  # one file per run (bounded runs): p.yaml or p-partNN.yaml
    assert parts
    images = {e["container"]["image"] for part in parts for e in next(yaml.load_all(part.read_text(), LOADER))
              ["deploymentSpec"]["executors"].values()}
    # build.sh's tags (tests/test_images.py pins them): REGISTRY/masa-pipeline-<name>:<version>; --set wins
    assert images == {"other.io/x/cpu:1", f"{REGISTRY}/masa-pipeline-vllm:0.1.0",
                      f"{REGISTRY}/masa-pipeline-deepspeed:0.1.0"}


# ---------------------------------------------------------------- 10. images by digest (KFP's cache key holds the reference)
def test_compile_pins_images_by_the_digests_build_sh_recorded(tmp_path):
    digest = "sha256:" + "ab" * 32
    record = tmp_path / "digests.json"  # what `images/build.sh --push` writes (tests/test_images.py)
    record.write_text(json.dumps({n: f"{REGISTRY}/masa-pipeline-{n}@{digest}" for n in ("cpu", "vllm", "deepspeed")}))
    out = tmp_path / "p.yaml"
    r = _masa("compile", "--preset", "paper", *PAPER_OK, "--image-digests", str(record), "-o", str(out))
    assert r.returncode == 0, r.stderr
    images = {e["container"]["image"] for part in sorted(tmp_path.glob("p*.yaml"))
              for e in next(yaml.load_all(part.read_text(), LOADER))["deploymentSpec"]["executors"].values()}
    assert images == {f"{REGISTRY}/masa-pipeline-{n}@{digest}" for n in ("cpu", "vllm", "deepspeed")}
    pinned = _masa("preflight", "--preset", "paper", *PAPER_OK, "--image-digests", str(record))
    tagged = _masa("preflight", "--preset", "paper", *PAPER_OK)
    assert "ok   image-digests: every image referenced by digest" in pinned.stdout
    assert "warn image-digests: cpu, vllm, deepspeed referenced by tag" in tagged.stdout and tagged.returncode == 0


def test_a_bad_digest_record_is_one_line_naming_it(tmp_path):
    record = tmp_path / "digests.json"
    record.write_text(json.dumps({"cpu": f"{REGISTRY}/masa-pipeline-cpu:0.1.0"}))
    r = _masa("compile", "--preset", "paper", *PAPER_OK, "--image-digests", str(record), "-o", str(tmp_path / "p.yaml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"masa: --image-digests {record}: cpu='{REGISTRY}/masa-pipeline-cpu:0.1.0': "
                                             "keys must be cpu, vllm, deepspeed and values image references by digest "
                                             "(name@sha256:...)"]


# ---------------------------------------------------------------- 4, 6. volumes, requests, deadlines, placement
def test_gpu_steps_get_a_memory_backed_shm_and_every_step_a_bounded_scratch(toy):
    spec, execs = toy
    cfg = load_config("toy")
    for task in spec["root"]["dag"]["tasks"]:
        mounts = {m["mountPath"]: m for m in execs[_executor(spec, task)]["emptyDirMounts"]}
        # engine steps, even on CPU ranks (toy); promote benchmarks the current model when its figures are stale
        gpu = task.startswith(("rollout", "benchmark", "train", "promote"))
        assert ("/dev/shm" in mounts) == gpu, task
        if gpu:
            assert mounts["/dev/shm"]["medium"] == "Memory"
            assert mounts["/dev/shm"]["sizeLimit"] == cfg.resources.shm_size
        assert mounts["/tmp"]["sizeLimit"], task


def test_small_steps_request_little_and_every_step_has_a_deadline(toy):
    spec, execs = toy
    r = load_config("toy").resources
    for task, (cpu, timeout) in {"configure": (r.small.cpu, r.small.timeout_s),
                                 "report": (r.small.cpu, r.small.timeout_s),
                                 "score": (r.cpu_steps.cpu, r.cpu_steps.timeout_s),
                                 "rollout": (r.cpu_request, r.gpu_timeout_s)}.items():
        assert _resources(spec, task)["resourceCpuRequest"] == cpu, task
        assert int(execs[_executor(spec, task)]["activeDeadlineSeconds"]) == timeout, task
    assert "accelerator" not in _resources(spec, "configure")


def test_node_selector_everywhere_and_gpu_tolerations_on_gpu_steps_only(toy):
    spec, execs = toy
    for task in ("configure", "rollout"):
        e = execs[_executor(spec, task)]
        assert e["nodeSelector"]["labels"] == {"pool": "main"}
        assert bool(e.get("tolerations")) == (task == "rollout")
    assert execs[_executor(spec, "rollout")]["tolerations"] == [{"key": "gpu", "operator": "Exists",
                                                                 "effect": "NoSchedule"}]


def test_bad_toleration_keys_are_named():
    with pytest.raises(ConfigError, match=r"resources.tolerations\[0\]: unknown keys \['efect'\]"):
        load_config("toy", ["resources.tolerations=[{key: gpu, efect: NoSchedule}]"])


# ---------------------------------------------------------------- 5. backend versions
def test_older_backends_get_what_they_read_or_a_clear_refusal(toy, tmp_path):
    _, execs = toy
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": execs}}}}
    same, warnings = for_backend(platform, MIN_BACKEND)
    assert same == platform and warnings == []
    old, warnings = for_backend(platform, (2, 10))
    old_execs = old["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all("securityContext" not in e for e in old_execs.values())
    assert all("optional" not in r for e in old_execs.values() for r in e["secretAsEnv"])
    assert len(warnings) == 2 and "securityContext" in warnings[0] and "MASA_S3_ENDPOINT_URL" in warnings[1]
    with pytest.raises(ValueError, match=r"backend 2.4 cannot run this pipeline.*secretNameParameter"):
        for_backend(platform, (2, 4))
    path = compile_pipeline(load_config("toy", ["rounds=1"]), tmp_path / "old.yaml")
    assert retarget(path, (2, 10)) and "securityContext" not in path.read_text()


# ---------------------------------------------------------------- 7. ranks vs GPUs
def test_train_processes_must_match_train_gpus():
    with pytest.raises(ConfigError, match=r"train_processes: must equal resources.train_gpus \(1\)"):
        load_config("toy", ["resources.train_gpus=1"])
    assert load_config("toy").resources.train_gpus == 0  # CPU ranks over gloo, any count
    assert load_config("paper").train_processes == load_config("paper").resources.train_gpus


# ---------------------------------------------------------------- 8. multi-node
def test_trainjob_follower_pod_holds_no_gpu_but_the_gpu_deadline(tmp_path):
    spec, execs = _compile(tmp_path, "toy", ["rounds=1", "resources.train_nodes=2", "resources.train_gpus=2"])
    res = _resources(spec, "train")
    assert "accelerator" not in res and res["resourceCpuRequest"] == load_config("toy").resources.small.cpu
    train = execs[_executor(spec, "train")]
    assert int(train["activeDeadlineSeconds"]) == load_config("toy").resources.gpu_timeout_s
    assert all(m["mountPath"] != "/dev/shm" for m in train["emptyDirMounts"])


def test_serving_trainjob_train_tasks_are_small_labelled_clients(tmp_path):
    """resources.train_service: the paper run's train tasks only send requests (the serving TrainJob
    has the 8 GPUs): no GPU, no /dev/shm, the GPU steps' deadline, and the label that lets them reach
    the job's port (manifests/networkpolicy.yaml); rollout keeps its GPUs and gets the label too."""
    assert load_config("paper").resources.train_service  # the preset's design (docs/deploy.md)
    spec, execs = _compile(tmp_path, "paper", ["store=s3://b/runs"])
    trains = [t for t in spec["root"]["dag"]["tasks"] if t.startswith("train")]
    assert trains
    for t in trains:
        res = _resources(spec, t)
        assert "accelerator" not in res and res["resourceCpuRequest"] == load_config("paper").resources.small.cpu
        e = execs[_executor(spec, t)]
        assert e["podMetadata"]["labels"]["masa.io/trainer-client"] == "true"
        assert all(m["mountPath"] != "/dev/shm" for m in e["emptyDirMounts"])
    rollout = next(t for t in spec["root"]["dag"]["tasks"] if t.startswith("rollout"))
    assert _resources(spec, rollout)["accelerator"]["resourceCount"] == "8"
    # rollout and score take the model over from the job while its upload runs (masa.train.handover)
    for step in ("rollout", "score"):
        t = next(t for t in spec["root"]["dag"]["tasks"] if t.startswith(step))
        assert execs[_executor(spec, t)]["podMetadata"]["labels"]["masa.io/trainer-client"] == "true"
    net = yaml.safe_load((ROOT / "manifests" / "networkpolicy.yaml").read_text())
    rule = next(r for r in net["spec"]["ingress"] if "masa.io/trainer-client" in str(r))
    assert rule["ports"] == [{"port": load_config("paper").resources.train_service_port, "protocol": "TCP"}]
    with pytest.raises(ConfigError, match="train_service: needs an s3:// store"):
        load_config("paper", ["store=/tmp/x", "resources.train_service=true"])


def test_trainjob_names_are_unique_per_attempt_and_namespace_is_the_pods_own(tmp_path):
    parts = ("masa-0123456789abcdef-run-with-a-long-name", "masa-efficient", 49)
    a, b = job_name(*parts, attempt="a1b2c3"), job_name(*parts, attempt="d4e5f6")
    assert a != b and a.endswith("-a1b2c3") and len(a) <= 63
    ns = tmp_path / "namespace"
    ns.write_text("kubeflow-user-alice\n")
    assert current_namespace(str(ns)) == "kubeflow-user-alice"


class RecordingApi:
    """STAND-IN for CustomObjectsApi/CoreV1Api: records the TrainJob calls; `states` are the TrainJob's
    conditions returned by successive GETs (the last repeats); `on_get` runs inside a GET (e.g. send
    SIGTERM); node 0's pod has ended, its log one line."""

    def __init__(self, states, on_get=None):
        self.calls, self.states, self.on_get = [], list(states), on_get

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        self.calls.append(("create", ns, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        self.calls.append(("get", ns, name))
        if self.on_get:
            self.on_get()
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"status": {"conditions": [{"type": state, "status": "True", "message": "m"}] if state else []}}

    def delete_namespaced_custom_object(self, group, version, ns, plural, name, body=None):
        self.calls.append(("delete", ns, name))

    def list_namespaced_pod(self, ns, label_selector):
        # node 0's pod, already ended: its log is read at once (with no pod, `follow` would wait for one)
        pod = SimpleNamespace(status=SimpleNamespace(phase="Succeeded"), metadata=SimpleNamespace(name="job-1-node-0"))
        return SimpleNamespace(items=[pod])

    def read_namespaced_pod_log(self, name, ns, follow, _preload_content):
        return SimpleNamespace(stream=lambda: iter([b"round 0 step 1 loss 0.5\n"]))


def _follow(api, **kw):
    manifest = trainjob_manifest("job-1", _REQUEST, TrainJobSettings(image="i", num_nodes=2, proc_per_node=8,
                                                                namespace="team-ns"))
    lines = []
    try:
        follow(manifest, apis=(api, api), poll_s=0.01, on_line=lines.append, **kw)
    finally:
        api.lines = lines


@pytest.mark.parametrize("case", ["complete", "failed", "timeout", "sigterm"])
def test_trainjob_is_deleted_however_the_step_ends(case):
    from masa.train.launch import TrainingFailed

    states = {"complete": [None, "Complete"], "failed": ["Failed"], "timeout": [None], "sigterm": [None]}[case]
    hook = (lambda: os.kill(os.getpid(), signal.SIGTERM)) if case == "sigterm" else None
    api = RecordingApi(states, on_get=hook)
    expected = {"complete": None, "failed": TrainingFailed, "timeout": TrainingFailed, "sigterm": SystemExit}[case]
    if expected is None:
        _follow(api)
        assert api.lines == ["round 0 step 1 loss 0.5"]  # rank 0's log reaches the step's own log
    else:
        with pytest.raises(expected):
            _follow(api, timeout_s=0.05 if case == "timeout" else None)
    assert api.calls[0] == ("create", "team-ns", "job-1")
    assert api.calls[-1] == ("delete", "team-ns", "job-1")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


# ---------------------------------------------------------------- 9, 12, 13. store, examples, preflight
@pytest.mark.parametrize("preset", ["toy", "smoke", "paper"])
def test_preflight_runs_on_every_preset_and_names_each_problem(preset):
    r = _masa("preflight", "--preset", preset, env={"MASA_IMAGE_REGISTRY": ""})
    lines = r.stdout.splitlines()
    assert r.returncode == 1, r.stdout + r.stderr
    failed = {ln.split()[1].rstrip(":") for ln in lines if ln.startswith("FAIL")}
    # today's defaults: placeholder images and no store everywhere; the paper also reads hub ids the offline
    # images cannot fetch (its rounds are cut into runs of at most 40 tasks, so size passes)
    assert failed == ({"images", "store", "inputs"} if preset == "paper" else {"images", "store"})
    assert lines[-1].startswith("preflight: ")


def test_preflight_passes_a_correct_paper_config_and_names_a_local_store():
    r = _masa("preflight", "--preset", "paper", *PAPER_OK)
    assert r.returncode == 0, r.stdout
    assert "FAIL" not in r.stdout and r.stdout.splitlines()[-1].startswith("preflight: ")
    # the preset's serving TrainJob needs S3: a local store is a configuration error naming the key
    r = _masa("preflight", "--preset", "paper", *PAPER_OK, "--store", "/data/runs")
    assert r.returncode != 0 and "resources.train_service: needs an s3:// store" in r.stderr
    r = _masa("preflight", "--preset", "paper", *PAPER_OK, "--store", "/data/runs", "--kfp-version", "2.4",
              "--set", "resources.train_service=false")
    assert "FAIL store: '/data/runs' is a local path" in r.stdout
    assert "FAIL backend: KFP backend 2.4 cannot run this pipeline" in r.stdout


def test_recurring_run_example_passes_only_pipeline_parameters():
    example = yaml.safe_load((ROOT / "manifests/examples/recurring-run.yaml").read_text())
    assert set(example["params"]) <= set(UI_PARAMETERS)
    assert example["enable_caching"] is False
    assert load_config("paper").store == ""  # the user's own bucket, required by preflight/compile


def test_configure_refuses_a_non_s3_store_inside_a_pod(monkeypatch):
    from masa.components.configure import configure

    kwargs = dict(config_json=load_config("toy").to_json(), model="toy", train_data="toy", prompts_per_round=4,
                  n_solution=4, n_meta=4, learning_rate=1e-5, temperature=1.0, max_response_tokens=64, seed=0,
                  benchmark_datasets=["toy"])
    assert '"store": "/data/run"' in configure(store="/data/run", **kwargs)  # the local runner: any store
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # what Kubernetes sets in every container
    with pytest.raises(ConfigError, match=r"store: '/data/run' is not an s3:// URI"):
        configure(store="/data/run", **kwargs)
    assert '"store": "s3://b/r"' in configure(store="s3://b/r", **kwargs)


# ---------------------------------------------------------------- 6. tokenizer-only reads
def test_tokenizer_only_read_skips_the_weights(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from masa.runner.layout import local_tokenizer
    from masa.storage import open_store, put_dir_atomic

    store = open_store(str(tmp_path / "store"))
    put_dir_atomic(store, str(tiny_model_dir), "run/base/checkpoint")
    got = local_tokenizer(str(tmp_path / "store"), "run/base/checkpoint", tmp_path / "cache")
    names = {p.name for p in got.iterdir()}
    weights = {p.name for p in Path(tiny_model_dir).iterdir() if p.suffix in (".safetensors", ".bin")}
    assert weights and not weights & names and "config.json" in names
    text = "What is 2 + 2?"
    assert AutoTokenizer.from_pretrained(got)(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(tiny_model_dir)(text)["input_ids"]


def test_train_states_of_old_rounds_are_pruned_keeping_the_last_k(tmp_path):
    from masa.runner.layout import RunLayout
    from masa.runner.training import prune_train_states
    from masa.storage import open_store

    store, layout = open_store(str(tmp_path / "s")), RunLayout(str(tmp_path / "s"), "run")
    for r in range(5):
        ckpt = layout.part("masa", r, "checkpoint")
        store.put_bytes(f"{ckpt}/model.safetensors", b"w")
        store.put_bytes(f"{ckpt}/train_state/MANIFEST.json", b"{}")
        store.put_bytes(f"{ckpt}/train_state/rank0.pt", b"s")
    assert prune_train_states(store, layout, "masa", 4, keep=2) == [2, 1, 0]  # rounds 3 and 4 keep theirs
    states = {r for r in range(5) if store.list(f"{layout.part('masa', r, 'checkpoint')}/train_state/")}
    assert states == {3, 4}
    assert all(store.exists(f"{layout.part('masa', r, 'checkpoint')}/model.safetensors") for r in range(5))
    assert prune_train_states(store, layout, "masa", 4, keep=0) == []  # 0 keeps all


def test_masa_run_trains_the_paper_preset_without_kubernetes(tmp_path):
    """`masa run --preset paper` on one GPU machine: no TrainJob (no Kubernetes), the store under --out,
    no retries; what the preset says of the state (train_state: run) stays, the ranks publishing it."""
    from masa.pipeline.local import local_config

    cfg = local_config(load_config("paper"), tmp_path)
    assert not cfg.resources.train_service and cfg.resources.retries == 0
    assert cfg.store == str(tmp_path / "store") and cfg.resources.train_state == "run"
    given = local_config(load_config("paper", ["store=s3://b/runs"]), tmp_path)
    assert given.store == "s3://b/runs"
