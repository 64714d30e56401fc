def configure(config_json: str, model: str, train_data: str, store: str, prompts_per_round: int,
              n_solution: int, n_meta: int, learning_rate: float, temperature: float,
              max_response_tokens: int, seed: int, benchmark_datasets: list, run_tag: str = "") -> str:
    """Apply the run's UI parameters to the compiled configuration and validate it before any work; stamp
    it with the training data's snapshot and, for a scheduled run, its KFP run (masa.steps.configure)."""
    import os

    from masa.config import apply_parameters
    from masa.configbase import ConfigError
    from masa.steps.configure import stamp_json

    # in a pod (Kubernetes sets KUBERNETES_SERVICE_HOST in every container), each step runs in its own pod:
    # a local path or "" (the compiled default of toy/smoke) would leave each step an empty store of its own
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not store.startswith("s3://"):
        raise ConfigError([f"store: {store!r} is not an s3:// URI; on a cluster every step reads the same store"])
    return stamp_json(apply_parameters(config_json, model=model, train_data=train_data, store=store,
                            prompts_per_round=prompts_per_round, n_solution=n_solution, n_meta=n_meta,
                            learning_rate=learning_rate, temperature=temperature,
                            max_response_tokens=max_response_tokens, seed=seed,
                            benchmark_datasets=benchmark_datasets), run_tag=run_tag)
