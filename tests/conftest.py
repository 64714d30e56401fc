# ---- engines (masa/engines): vLLM CPU env + tiny random Qwen2 model; owner: engines ----
import os

# Not VLLM_ENABLE_V1_MULTIPROCESSING: the tests run vLLM as a user's `masa run` does, with the engine's
# own choice (in-process on CPU, masa.engines.vllm_engine.in_process_on_cpu); a setting here hid that
# replicas could not start vLLM's default multiprocess engine (docs/engines.md).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 model + byte-level BPE tokenizer with a chat template (see tests/tiny_model.py)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))
# ---- end engines ----


# ---- storage (masa/storage): real S3 server on loopback; owner: storage ----
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server for the whole session (tests/s3server.py: .env(), .make_bucket(), .client())."""
    from s3server import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path, monkeypatch):
    """A fresh store URI, once a local directory and once a prefix on the SeaweedFS server (with its
    credentials in the environment): a test taking it runs on both stores."""
    import uuid

    if request.param == "local":
        return str(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    server.make_bucket("stores")
    return f"s3://stores/run-{uuid.uuid4().hex[:8]}"
# ---- end storage ----


# ---- train (masa/train): one synthetic round on the tiny model; owner: train ----
@pytest.fixture(scope="module")
def train_data(tiny_model_dir, tmp_path_factory):
    """Scored and experts shards of 3 synthetic prompts for the tiny model: {root, model, scored, experts}."""
    import json
    from pathlib import Path

    from masa.train.synthetic import write_synthetic_shards

    root = tmp_path_factory.mktemp("train")
    vocab = json.loads((Path(tiny_model_dir) / "config.json").read_text())["vocab_size"]
    scored, experts = write_synthetic_shards(root / "data", vocab_size=vocab, n_prompts=3, seed=1)
    return {"root": root, "model": str(tiny_model_dir), "scored": str(scored), "experts": str(experts)}
# ---- end train ----


# ---- scheduling: the slowest test files start first; owner: tests ----
# `make test` runs two xdist workers with --dist loadfile, a file per worker at a time. xdist's default
# order (most tests first) started the few-but-long files last, and one worker ran them alone for minutes
# while the other had nothing left. Starting the longest first (LPT) leaves the short files to fill in at
# the end. Seconds of one worker per file, summed from `make test PYTEST_ARGS=--durations=0` (2-core AMD
# EPYC, 2026-12-07, the suite as it is now); a file not listed runs after these, in collection order.
SLOW_FILES = {
    "test_pipeline_local.py": 376, "test_s3_faults_run.py": 254, "test_s3_run.py": 181, "test_benchmark.py": 180,
    "test_engine_service.py": 152, "test_train_dist.py": 138, "test_train_service.py": 134,
    "test_engine_parallelism.py": 100, "test_toy_build.py": 74, "test_expert_phase.py": 71, "test_rollout.py": 58,
    "test_train_served.py": 48, "test_cluster.py": 48, "test_run_terminal.py": 31,
}


def pytest_collection_modifyitems(config, items):
    # sorted() is stable: tests keep their order within a file, and unlisted files theirs
    items[:] = sorted(items, key=lambda item: -SLOW_FILES.get(item.path.name, 0))
# ---- end scheduling ----
