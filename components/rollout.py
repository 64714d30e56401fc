from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def rollout(config_json: str, branch: str, round_idx: int, prompts: Input[Dataset], heldout: Input[Dataset],
            policy: Input[Model],
            rollouts: Output[Dataset], metrics: Output[Metrics], history: Input[Artifact] = None, shard: int = 0):
    """Sample the round's solution (and meta) rollouts on vLLM; gating and cutoff for masa-efficient."""
    from masa.config import config_from_json
    from masa.steps.rollout import rollout_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("rollout", run=cfg.name, branch=branch, round_idx=round_idx) as tel:
        stats = rollout_step(cfg, branch=branch, round_idx=round_idx, prompts_path=prompts.path,
                             policy_ptr=policy.path, history_path=history.path if history else None,
                             out_ptr=rollouts.path, heldout_path=heldout.path, shard=shard)
        tel.observe_rollout(round_idx, stats)
    rollouts.metadata.update({"samples": stats.get("samples", 0), "reused": stats["reused"]})
    log_metrics(metrics, stats, step="rollout", branch=branch, round_idx=round_idx)
