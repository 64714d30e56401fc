# syntax=docker/dockerfile:1
# masa-pipeline CPU image: data filter, scoring and report steps (no GPU, no vLLM, no DeepSpeed).
#
# Build from the repository root (images/build.sh does this):
#   docker build -f images/cpu.Dockerfile --build-arg VERSION=0.1.0 -t REGISTRY/masa-pipeline-cpu:0.1.0 .
#
# torch comes from the PyTorch CPU index (the PyPI wheel would pull ~3 GB of CUDA libraries); every other
# requirement comes from pyproject.toml through images/pydeps.py, so versions have one source of truth.
# Runs as UID 10001 on a read-only root filesystem: every cache and HOME point under /tmp, which the pod
# mounts as an emptyDir.

# checkov:skip=CKV_DOCKER_7: checkov cannot resolve FROM ${PYTHON_IMAGE}; the ARG default below is pinned to a
# version tag (tests/test_images.py asserts it), and images/build.sh may only override it explicitly.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY masa ./masa
COPY components ./components
COPY pipeline ./pipeline
COPY images/pydeps.py ./images/pydeps.py
RUN python images/pydeps.py pyproject.toml --exclude torch deepspeed > requirements.txt \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /src/dist .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.0.0
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
LABEL org.opencontainers.image.title="masa-pipeline-cpu" \
      org.opencontainers.image.description="MASA pipeline CPU steps: data filter, scoring, report" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp/home \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    MASA_METRICS_PORT=9090

RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=build /src/requirements.txt /src/dist/ /tmp/install/
# The wheel goes in with --no-deps: its metadata also names deepspeed, which this image deliberately
# leaves out (no engine extra is installed either).
RUN pip install --no-cache-dir -r /tmp/install/requirements.txt \
    && pip install --no-cache-dir --no-deps /tmp/install/*.whl \
    && rm -rf /tmp/install \
    && groupadd --gid 10001 masa \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp/home --shell /usr/sbin/nologin masa

WORKDIR /app
USER 10001:10001
# Batch steps, not a service: liveness is the process itself, KFP/Kubernetes watch the exit code.
HEALTHCHECK NONE
CMD ["masa", "--help"]
