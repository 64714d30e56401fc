from kfp.dsl import Dataset, Input, Metrics, Output


def merge_rollouts(config_json: str, branch: str, round_idx: int, shards: Input[list[Dataset]],
                   rollouts: Output[Dataset], metrics: Output[Metrics]):
    """One round's rollouts from the shards that `resources.rollout_shards` pods generated."""
    from masa.config import config_from_json
    from masa.steps.rollout import merge_rollouts_step
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    stats = merge_rollouts_step(cfg, branch=branch, round_idx=round_idx, shard_ptrs=[s.path for s in shards],
                                out_ptr=rollouts.path)
    rollouts.metadata.update({"samples": stats.get("samples", 0), "shards": stats["shards"]})
    log_metrics(metrics, stats, step="merge", branch=branch, round_idx=round_idx)
