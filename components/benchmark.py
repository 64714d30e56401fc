from kfp.dsl import Artifact, Input, Metrics, Model, Output


def benchmark(config_json: str, name: str, model: Input[Model], results: Output[Artifact],
              metrics: Output[Metrics]):
    """avg@k, pass@k and meta-awareness of one checkpoint on the configured benchmarks."""
    from masa.config import config_from_json
    from masa.steps.evaluate import benchmark_step
    from masa.steps.progress import log_metrics

    stats = benchmark_step(config_from_json(config_json), name=name, model_ptr=model.path,
                           out_path=results.path)
    log_metrics(metrics, stats, step="benchmark")
