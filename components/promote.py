from kfp.dsl import Artifact, Input, Metrics, Model, Output


def promote(config_json: str, candidate: Input[Model], candidate_eval: Input[Artifact], promotion: Output[Artifact],
            metrics: Output[Metrics]):
    """Promote the run's candidate over the registry's current model when it wins beyond the noise."""
    from masa.config import config_from_json
    from masa.steps.promote import promote_step
    from masa.telemetry.stepmetrics import log_metrics

    stats = promote_step(config_from_json(config_json), candidate_ptr=candidate.path,
                         candidate_eval=candidate_eval.path, out_path=promotion.path)
    promotion.metadata.update({"decision": stats["decision"], "version": stats["record"]["version"] or ""})
    log_metrics(metrics, {k: v for k, v in stats.items() if k != "record"}, step="promote")
