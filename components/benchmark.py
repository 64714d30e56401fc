from kfp.dsl import Artifact, Input, Metrics, Model, Output


def benchmark(config_json: str, name: str, model: Input[Model], results: Output[Artifact],
              metrics: Output[Metrics]):
    """avg@k, pass@k and meta-awareness of one checkpoint on the configured benchmarks."""
    from masa.config import config_from_json
    from masa.steps.benchmark import benchmark_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("benchmark", run=cfg.name, grouping_key={"checkpoint": name}) as tel:
        stats = benchmark_step(cfg, name=name, model_ptr=model.path, out_path=results.path)
        tel.observe_benchmark(name, stats.pop("results"))
    log_metrics(metrics, stats, step="benchmark", of=name)
