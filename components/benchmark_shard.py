from kfp.dsl import Artifact, Input, Metrics, Model, Output


def benchmark_shard(config_json: str, name: str, model: Input[Model], shard: int, outcomes: Output[Artifact],
                    metrics: Output[Metrics]):
    """One slice of a checkpoint's benchmark problems (`resources.benchmark_shards` > 1): sampled and judged."""
    from masa.config import config_from_json
    from masa.steps.benchmark import benchmark_shard_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("benchmark", run=cfg.name, grouping_key={"checkpoint": name, "shard": str(shard)}):
        stats = benchmark_shard_step(cfg, name=name, model_ptr=model.path, out_path=outcomes.path, shard=shard)
    log_metrics(metrics, stats, step="benchmark_shard", of=name)
