from kfp.dsl import Artifact, Input, Metrics, Output


def merge_benchmarks(config_json: str, name: str, shards: Input[list[Artifact]], results: Output[Artifact],
                     metrics: Output[Metrics]):
    """One checkpoint's benchmark figures from the shards that `resources.benchmark_shards` pods sampled."""
    from masa.config import config_from_json
    from masa.steps.benchmark import merge_benchmark_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("benchmark", run=cfg.name, grouping_key={"checkpoint": name}) as tel:
        stats = merge_benchmark_step(cfg, name=name, shard_paths=[s.path for s in shards], out_path=results.path)
        tel.observe_benchmark(name, stats.pop("results"))
    log_metrics(metrics, stats, step="benchmark", of=name)
