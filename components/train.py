from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train(config_json: str, branch: str, round_idx: int, policy: Input[Model], scored: Input[Dataset],
          new_policy: Output[Model], metrics: Output[Metrics]):
    """One round of policy updates on DeepSpeed; writes the next consolidated checkpoint."""
    from masa.config import config_from_json
    from masa.steps.train import train_step
    from masa.telemetry import step_telemetry
    from masa.telemetry.stepmetrics import log_metrics

    cfg = config_from_json(config_json)
    with step_telemetry("train", run=cfg.name, branch=branch, round_idx=round_idx) as tel:
        stats = train_step(cfg, branch=branch, round_idx=round_idx, policy_ptr=policy.path,
                           scored_ptr=scored.path, out_ptr=new_policy.path, on_step=tel.train_hook(round_idx))
        tel.observe_reuse("train", round_idx, stats["reused"])
    new_policy.metadata.update({"name": branch, "round": round_idx, "reused": stats["reused"]})
    log_metrics(metrics, stats, step="train", branch=branch, round_idx=round_idx)
