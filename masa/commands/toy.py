"""`masa toy build|eval`: make the toy profile's model and data, or measure them with vLLM."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "build (or find in the cache) the toy model and arithmetic data; evaluate them with vLLM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="toy_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build the toy artifacts (a cache hit when the recipe is unchanged)")
    b.add_argument("--recipe", default="toy", help="toy (default) or smoke")
    b.add_argument("--out", default=None, help="also copy the artifacts into this directory")
    b.add_argument("--cache-dir", default=None, help="cache root (default $MASA_CACHE_DIR/toy or ~/.cache/masa/toy)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    e = sub.add_parser("eval", help="sample the built toy model with the vLLM CPU engine and report its spread")
    e.add_argument("--recipe", default="toy", help="toy (default) or smoke")
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--split", default="train", choices=("train", "heldout"))
    e.add_argument("--prompts", type=int, default=64, help="fixed sample: the first N prompts of the split")
    e.add_argument("--samples", type=int, default=8, help="samples per prompt (G)")


def _jsonable(obj):
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def run(args: argparse.Namespace) -> int:
    from masa.toy import build, get_recipe

    recipe = get_recipe(args.recipe)
    if args.toy_command == "build":
        art = build(recipe, cache_dir=args.cache_dir, force=args.force, progress=not args.quiet)
        if args.out:
            import shutil

            shutil.copytree(art.root, args.out, dirs_exist_ok=True)
        print(json.dumps(_jsonable(art), indent=2))
        return 0
    import os

    # vLLM logs to stdout by default; leave stdout to the JSON report (its warnings still reach stderr).
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    from masa.toy.evaluate import evaluate

    art = build(recipe, cache_dir=args.cache_dir)
    report = evaluate(art, split=args.split, n_prompts=args.prompts, n_samples=args.samples)
    print(json.dumps(_jsonable(report), indent=2))
    return 0
