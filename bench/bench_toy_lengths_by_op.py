"""Per operation, at the base model: accuracy, zero-variance prompts and failing against passing lengths
within mixed prompts (issue 15's "failing solutions run long"; an experiment, reverted with the `counted`
recipe: docs/toy.md, "Failing samples that run long").

    .venv/bin/python bench/bench_toy_lengths_by_op.py counted [256]
"""
import os, sys, statistics, collections
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
from masa.data.records import load_problems
from masa.engines import EngineConfig, make_engine
from masa.runner.evaluate import EvalSettings, sample_outcomes
from masa.toy import build, get_recipe
recipe = get_recipe(sys.argv[1]); n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
art = build(recipe)
problems = load_problems(str(art.train_parquet), split="test")[0][:n]
s = EvalSettings(k=8, temperature=1.0, top_p=1.0, max_tokens=recipe.max_response_tokens, n_solution=recipe.n_solution,
                 seed=0, max_prompt_tokens=recipe.max_model_len - recipe.max_response_tokens)
eng = make_engine(EngineConfig(model=str(art.model_dir), backend="vllm", dtype="float32", seed=0, max_model_len=recipe.max_model_len))
try:
    res = sample_outcomes(eng, problems, s)
finally:
    eng.close()
got = res.outcomes
def op(q):
    return "/" if " / " in q else ("*" if " * " in q else ("-" if " - " in q else "+"))
by = collections.defaultdict(list)
for p, o in zip(problems, got):
    by[op(p.problem)].append(o)
for k, os_ in sorted(by.items()):
    lens = [(l, c) for o in os_ for l, c in zip(o.lengths, o.correct)]
    f = [l for l, c in lens if not c]; ok = [l for l, c in lens if c]
    mixed = [statistics.mean(l for l, c in zip(o.lengths, o.correct) if not c) / statistics.mean(l for l, c in zip(o.lengths, o.correct) if c)
             for o in os_ if 0 < sum(o.correct) < len(o.correct)]
    zv = sum(all(o.correct) or not any(o.correct) for o in os_) / len(os_)
    print(f"{k}: prompts {len(os_)} acc {len(ok)/len(lens):.3f} zero_var {zv:.2f} fail_len {statistics.mean(f) if f else 0:.1f} pass_len {statistics.mean(ok) if ok else 0:.1f} "
          f"mixed_ratio {statistics.mean(mixed) if mixed else float('nan'):.3f} (n={len(mixed)}) at_budget {sum(l >= recipe.max_response_tokens for l, _ in lens)/len(lens):.3f} max {max(l for l,_ in lens)}")
# show a few failing division samples
