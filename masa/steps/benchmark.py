"""The benchmark step: avg@k, pass@k and meta-awareness of one checkpoint (`masa.runner.evaluate`) on the
configured benchmarks, on the engine and sampling `masa.runner.settings` derives."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.engines import make_engine
from masa.runner.evaluate import benchmark_name, run_benchmarks
from masa.runner.layout import local_model, read_pointer, toy_source
from masa.runner.settings import benchmark_eval_settings, engine_config


def benchmark_step(cfg: RunConfig, *, name: str, model_ptr: str, out_path: str) -> dict[str, Any]:
    """Pipeline step: benchmark the checkpoint behind `model_ptr`; write results JSON to `out_path`."""
    started = time.time()  # wall-clock stamps: the report's timing per step kind
    ptr = read_pointer(model_ptr)
    model_dir = local_model(ptr, Path(out_path).parent)
    b = cfg.benchmark
    sources = [toy_source(cfg, model_dir) if d == "toy" else d for d in b.datasets]
    names = [d if d == "toy" else benchmark_name(d) for d in b.datasets]
    s = benchmark_eval_settings(cfg)
    # the step's GPUs as engine_parallelism splits them (tensor parallel size x replicas)
    engine = make_engine(engine_config(cfg, "benchmark", model_dir, s.max_prompt_tokens + s.max_tokens))
    try:
        result = run_benchmarks(str(model_dir), sources, s, engine=engine, names=names)
    finally:
        engine.close()
    result.update(checkpoint=name, uri=ptr.uri or f"{ptr.store}/{ptr.prefix}", started_at=started,
                  finished_at=time.time())
    Path(out_path).write_text(json.dumps(result, indent=1))
    first = next(iter(result["benchmarks"].values()))
    return {"accuracy": first["accuracy"], "wall_s": result["wall_s"], "results": result,
            **{f"{n}.accuracy": r["accuracy"] for n, r in result["benchmarks"].items()}}
