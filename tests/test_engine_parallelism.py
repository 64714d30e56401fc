"""Every GPU a rollout or benchmark step requests is used: `masa.config.engine_parallelism` splits the
step's GPUs into engines, and what reaches `vllm.LLM` is checked through the function VLLMEngine
calls it with (`llm_kwargs`), against vLLM's own EngineArgs fields. No GPU here: the replicated engine
runs on the real vLLM CPU engine, two replicas against one."""

import dataclasses
import json
import multiprocessing

import pytest

from masa.config import ConfigError, engine_parallelism, load_config
from masa.engines import EngineConfig, GenerationRequest, SamplingSpec, make_engine
from masa.engines.replicated import chunks, gpu_slices
from masa.engines.vllm_engine import llm_kwargs
from masa.runner.settings import engine_config


def fake_checkpoint(tmp_path, positions: int = 32768):
    """Only what llm_kwargs reads: config.json (Qwen3-*-Base have 32768 positions)."""
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
    return tmp_path


@pytest.mark.parametrize(("preset", "overrides", "tp", "replicas"), [
    ("paper", [], 1, 8),  # as shipped: an 8B model fits one H100/H200, so 8 replicas
    ("paper", ["rollout.tensor_parallel_size=0"], 8, 1),  # one engine over the 8 GPUs
    ("paper", ["rollout.tensor_parallel_size=2"], 2, 4),
    ("paper-1.7b", [], 1, 4),  # Qwen3-1.7B-Base on its preset's 4 GPUs: 4 replicas beat TP 4
    ("paper-1.7b", ["rollout.tensor_parallel_size=4"], 4, 1),
])
@pytest.mark.parametrize("step", ["rollout", "benchmark"])
def test_what_reaches_vllm_llm_uses_every_gpu_of_the_step(preset, overrides, tp, replicas, step, tmp_path):
    import vllm

    cfg = load_config(preset, overrides)
    gpus = getattr(cfg.resources, f"{step}_gpus")
    par = engine_parallelism(cfg, step)
    assert (par.tensor_parallel_size, par.replicas) == (tp, replicas)
    assert par.tensor_parallel_size * par.replicas == gpus == (4 if preset == "paper-1.7b" else 8)
    econf = engine_config(cfg, step, fake_checkpoint(tmp_path), 1024 + 16384)
    assert (econf.tensor_parallel_size, econf.replicas) == (tp, replicas)
    kwargs = llm_kwargs(econf, tmp_path)  # per replica, exactly what VLLMEngine passes to vllm.LLM
    assert kwargs["tensor_parallel_size"] == tp
    assert kwargs["dtype"] == "bfloat16" and kwargs["gpu_memory_utilization"] == 0.85
    assert kwargs["max_model_len"] == 17408 and kwargs["logprobs_mode"] == "raw_logprobs"
    assert kwargs["load_format"] == "fastsafetensors"  # whole files to the GPU (the vLLM image ships it)
    assert set(kwargs) <= {f.name for f in dataclasses.fields(vllm.EngineArgs)}  # all are vLLM's arguments
    # each replica sees its own devices, all of the pod's together, none twice
    slices = gpu_slices(econf.replicas, econf.tensor_parallel_size)
    devices = [d for s in slices for d in s.split(",")]
    assert len(slices) == replicas and sorted(devices, key=int) == [str(i) for i in range(gpus)]


def test_gpus_a_config_cannot_use_are_an_error_naming_the_keys():
    with pytest.raises(ConfigError) as e:
        load_config("paper", ["rollout.tensor_parallel_size=3"])
    assert "rollout.tensor_parallel_size: 3 does not divide resources.rollout_gpus=8: 2 GPUs would stay idle" in str(e.value)
    assert "resources.benchmark_gpus=8" in str(e.value)
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel_size: 16 GPUs per engine, but resources.rollout_gpus"):
        load_config("paper", ["rollout.tensor_parallel_size=16"])


def test_gpu_slices_follow_the_pods_visible_devices_and_chunks_cover_every_request():
    assert gpu_slices(2, 2, "4,5,6,7") == ["4,5", "6,7"]
    with pytest.raises(ValueError, match="need 8 devices"):
        gpu_slices(4, 2, "0,1")
    # 7 requests over 3 replicas: 3 + 2 + 2, contiguous, in order
    assert [list(c) for c in chunks(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(c) for c in chunks(1, 2)] == [[0], []]


@pytest.mark.slow
def test_two_vllm_replicas_give_the_samples_of_one_engine(tiny_model_dir):
    one = make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256))
    try:
        tok = one.tokenizer
        reqs = [GenerationRequest(tuple(tok.encode(q)), SamplingSpec(n=2, max_tokens=16, seed=11 + i))
                for i, q in enumerate(["2 + 3 =", "7 * 6 =", "10 - 4 =", "9 / 3 ="])]
        want = one.generate(reqs)
    finally:
        one.close()
    # the replicas start before their checkpoint is there (a rollout step's fetch or hand-over): they
    # import vLLM while `fetch` runs, then start on the directory it returns
    seen = []

    def fetch():
        seen.append(len(multiprocessing.active_children()))
        return tiny_model_dir

    two = make_engine(EngineConfig(model="the policy", backend="vllm", max_model_len=256, replicas=2), fetch=fetch)
    try:
        assert seen == [2] and two.model_dir == tiny_model_dir  # both replicas were up before the fetch
        assert two.backend == "vllmx2" and len(two.replica_startup_s) == 2
        assert two.tokenizer.encode("2 + 3 =") == tok.encode("2 + 3 =")
        got = two.generate(reqs)
    finally:
        two.close()
    assert [[s.response_token_ids for s in g] for g in got] == [[s.response_token_ids for s in g] for g in want]
    flat = [lp for g in got for s in g for lp in s.logprobs]
    assert flat == pytest.approx([lp for g in want for s in g for lp in s.logprobs], abs=1e-5)


def test_a_failed_fetch_stops_the_started_replicas_and_raises():
    """The replicas started before the checkpoint came; if it never comes, they are stopped (none is
    left running) and the fetch's own error reaches the step."""
    def fetch():
        raise FileNotFoundError("no checkpoint at s3://bucket/run/policy")

    with pytest.raises(FileNotFoundError, match="no checkpoint at s3://bucket/run/policy"):
        make_engine(EngineConfig(model="the policy", backend="vllm", max_model_len=256, replicas=2), fetch=fetch)
    assert multiprocessing.active_children() == []


def test_a_machine_without_gpus_runs_rollout_cpu_engines(tmp_path, monkeypatch):
    """Where the step finds no GPU (this machine), `rollout.cpu_engines` replaces the GPU-derived count:
    the toy preset's two engines for its 2-core machines; the paper preset keeps one (and what its
    GPU pods receive is unchanged, above)."""
    from masa.engines import for_this_host
    from masa.engines.replicated import cpu_threads

    toy = engine_config(load_config("toy"), "rollout", fake_checkpoint(tmp_path), 512)
    assert (toy.replicas, toy.cpu_replicas) == (1, 2) and for_this_host(toy).replicas == 2
    paper = engine_config(load_config("paper", ["rollout.tensor_parallel_size=1"]), "rollout",
                          fake_checkpoint(tmp_path), 1024)
    assert (paper.replicas, for_this_host(paper).replicas) == (8, 1)
    # fastsafetensors builds its tensors on a CUDA device: without one, the default loader
    assert (paper.load_format, for_this_host(paper).load_format, toy.load_format) == ("fastsafetensors", "auto", "auto")
    with pytest.raises(ConfigError, match="rollout.load_format"):
        load_config("paper", ["rollout.load_format=npcache"])
    plain = EngineConfig(model="m", replicas=2)  # no cpu_replicas: the same count everywhere
    assert for_this_host(plain) == plain
    with pytest.raises(ConfigError, match="rollout.cpu_engines: must be >= 1"):
        load_config("toy", ["rollout.cpu_engines=0"])
    # each CPU replica gets its share of the cores as OpenMP threads (two replicas each running a
    # thread per core spin against each other), unless the user set OMP_NUM_THREADS
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert (cpu_threads(2), cpu_threads(4), cpu_threads(8)) == ("2", "1", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(2) is None


@pytest.mark.slow
def test_replicas_may_start_vllms_own_engine_core_process(tiny_model_dir, monkeypatch, tmp_path):
    """vLLM's V1 default (and on GPU the only mode we run) starts its EngineCore, and tensor-parallel
    workers, as child processes, which a daemonic replica may not have ("daemonic processes are not
    allowed to have children", vllm-project/vllm#18308: every GPU pod with replicas failed at start).
    With multiprocessing on, two replicas reload their weights, answer with the tokens of an in-process
    engine, report a failed load, and end."""
    cfg = EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=256)
    reqs = lambda tok: [GenerationRequest(tuple(tok.encode(q)), SamplingSpec(n=2, max_tokens=8, seed=5 + i))  # noqa: E731
                        for i, q in enumerate(["2 + 3 =", "7 * 6 =", "10 - 4 ="])]
    one = make_engine(cfg)
    try:
        want = one.generate(reqs(one.tokenizer))
    finally:
        one.close()
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the replicas inherit it
    two = make_engine(dataclasses.replace(cfg, replicas=2))
    try:
        # the weight reload of a multiprocess engine (the GPU path): a path, not a tensor iterator,
        # crosses into the EngineCore, and the tied-head repack runs there as a worker-extension method
        two.load_weights(str(tiny_model_dir))
        got = two.generate(reqs(two.tokenizer))
        procs = list(two._procs)
        assert not any(p.daemon for p in procs)
        # a load that fails inside the replicas is raised here, and the replicas end (a replica whose
        # engine failed used to stay up, waiting on its EngineCore child, and close() on its answer)
        empty = tmp_path / "bad-weights"
        empty.mkdir()
        (empty / "config.json").write_text((tiny_model_dir / "config.json").read_text())
        (empty / "model.safetensors").write_bytes(b"not a safetensors file")  # found here, unreadable there
        with pytest.raises(RuntimeError, match="engine replica failed"):
            two.load_weights(str(empty))
    finally:
        two.close()
    assert [[s.response_token_ids for s in g] for g in got] == [[s.response_token_ids for s in g] for g in want]
    assert not any(p.is_alive() for p in procs)
