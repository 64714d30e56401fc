"""The embedded default ("toy" profile): a graded arithmetic task and a tiny warm-started Qwen2 model,
built locally from nothing (no downloads) and cached by recipe hash.

    from masa.toy import build, SMOKE
    art = build()             # ~minutes the first time, then a cache hit
    art.model_dir, art.train_parquet, art.heldout_parquet, art.warm_start.probe_pass_rate

Only the recipe objects are imported eagerly; torch/transformers load when `build` runs.
"""

from masa.toy.build import ToyArtifacts, WarmStartSummary, build, default_cache_dir
from masa.toy.recipe import RECIPES, SMOKE, TOY, ToyRecipe, get_recipe

__all__ = ["RECIPES", "SMOKE", "TOY", "ToyArtifacts", "ToyRecipe", "WarmStartSummary", "build",
           "default_cache_dir", "get_recipe"]
