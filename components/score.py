from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def score(config_json: str, branch: str, round_idx: int, rollouts: Input[Dataset], policy: Input[Model],
          scored: Output[Dataset], history_out: Output[Artifact], metrics: Output[Metrics],
          history: Input[Artifact] = None):
    """Verify solutions, score meta predictions, compute advantages and pick expert trajectories."""
    from masa.config import config_from_json
    from masa.steps.score import score_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("score", run=cfg.name, branch=branch, round_idx=round_idx) as tel:
        stats = score_step(cfg, branch=branch, round_idx=round_idx, rollouts_ptr=rollouts.path,
                           policy_ptr=policy.path, history_path=history.path if history else None,
                           out_ptr=scored.path, history_out=history_out.path)
        tel.observe_scoring(round_idx, stats)
    scored.metadata.update({"train_accuracy": stats.get("train_accuracy"), "reused": stats["reused"]})
    log_metrics(metrics, stats, step="score", branch=branch, round_idx=round_idx)
