def configure(config_json: str, model: str, train_data: str, store: str, prompts_per_round: int,
              n_solution: int, n_meta: int, learning_rate: float, temperature: float,
              max_response_tokens: int, seed: int) -> str:
    """Apply the run's UI parameters to the compiled configuration and validate it before any work."""
    from masa.config import apply_parameters

    return apply_parameters(config_json, model=model, train_data=train_data, store=store,
                            prompts_per_round=prompts_per_round, n_solution=n_solution, n_meta=n_meta,
                            learning_rate=learning_rate, temperature=temperature,
                            max_response_tokens=max_response_tokens, seed=seed)
