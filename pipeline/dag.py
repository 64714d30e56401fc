"""The DAG: configure → prepare → data filter → N rounds × (rollout → score → train) per branch →
benchmark of the base and final checkpoints → report.

Rounds and branches (GRPO baseline beside MASA when `compare`) are unrolled when the pipeline is
built from a `RunConfig`; the other settings are pipeline parameters, editable in the Kubeflow UI.
(No `from __future__ import annotations` here: KFP reads the pipeline signature's real types.)
"""


from masa.config import RunConfig, ui_defaults

ROUND_STEPS = ("rollout", "score", "train")


def _resources(task, cfg: RunConfig, step: str) -> None:
    """Requests, accelerators, retries with back-off, caching, and S3 credentials from a Secret."""
    r = cfg.resources
    gpus = {"rollout": r.rollout_gpus, "train": r.train_gpus, "benchmark": r.benchmark_gpus}.get(step, 0)
    task.set_cpu_request(r.cpu_request).set_memory_request(r.memory_request)
    if gpus:
        task.set_accelerator_type(r.accelerator_type).set_accelerator_limit(gpus)
    task.set_retry(num_retries=r.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(True)
    task.set_env_variable("MASA_METRICS_PORT", str(r.metrics_port))
    from kfp import kubernetes

    # non-root image user (images/*.Dockerfile), a writable /tmp for caches on a read-only root,
    # and the label the PodMonitor selects (manifests/podmonitor.yaml)
    kubernetes.set_security_context(task, run_as_user=10001, run_as_group=10001, run_as_non_root=True)
    kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp")
    kubernetes.add_pod_label(task, "masa.io/metrics", "true")
    if cfg.store.startswith("s3://") and r.s3_secret:
        # credentials by reference to a Secret: no value ever enters the compiled spec
        kubernetes.use_secret_as_env(task, secret_name=r.s3_secret, secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "MASA_S3_ENDPOINT_URL": "MASA_S3_ENDPOINT_URL",
        })


def build_pipeline(cfg: RunConfig):
    """A KFP pipeline function for this configuration (call it under kfp.local, or compile it)."""
    from kfp import dsl

    from masa.components import build

    c = build(cfg.images)
    defaults = ui_defaults(cfg)
    config_json = cfg.to_json()

    def step(task, name: str, display: str):
        _resources(task, cfg, name)
        task.set_display_name(display)
        return task

    @dsl.pipeline(name=f"masa-{cfg.name}",
                  description=f"MASA RL: {' vs '.join(cfg.branches)}, {cfg.rounds} rounds (masa-pipeline)")
    def masa_pipeline(model: str = defaults["model"], train_data: str = defaults["train_data"],
                      store: str = defaults["store"], prompts_per_round: int = defaults["prompts_per_round"],
                      n_solution: int = defaults["n_solution"], n_meta: int = defaults["n_meta"],
                      learning_rate: float = defaults["learning_rate"],
                      temperature: float = defaults["temperature"],
                      max_response_tokens: int = defaults["max_response_tokens"], seed: int = defaults["seed"]):
        conf = step(c.configure(config_json=config_json, model=model, train_data=train_data, store=store,
                                prompts_per_round=prompts_per_round, n_solution=n_solution, n_meta=n_meta,
                                learning_rate=learning_rate, temperature=temperature,
                                max_response_tokens=max_response_tokens, seed=seed), "configure", "configure")
        cj = conf.output
        prep = step(c.prepare(config_json=cj), "prepare", "prepare base model")
        base = prep.outputs["base_model"]
        data = step(c.data_filter(config_json=cj, base_model=base), "data_filter", "data filter")
        evals = {"base": step(c.benchmark(config_json=cj, name="base", model=base), "benchmark",
                              "benchmark · base").outputs["results"]}
        histories = {}
        for branch in cfg.branches:
            policy, history = base, None
            for r in range(cfg.rounds):
                extra = {"history": history} if history is not None else {}
                ro = step(c.rollout(config_json=cj, branch=branch, round_idx=r, prompts=data.outputs["prompts"],
                                    heldout=data.outputs["heldout"], policy=policy, **extra), "rollout", f"{branch} · round {r + 1} · rollout")
                sc = step(c.score(config_json=cj, branch=branch, round_idx=r, rollouts=ro.outputs["rollouts"],
                                  policy=policy, **extra), "score", f"{branch} · round {r + 1} · score")
                tr = step(c.train(config_json=cj, branch=branch, round_idx=r, policy=policy,
                                  scored=sc.outputs["scored"]), "train", f"{branch} · round {r + 1} · train")
                policy, history = tr.outputs["new_policy"], sc.outputs["history_out"]
            # the report compares GRPO with algorithm.name; another baseline (plain MASA beside
            # MASA-efficient) is benchmarked under its own name, its figures in that step's output
            key = "grpo" if branch == "grpo" else ("masa" if branch == cfg.algorithm.name else branch)
            evals[key] = step(c.benchmark(config_json=cj, name=key, model=policy), "benchmark",
                              f"benchmark · {key}").outputs["results"]
            histories[key] = history
        kwargs = {f"{k}_eval": v for k, v in evals.items() if k in ("grpo", "masa")}
        kwargs.update({f"{k}_history": v for k, v in histories.items() if k in ("grpo", "masa")})
        step(c.report(config_json=cj, base_eval=evals["base"], **kwargs), "report", "report")

    return masa_pipeline
