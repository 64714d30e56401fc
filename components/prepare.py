from kfp.dsl import Metrics, Model, Output


def prepare(config_json: str, base_model: Output[Model], metrics: Output[Metrics]):
    """Build the embedded toy or resolve the configured model; publish it to the artifact store."""
    from masa.config import config_from_json
    from masa.steps.prepare import prepare_base
    from masa.telemetry.stepmetrics import log_metrics

    stats = prepare_base(config_from_json(config_json), model_out=base_model.path)
    base_model.metadata.update({"name": "base", "reused": stats["reused"]})
    log_metrics(metrics, stats, step="prepare")
