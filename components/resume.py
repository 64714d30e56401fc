from kfp.dsl import Artifact, Metrics, Model, Output


def resume(config_json: str, branch: str, round_idx: int, policy: Output[Model], history: Output[Artifact],
           metrics: Output[Metrics]):
    """Start a segment of rounds: the policy and score history that round `round_idx - 1` left in the store."""
    from masa.config import config_from_json
    from masa.steps.resume import resume_step
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    stats = resume_step(cfg, branch=branch, round_idx=round_idx, policy_ptr=policy.path, history_out=history.path)
    policy.metadata.update({"name": branch, "round": round_idx - 1})
    log_metrics(metrics, stats, step="resume", branch=branch, round_idx=round_idx - 1)
