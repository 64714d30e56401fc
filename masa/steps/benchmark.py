"""The benchmark step: avg@k, pass@k and meta-awareness of one checkpoint (`masa.runner.evaluate`) on the
configured benchmarks, on the engine and sampling `masa.runner.settings` derives. With
`resources.benchmark_shards` > 1 the step runs as that many pods over slices of the problems
(`benchmark_shard_step`) and a merge (`merge_benchmark_step`) takes the figures (masa.runner.eval_shards)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.engines import make_engine
from masa.runner.eval_shards import merge_shards, sample_shard
from masa.runner.evaluate import benchmark_name, run_benchmarks
from masa.runner.layout import local_model, read_pointer, toy_source
from masa.runner.settings import benchmark_eval_settings, engine_config


def _run(cfg: RunConfig, model_ptr: str, out_path: str, work):
    """Open the checkpoint's engine and call `work(engine, sources, names, settings)`; returns (its result,
    the checkpoint's URI)."""
    ptr = read_pointer(model_ptr)
    model_dir = local_model(ptr, Path(out_path).parent)
    b = cfg.benchmark
    sources = [toy_source(cfg, model_dir) if d == "toy" else d for d in b.datasets]
    names = [d if d == "toy" else benchmark_name(d) for d in b.datasets]
    s = benchmark_eval_settings(cfg)
    # the step's GPUs as engine_parallelism splits them (tensor parallel size x replicas)
    engine = make_engine(engine_config(cfg, "benchmark", model_dir, s.max_prompt_tokens + s.max_tokens))
    try:
        result = work(engine, sources, names, s)
    finally:
        engine.close()
    return result, ptr.uri or f"{ptr.store}/{ptr.prefix}"


def _write(result: dict[str, Any], name: str, uri: str, started: float, out_path: str) -> None:
    """`result` stamped with the checkpoint and the step's wall-clock span (the report's timing), as JSON."""
    result.update(checkpoint=name, uri=uri, started_at=started, finished_at=time.time())
    Path(out_path).write_text(json.dumps(result, indent=1))


def _finish(result: dict[str, Any], name: str, uri: str, started: float, out_path: str) -> dict[str, Any]:
    _write(result, name, uri, started, out_path)
    first = next(iter(result["benchmarks"].values()))
    return {"accuracy": first["accuracy"], "wall_s": result["wall_s"], "results": result,
            **{f"{n}.accuracy": r["accuracy"] for n, r in result["benchmarks"].items()}}


def benchmark_step(cfg: RunConfig, *, name: str, model_ptr: str, out_path: str) -> dict[str, Any]:
    """Pipeline step: benchmark the checkpoint behind `model_ptr`; write results JSON to `out_path`."""
    started = time.time()  # wall-clock stamps: the report's timing per step kind
    result, uri = _run(cfg, model_ptr, out_path,
                       lambda engine, sources, names, s: run_benchmarks("", sources, s, engine=engine, names=names))
    return _finish(result, name, uri, started, out_path)


def benchmark_shard_step(cfg: RunConfig, *, name: str, model_ptr: str, out_path: str, shard: int) -> dict[str, Any]:
    """Pipeline step: shard `shard` of `resources.benchmark_shards`: sample and judge its slice of each
    benchmark's problems; write the per-problem outcomes (JSON) to `out_path` for the merge."""
    started = time.time()
    n = cfg.resources.benchmark_shards
    part, uri = _run(cfg, model_ptr, out_path,
                     lambda engine, sources, names, s: sample_shard(engine, sources, names, s, shard=shard, shards=n))
    _write(part, name, uri, started, out_path)
    return {"problems": sum(len(b["outcomes"]) for b in part["benchmarks"].values()), "wall_s": part["wall_s"],
            "shard": shard}


def merge_benchmark_step(cfg: RunConfig, *, name: str, shard_paths: list[str], out_path: str) -> dict[str, Any]:
    """Pipeline step: one checkpoint's benchmark results (as `benchmark_step` writes them) from its shards."""
    parts = [json.loads(Path(p).read_text()) for p in shard_paths]
    result = merge_shards(parts, benchmark_eval_settings(cfg))
    started = min(p["started_at"] for p in parts)
    return _finish(result, name, parts[0]["uri"], started, out_path)
