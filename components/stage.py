def stage(config_json: str) -> str:
    """Copy the run's hub (or local) inputs into the store once, pinned by revision; return the configuration
    that names the staged copies, which every later step takes (masa.steps.stage)."""
    from masa.config import config_from_json
    from masa.steps.stage import stage_inputs

    return stage_inputs(config_from_json(config_json)).to_json()
