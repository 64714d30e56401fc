"""How far apart do a toy recipe's builds land over build seeds? (issue 15)

    .venv/bin/python bench/toy_build_spread.py --recipes reasoned broad --seeds 3 4 5 6 [--cache-dir DIR]
        [--recipe-set wander=0.05 ...]

For each recipe and seed: the toy build as `masa run --preset toy --set toy_recipe=R --set toy_seed=S`
makes it (cached under DIR, default the toy cache: $MASA_CACHE_DIR/toy or ~/.cache/masa/toy; with
`--recipe-set`, the recipe's fields so replaced, values read as JSON: another recipe hash), then the
base model's benchmark as the toy preset's benchmark step runs it (its 700 held-out problems x k = 8,
vLLM; one meta prediction each). Prints per build:

- build_s        the build's wall time (on a cache hit, the time the cached build recorded)
- loss           the warm start's last batch loss
- acc            held-out avg@8 of the base model: where the draw sits between pass rate 0 and 1
- zero_var       share of held-out problems whose 8 samples are all wrong or all right: the run's
                 first-round zero-variance share (issue 15: 0.30-0.60), on held-out problems as a proxy
                 for the train prompts (both splits are one draw)
- +4 / -4        avg@8 on 4-column additions / subtractions, where the builds of `reasoned` differ most
- +2 / -2        the same on 2 columns

Then, per recipe, the mean and range of `acc` and `zero_var` over the seeds. One build of `broad` took
171-178 s on a 2-core AMD EPYC (2026-12-07), its benchmark under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import toy_meta_floor  # bench/, beside this script: the question -> (operation, columns, regroups) cell

from masa.config import load_config
from masa.steps.prepare import toy_recipe_for
from masa.toy.build import build, default_cache_dir

COLUMNS = ("build_s", "loss", "acc", "zero_var", "+4", "-4", "+2", "-2")


def figures(counts: dict[str, int], text: dict[str, str], k: int) -> dict[str, float]:
    """The printed accuracy figures from a benchmark's per-problem correct counts out of `k`."""
    by_cell: dict[tuple[str, int], list[float]] = defaultdict(list)
    for pid, c in counts.items():
        op, cols, _ = toy_meta_floor.cell(text[pid])
        by_cell[(op, cols)].append(c / k)
    out = {"acc": statistics.fmean(c / k for c in counts.values()),
           "zero_var": statistics.fmean(c in (0, k) for c in counts.values())}
    for op, cols in (("+", 4), ("-", 4), ("+", 2), ("-", 2)):
        rates = by_cell.get((op, cols))
        out[f"{op}{cols}"] = statistics.fmean(rates) if rates else float("nan")
    return out


def measure(recipe_name: str, seed: int, cache_dir: Path, fields: dict | None = None) -> dict[str, float]:
    from masa.data.records import load_problems
    from masa.engines import make_engine
    from masa.runner.evaluate import run_benchmarks
    from masa.runner.settings import benchmark_eval_settings, engine_config

    cfg = load_config("toy", [f"toy_recipe={recipe_name}", f"toy_seed={seed}"])
    art = build(dataclasses.replace(toy_recipe_for(cfg), **(fields or {})), cache_dir=cache_dir, progress=False)
    s = dataclasses.replace(benchmark_eval_settings(cfg), meta_k=1)  # the meta path is not measured here
    model = str(art.model_dir)
    engine = make_engine(engine_config(cfg, "benchmark", model, s.max_prompt_tokens + s.max_tokens))
    try:
        result = run_benchmarks(model, [str(art.heldout_parquet)], s, engine=engine)
    finally:
        engine.close()
    (b,) = result["benchmarks"].values()
    text = {p.prompt_id: p.problem for p in load_problems(b["source"], split="test")[0]}
    return {"build_s": art.build_seconds, "loss": art.warm_start.final_loss,
            **figures(b["correct_counts"], text, b["k"])}


def recipe_fields(pairs: list[str]) -> dict:
    """`--recipe-set` FIELD=VALUE pairs as ToyRecipe fields, VALUE read as JSON (a bare word as a string)."""
    from masa.commands.step import parse_step_args
    from masa.toy.recipe import ToyRecipe

    try:
        out = parse_step_args(pairs)
    except ValueError as e:
        raise SystemExit(str(e).replace("--arg", "--recipe-set")) from None
    known = {f.name for f in dataclasses.fields(ToyRecipe)}
    for key in sorted(set(out) - known):
        raise SystemExit(f"--recipe-set {key}: not a toy recipe field; valid: {', '.join(sorted(known))}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["reasoned"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cache-dir", default=None,
                    help="toy cache (default $MASA_CACHE_DIR/toy or ~/.cache/masa/toy)")
    ap.add_argument("--recipe-set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a field of every recipe (masa.toy.recipe.ToyRecipe), VALUE read as JSON")
    args = ap.parse_args(argv)
    fields = recipe_fields(args.recipe_set)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    print("recipe     seed " + " ".join(f"{c:>8}" for c in COLUMNS), flush=True)
    rows: dict[str, list[dict]] = defaultdict(list)
    for name in args.recipes:
        for seed in args.seeds:
            row = measure(name, seed, cache, fields)
            rows[name].append(row)
            print(f"{name:<10} {seed:>4} " + " ".join(f"{row[c]:>8.3f}" for c in COLUMNS), flush=True)
    for name, rs in rows.items():
        for c in ("acc", "zero_var"):
            v = [r[c] for r in rs]
            print(f"{name}: {c} mean {statistics.fmean(v):.3f}, range {min(v):.3f}-{max(v):.3f}"
                  + (f", sd {statistics.stdev(v):.3f}" if len(v) > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
