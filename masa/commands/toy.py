"""`masa toy build|eval`: make the toy profile's model and data, or measure them with vLLM.

`eval` is the benchmark step's evaluation (`masa.runner.evaluate.run_benchmarks` on `masa.engines`) on
the first N prompts of a toy split, sampled at temperature 1 with the toy's G and token budget: its
`spread` (problems all wrong / mixed / all right) is the toy's promise of a learning signal, its
`meta.parse_rate` that the meta path has something to score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

HELP = "build (or find in the cache) the toy model and arithmetic data; evaluate them with vLLM"
RECIPE_HELP = ("default: the toy preset's (the model `make run` trains); "
               "others: toy, smoke, chain, terse, analysed, reasoned, wandering, broad, wandering-broad (docs/toy.md)")
# the names written out: importing masa.toy here would load its build module on every `masa` command's
# start (tests/test_toy_build.py checks the list against RECIPES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="toy_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build the toy artifacts (a cache hit when the recipe is unchanged)")
    b.add_argument("--recipe", default=None, help=RECIPE_HELP)
    b.add_argument("--out", default=None, help="also copy the artifacts into this directory")
    b.add_argument("--cache-dir", default=None, help="cache root (default $MASA_CACHE_DIR/toy or ~/.cache/masa/toy)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    e = sub.add_parser("eval", help="sample the built toy model with the vLLM CPU engine and report its spread")
    e.add_argument("--recipe", default=None, help=RECIPE_HELP)
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--split", default="train", choices=("train", "heldout"))
    e.add_argument("--prompts", type=int, default=64, help="fixed sample: the first N prompts of the split")
    e.add_argument("--samples", type=int, default=8, help="samples per prompt (G)")
    e.add_argument("--seed", type=int, default=0, help="sampling seed")


def _jsonable(obj):
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def run(args: argparse.Namespace) -> int:
    from masa.config import load_config
    from masa.steps.prepare import toy_recipe_for
    from masa.toy import build, get_recipe

    # the default is the recipe `make run` builds (the pipeline's own derivation), so `masa toy build`
    # warms the same cache entry
    recipe = get_recipe(args.recipe) if args.recipe else toy_recipe_for(load_config("toy"))
    if args.toy_command == "build":
        from pathlib import Path

        from masa.commands._common import cannot_write
        from masa.toy.build import default_cache_dir

        folders = {"--cache-dir": Path(args.cache_dir or default_cache_dir())}
        bad = cannot_write({**folders, "--out": Path(args.out)} if args.out else folders)
        if bad:  # before a build of minutes, not after it
            print("masa toy build: cannot start:\n  - " + "\n  - ".join(bad), file=sys.stderr)
            return 2
        art = build(recipe, cache_dir=args.cache_dir, force=args.force, progress=not args.quiet)
        if args.out:
            import shutil

            shutil.copytree(art.root, args.out, dirs_exist_ok=True)
        print(json.dumps(_jsonable(art), indent=2))
        return 0
    import os

    # vLLM logs to stdout by default; leave stdout to the JSON report (its warnings still reach stderr).
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    from masa.runner.evaluate import EvalSettings, run_benchmarks

    art = build(recipe, cache_dir=args.cache_dir)
    parquet = art.train_parquet if args.split == "train" else art.heldout_parquet
    s = EvalSettings(k=args.samples, temperature=1.0, top_p=1.0, max_tokens=recipe.max_response_tokens,
                     max_problems=args.prompts, n_solution=recipe.n_solution,
                     max_prompt_tokens=recipe.max_model_len - recipe.max_response_tokens, seed=args.seed)
    result = run_benchmarks(str(art.model_dir), [str(parquet)], s, backend="vllm", dtype="float32",
                            names=[f"toy-{args.split}"])
    print(json.dumps({"recipe": recipe.name, **result}, indent=2))
    return 0
