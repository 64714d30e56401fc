#!/usr/bin/env bash
# Build (and optionally push) the masa-pipeline images, tagged with the package version from pyproject.toml.
#
#   images/build.sh [--push] [--dry-run] [cpu|vllm|deepspeed ...]     (no names: all three)
#
# Environment:
#   MASA_IMAGE_REGISTRY  registry/namespace of the tags      (default ghcr.io/owner: set it to yours)
#   DOCKER               container CLI                        (default docker; podman works too)
#   MASA_PYTHON_IMAGE, MASA_VLLM_IMAGE, MASA_PYTORCH_IMAGE   override a base image (e.g. to pin a digest)
#   MASA_IMAGE_DIGESTS   with --push, where to record each pushed image by digest (default images/digests.json);
#                        `masa compile|submit|schedule|preflight --image-digests FILE` compiles those references,
#                        so KFP's cache key (which holds the image reference) changes when an image is rebuilt
#
# Tags look like ghcr.io/owner/masa-pipeline-cpu:0.1.0; manifests/kustomization.yaml names the same
# repositories, and tests/test_manifests.py checks that its tags equal the pyproject version.
# --dry-run prints the commands instead of running them (no container engine needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
registry="${MASA_IMAGE_REGISTRY:-ghcr.io/owner}"
registry="${registry%/}"
docker="${DOCKER:-docker}"
push=0
dry=0
names=()
for arg in "$@"; do
  case "$arg" in
    --push) push=1 ;;
    --dry-run) dry=1 ;;
    cpu|vllm|deepspeed) names+=("$arg") ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg' (images: cpu vllm deepspeed; flags: --push --dry-run)" >&2; exit 2 ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || names=(cpu vllm deepspeed)

read_project() {  # $1: python expression over the parsed pyproject dict `p`
  python3 -c "import sys, tomllib; p = tomllib.load(open(sys.argv[1], 'rb')); print($1)" "$root/pyproject.toml"
}
version="$(read_project 'p["project"]["version"]')"
torch_version="$(read_project 'next(d.split("==")[1] for d in p["project"]["dependencies"] if d.startswith("torch=="))')"

run() {
  if [[ $dry -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

digests="${MASA_IMAGE_DIGESTS:-$root/images/digests.json}"
record_digest() {  # $1 image name, $2 tag just pushed: the registry's digest (RepoDigests) into $digests
  local ref
  if [[ $dry -eq 1 ]]; then run "$docker" image inspect --format '{{index .RepoDigests 0}}' "$2"; return; fi
  ref="$("$docker" image inspect --format '{{index .RepoDigests 0}}' "$2")"
  python3 - "$digests" "$1" "$ref" <<'PY'
import json, os, sys
path, name, ref = sys.argv[1:]
data = json.load(open(path)) if os.path.exists(path) else {}
data[name] = ref
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=1, sort_keys=True)
os.replace(tmp, path)
PY
  echo "recorded $ref in $digests"
}

for name in "${names[@]}"; do
  tag="$registry/masa-pipeline-$name:$version"
  args=(--build-arg "VERSION=$version")
  case "$name" in
    cpu)
      args+=(--build-arg "TORCH_VERSION=$torch_version")
      [[ -z "${MASA_PYTHON_IMAGE:-}" ]] || args+=(--build-arg "PYTHON_IMAGE=$MASA_PYTHON_IMAGE") ;;
    vllm) [[ -z "${MASA_VLLM_IMAGE:-}" ]] || args+=(--build-arg "VLLM_IMAGE=$MASA_VLLM_IMAGE") ;;
    deepspeed) [[ -z "${MASA_PYTORCH_IMAGE:-}" ]] || args+=(--build-arg "PYTORCH_IMAGE=$MASA_PYTORCH_IMAGE") ;;
  esac
  run "$docker" build -f "$root/images/$name.Dockerfile" "${args[@]}" -t "$tag" "$root"
  if [[ $push -eq 1 ]]; then run "$docker" push "$tag"; record_digest "$name" "$tag"; fi
done
