"""masa.engines.service: one vLLM engine that outlives the steps using it (`masa run`'s warm mode).

What a step must not be able to tell: the samples of a step served by the run's service, after its
weights were loaded in place, are those of an engine started fresh on that step's model (same token
ids and log-probs), and a service that died is replaced, not reported as the step's failure.
"""

import os
import shutil
import signal
import time

import pytest
from test_engines import _perturbed_copy, _prompt_ids
from tiny_model import build_tiny_model

from masa.engines import EngineConfig, GenerationRequest, SamplingSpec, make_engine
from masa.engines.backends import start_backend
from masa.engines.service import SERVICES_ENV, RemoteEngine, stop_all

pytestmark = pytest.mark.slow


def _samples(engine, prompts):
    reqs = [GenerationRequest(_prompt_ids(engine.tokenizer, q), SamplingSpec(n=2, max_tokens=24, seed=5 + i))
            for i, q in enumerate(prompts)]
    return [[(s.response_token_ids, s.logprobs, s.finish_reason) for s in g] for g in engine.generate(reqs)]


def _fresh(model_dir, prompts):
    """An engine of the step's own, as a cold task or a pod starts it."""
    engine = start_backend(EngineConfig(model=str(model_dir), backend="vllm", max_model_len=256))
    try:
        return _samples(engine, prompts)
    finally:
        engine.close()


def _pid(folder) -> int:
    (pid_file,) = folder.glob("*.pid")
    return int(pid_file.read_text())


@pytest.fixture
def services(tmp_path, monkeypatch):
    folder = tmp_path / "eng"
    folder.mkdir()
    monkeypatch.setenv(SERVICES_ENV, f"{folder}:{os.getpid()}")
    yield folder
    stop_all(folder)


def test_steps_served_by_one_service_sample_as_fresh_engines(tiny_model_dir, tmp_path, services):
    prompts = ["What is 2 + 3?", "Solve 3x = 9."]
    other = _perturbed_copy(tiny_model_dir, tmp_path / "round1")
    expected = [_fresh(tiny_model_dir, prompts), _fresh(other, prompts), _fresh(tiny_model_dir, prompts)]

    got = []
    for model in (tiny_model_dir, other, tiny_model_dir):  # three "steps": base, next round, base again
        engine = make_engine(EngineConfig(model=str(model), backend="vllm", max_model_len=256))
        assert isinstance(engine, RemoteEngine)
        got.append(_samples(engine, prompts))
        engine.close()
    assert got == expected  # token ids, log-probs and finish reasons, exactly
    assert len(list(services.glob("*.sock"))) == 1  # one service served all three

    # another configuration (here the context) is another engine: a second service
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=128))
    engine.close()
    assert len(list(services.glob("*.sock"))) == 2


def test_a_service_that_died_is_replaced(tiny_model_dir, services):
    config = EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256)
    make_engine(config).close()
    first = _pid(services)
    os.kill(first, signal.SIGKILL)
    while _alive(first):
        time.sleep(0.05)
    engine = make_engine(config)  # the stale socket is refused: a fresh service starts
    try:
        assert isinstance(engine, RemoteEngine), sorted(p.name for p in services.iterdir())
        assert _samples(engine, ["What is 7 - 4?"]) == _fresh(tiny_model_dir, ["What is 7 - 4?"])
    finally:
        engine.close()
    assert _pid(services) != first


def test_a_step_that_finds_the_service_busy_starts_its_own_engine(tiny_model_dir, services):
    config = EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256)
    first = make_engine(config)
    try:
        second = make_engine(config)  # e.g. two branches' steps side by side: no waiting on each other
        try:
            assert isinstance(first, RemoteEngine) and not isinstance(second, RemoteEngine)
            assert _samples(second, ["What is 7 - 4?"]) == _samples(first, ["What is 7 - 4?"])
        finally:
            second.close()
    finally:
        first.close()
    third = make_engine(config)  # free again: the service takes the next step
    try:
        assert isinstance(third, RemoteEngine)
    finally:
        third.close()


def test_without_the_variable_every_step_starts_its_own_engine(tiny_model_dir, monkeypatch):
    monkeypatch.delenv(SERVICES_ENV, raising=False)  # cold tasks and cluster pods
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256))
    try:
        assert not isinstance(engine, RemoteEngine)
    finally:
        engine.close()


def test_the_service_exits_with_its_owner(tiny_model_dir, tmp_path, monkeypatch):
    folder = tmp_path / "eng"
    folder.mkdir()
    r, w = os.pipe()
    owner = os.fork()
    if owner == 0:  # a stand-in `masa run`: lives until the test closes the pipe
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    monkeypatch.setenv(SERVICES_ENV, f"{folder}:{owner}")
    make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256)).close()
    pid = _pid(folder)
    os.close(w)
    os.waitpid(owner, 0)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)
    shutil.rmtree(folder)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def test_vllm_reload_of_a_tied_embedding_model_gives_a_fresh_engines_samples(tmp_path):
    # Here, not in test_engines.py: closing an in-process engine tears down vLLM's process groups,
    # which that module's shared engine needs. Regression: with tie_word_embeddings (Qwen3-0.6B/1.7B,
    # the toy) vLLM's CPU reload rewrote the embedding but not the LM head's packed GEMM copy of it,
    # so logits came from the old head
    # (masa.engines.vllm_worker.MasaWorkerExtension.masa_repack_tied_head). The reloaded engine must sample exactly as one
    # started on the new weights: same tokens, same log-probs.
    base = build_tiny_model(tmp_path / "base", tied=True)
    new = _perturbed_copy(base, tmp_path / "new")
    cfg = dict(backend="vllm", max_model_len=256)
    fresh = start_backend(EngineConfig(model=str(new), **cfg))
    req = [GenerationRequest(_prompt_ids(fresh.tokenizer, "What is 2 + 3?"), SamplingSpec(n=4, max_tokens=24, seed=7))]
    want = fresh.generate(req)[0]
    fresh.close()
    engine = start_backend(EngineConfig(model=str(base), **cfg))
    try:
        engine.load_weights(new)
        got = engine.generate(req)[0]
    finally:
        engine.close()
    assert [(s.response_token_ids, s.logprobs) for s in got] == [(s.response_token_ids, s.logprobs) for s in want]


def test_a_service_holds_cpu_replicas_and_samples_as_one_engine(tiny_model_dir, tmp_path, services):
    """The toy preset's two CPU engines (`rollout.cpu_engines`) live in the run's service too: a step
    loads its policy into both, and gets the samples of one fresh engine (token ids exactly, log-probs
    to float32 rounding: the replicas batch other requests together)."""
    prompts = ["What is 2 + 3?", "Solve 3x = 9.", "7 * 6 =", "10 - 4 ="]
    other = _perturbed_copy(tiny_model_dir, tmp_path / "round1")
    want = _fresh(other, prompts)
    for model in (tiny_model_dir, other):  # the second step loads new weights into both replicas
        engine = make_engine(EngineConfig(model=str(model), backend="vllm", max_model_len=256, cpu_replicas=2))
        assert isinstance(engine, RemoteEngine)
        got = _samples(engine, prompts)
        engine.close()
    assert len(list(services.glob("*.sock"))) == 1
    assert [[s[0] for s in g] for g in got] == [[s[0] for s in g] for g in want]
    assert [lp for g in got for s in g for lp in s[1]] == \
        pytest.approx([lp for g in want for s in g for lp in s[1]], abs=1e-5)


def test_the_trainers_use_cache_flag_does_not_split_the_service(tmp_path):
    """The trainer writes `use_cache: false` into every checkpoint's config.json; vLLM does not read it,
    so the base model and the trained ones share one service. Any other change to the config is a
    service of its own."""
    import json

    from masa.engines.service import service_key

    def model(name, **extra):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"hidden_size": 64, "model_type": "qwen2", **extra}))
        return d

    config = EngineConfig(model="m", backend="vllm")
    base, trained = model("base"), model("trained", use_cache=False)
    wider = model("wider", hidden_size=128)
    assert service_key(config, base) == service_key(config, trained) != service_key(config, wider)
