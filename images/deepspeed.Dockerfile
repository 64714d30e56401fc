# syntax=docker/dockerfile:1
# masa-pipeline DeepSpeed image: the training step, run by the Kubeflow Trainer runtime `masa-deepspeed`
# (manifests/trainingruntime.yaml) under torchrun, one process per GPU.
#
# Build from the repository root (images/build.sh does this):
#   docker build -f images/deepspeed.Dockerfile --build-arg VERSION=0.1.0 -t REGISTRY/masa-pipeline-deepspeed:0.1.0 .
#
# Base: the official PyTorch CUDA *runtime* image at the dev pin of torch. DeepSpeed is installed with
# DS_BUILD_OPS=0: no ops are compiled ahead of time and the runtime image has no nvcc, so JIT ops
# (FusedAdam, CPUAdam, ...) are unavailable by design; the train step builds a torch AdamW optimizer and
# ZeRO-2/3 need no custom kernels. The base's torch is kept (pinned as a constraint), deepspeed and the
# rest come from pyproject.toml through images/pydeps.py.

# checkov:skip=CKV_DOCKER_7: checkov cannot resolve FROM ${PYTORCH_IMAGE}; the ARG default below is pinned to a
# version tag (tests/test_images.py asserts it), and images/build.sh may only override it explicitly.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

FROM ${PYTORCH_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY masa ./masa
COPY components ./components
COPY pipeline ./pipeline
COPY images/pydeps.py ./images/pydeps.py
RUN python images/pydeps.py pyproject.toml --exclude torch > requirements.txt \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /src/dist .

FROM ${PYTORCH_IMAGE}
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="masa-pipeline-deepspeed" \
      org.opencontainers.image.description="MASA pipeline GPU training step (DeepSpeed ZeRO under torchrun)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0 \
    HOME=/tmp/home \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TORCH_EXTENSIONS_DIR=/tmp/.cache/torch_extensions \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    MASA_METRICS_PORT=9090

COPY --from=build /src/requirements.txt /src/dist/ /tmp/install/
# --no-build-isolation: deepspeed ships an sdist whose setup.py imports the already installed torch.
RUN python -m pip list --format=freeze | grep -iE '^torch==' > /tmp/install/constraints.txt \
    && python -m pip install --no-cache-dir --no-build-isolation -c /tmp/install/constraints.txt \
        -r /tmp/install/requirements.txt \
    && python -m pip install --no-cache-dir --no-deps --ignore-requires-python /tmp/install/*.whl \
    && rm -rf /tmp/install \
    && groupadd --gid 10001 masa \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp/home --shell /usr/sbin/nologin masa

WORKDIR /app
USER 10001:10001
HEALTHCHECK NONE
CMD ["masa", "--help"]
