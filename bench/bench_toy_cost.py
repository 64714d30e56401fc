"""The toy's cost structure at the base model, per recipe (issue 15, item 1): is it the paper's regime?

    .venv/bin/python bench/bench_toy_cost.py [--recipes toy chain] [--prompts 256] [--samples 8] [--toy-seed 0]

For each recipe (built now, or from the cache), on the real vLLM CPU engine at T=1, the first N train
prompts x k solution and k meta samples of the warm-started base model (the first round's policy),
prompted as the pipeline prompts them. Prints per recipe:

- meta_share     meta tokens / all rollout tokens of a MASA round (issue 15: <= 0.15)
- sol_tok, meta_tok  mean tokens of a solution and of a meta sample
- zero_var       share of prompts whose k solutions are all wrong or all right (issue 15: 0.30-0.60)
- wrong, right   of them, all wrong / all right
- fail/pass_len  mean length of failing solutions / of passing ones (early cutoff has work where > 1)
- fail/pass_mixed  the same within each prompt that has both, averaged over those prompts (the part of
                 the above that is not harder prompts having longer solutions)
- at_budget      share of solutions that ran to the token budget
- cut_saved, cut_correct  what early cutoff at the preset's multiplier (2x) could do with exact length
                 predictions (`masa.algo.cutoff.cutoff_budget` on each prompt's own sample lengths: 2x their
                 median): the share of solution tokens it would not generate, and the share of correct
                 samples it would cut.
                 The ceiling of cutoff's savings on the recipe, before the meta path has to learn lengths
- accuracy, meta_parse
- build_s        the build's wall seconds as recorded in artifacts.json (issue 15: <= ~240 on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def measure(recipe_name: str, prompts: int, samples: int, seed: int, toy_seed: int = 0) -> dict[str, float]:
    import torch

    from masa.algo.cutoff import cutoff_budget
    from masa.data.records import load_problems
    from masa.engines import EngineConfig, make_engine
    from masa.runner.evaluate import EvalSettings, sample_outcomes
    from masa.toy import build, get_recipe

    recipe = dataclasses.replace(get_recipe(recipe_name), seed=toy_seed)  # a run's --set toy_seed: its build
    art = build(recipe)
    problems = load_problems(str(art.train_parquet), split="test")[0][:prompts]
    s = EvalSettings(k=samples, temperature=1.0, top_p=1.0, max_tokens=recipe.max_response_tokens,
                     n_solution=recipe.n_solution, seed=seed,
                     max_prompt_tokens=recipe.max_model_len - recipe.max_response_tokens)
    engine = make_engine(EngineConfig(model=str(art.model_dir), backend="vllm", dtype="float32", seed=seed,
                                      max_model_len=recipe.max_model_len))
    try:
        got = sample_outcomes(engine, problems, s).outcomes
    finally:
        engine.close()
    sol = sum(sum(o.lengths) for o in got)
    meta = sum(o.tokens for o in got) - sol
    right = sum(all(o.correct) for o in got) / len(got)
    wrong = sum(not any(o.correct) for o in got) / len(got)
    lens = [(n, ok) for o in got for n, ok in zip(o.lengths, o.correct, strict=True)]
    fail = [n for n, ok in lens if not ok]
    ok = [n for n, ok in lens if ok]
    # within a prompt whose samples both pass and fail: is a failing solution longer than its passing
    # siblings (cutoff's work), not just a harder prompt's longer solution
    mixed = [statistics.mean(n for n, c in zip(o.lengths, o.correct, strict=True) if not c)
             / statistics.mean(n for n, c in zip(o.lengths, o.correct, strict=True) if c)
             for o in got if 0 < sum(o.correct) < len(o.correct)]
    # the run's own budget rule, fed each prompt's own sample lengths as its "predictions"
    budgets = cutoff_budget(torch.tensor([o.lengths for o in got], dtype=torch.float32),
                            torch.ones(len(got), samples, dtype=torch.bool), multiplier=2.0,
                            max_tokens=recipe.max_response_tokens).tolist()
    cut = [(n - b, ok) for o, b in zip(got, budgets, strict=True) for n, ok in zip(o.lengths, o.correct, strict=True)
           if n > b]
    info = json.loads((art.root / "artifacts.json").read_text())
    return {"meta_share": meta / (sol + meta), "sol_tok": sol / len(lens), "meta_tok": meta / len(lens),
            "zero_var": right + wrong, "wrong": wrong, "right": right,
            "fail/pass_len": statistics.mean(fail) / statistics.mean(ok) if fail and ok else float("nan"),
            "fail/pass_mixed": statistics.mean(mixed) if mixed else float("nan"),
            "at_budget": sum(n >= recipe.max_response_tokens for n, _ in lens) / len(lens),
            "cut_saved": sum(n for n, _ in cut) / sol, "cut_correct": sum(c for _, c in cut) / max(1, len(ok)),
            "accuracy": len(ok) / len(lens),
            "meta_parse": sum(m is not None for o in got for m in o.meta) / sum(len(o.meta) for o in got),
            "build_s": info["build_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["toy", "chain"])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed")
    ap.add_argument("--toy-seed", type=int, default=0, help="the toy build's seed (masa run's toy_seed)")
    args = ap.parse_args()
    rows = {r: measure(r, args.prompts, args.samples, args.seed, args.toy_seed) for r in args.recipes}
    cols = list(next(iter(rows.values())))
    print(f"{args.prompts} train prompts x {args.samples} solution + {args.samples} meta samples, T=1, vLLM CPU")
    print("recipe".ljust(8) + "".join(c.rjust(17) for c in cols))
    for r, row in rows.items():
        print(r.ljust(8) + "".join(f"{row[c]:17.3f}" for c in cols))


if __name__ == "__main__":
    main()
