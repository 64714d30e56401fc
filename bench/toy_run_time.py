"""Where finished toy runs spent their wall time, and why one recipe's run takes longer than another's.

    .venv/bin/python bench/toy_run_time.py RUN_DIR [RUN_DIR ...]                      # `masa run --out` dirs
    .venv/bin/python bench/toy_run_time.py B0 B1 B2 --against A0 A1 A2               # B_i / A_i, paired

Reads each run's report.json (timing) and its scored shards, and prints per run, per branch where it
says so:

- run_s, overhead_s   the report's `timing.total_s` and the part of it outside the steps' work
- gen_s               generation seconds over the rounds (engine start-up and the held-out checks left out)
- check_s             the rounds' held-out checks: the rollout steps' work less their generation
- train_s             the training steps' work (optimizer steps, and MASA's cloning phase)
- bench_s             the three benchmarks' work
- tokens              rollout tokens over the rounds (MASA's include its meta path)
- trained             prompt + response tokens the optimizer steps compute on: the round's plan
                      (`masa.train.data.plan_round` with the branch's per-round settings), so inert
                      samples (zero advantage: prompts whose solutions all pass or all fail) are left out
- padded              the same with each micro-batch padded to its longest sample, over `trained`
- zero_var            the share of the first round's prompts with all solutions right or all wrong (GRPO's
                      branch where the run has one)
- at_cap              the share of the run's solution samples (with a response) that stopped at
                      `rollout.max_response_tokens`

With --against, the ratios B_i / A_i of run_s, gen_s, train_s, bench_s, tokens and trained, pair by pair
and on the mean. Run the paired runs in the same hour (alternated), since a 2-core machine's speed moves
10-15% over a day; this reads finished runs and times nothing itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def branches(cfg) -> dict[str, str]:
    """The report's branch names (grpo, masa) -> the store's (the algorithm's: masa.steps.report.build_report)."""
    return {("grpo" if b == "grpo" else "masa"): b for b in cfg.branches}


def run_config(run_dir: Path):
    from masa.config import RunConfig
    from masa.configbase import from_dict

    return from_dict(RunConfig, json.loads((run_dir / "config.json").read_text()))


def trained_tokens(run_dir: Path, cfg, branch: str) -> tuple[int, int, int, int]:
    """(trained tokens, padded tokens, solution samples with a response, of them at the response cap)
    over the rounds."""
    from masa.runner.settings import train_settings
    from masa.train.data import load_policy_samples, plan_round

    real = padded = solutions = at_cap = 0
    for r in range(cfg.rounds):
        found = list(run_dir.glob(f"store/*/{branch}/round-{r:03d}/scored/scored.parquet"))
        if len(found) != 1:
            raise SystemExit(f"{run_dir}: {len(found)} scored shards of {branch} round {r}, expected 1")
        path = found[0]
        samples = load_policy_samples(path)
        tc = train_settings(cfg, branch, r)
        lengths = [s.n_tokens for s in samples]
        for plan in plan_round(samples, world=cfg.train_processes, steps=tc.steps_per_round,
                               samples_per_step=tc.samples_per_step, token_budget=tc.max_tokens_per_microbatch,
                               seed=tc.seed, epochs=tc.epochs, skip_inert=tc.skips_inert):
            for mb in (m for rank in plan.micro for m in rank if m):
                real += sum(lengths[i] for i in mb)
                padded += len(mb) * max(lengths[i] for i in mb)
        sol = [len(s.response) for s in samples if s.path == "solution"]  # the shard read once
        solutions += len(sol)
        at_cap += sum(n >= cfg.rollout.max_response_tokens for n in sol)
    return real, padded, solutions, at_cap


def figures(run_dir: Path) -> dict[str, float]:
    if not (run_dir / "report" / "report.json").is_file():
        raise SystemExit(f"{run_dir}: no report/report.json (not a finished `masa run --out` directory)")
    cfg = run_config(run_dir)
    names = branches(cfg)
    rep = json.loads((run_dir / "report" / "report.json").read_text())
    kinds = rep["timing"]["by_kind"]
    out = {"run_s": rep["timing"]["total_s"], "overhead_s": rep["timing"]["overhead_s"],
           "bench_s": kinds["benchmark"]["compute_s"],
           "check_s": kinds["rollout"]["compute_s"] - sum(x.get("generation_s") or 0.0
                                                          for b in names for x in rep["rounds"][b]),
           "zero_var": rep["rounds"][next(iter(names))][0]["zero_variance_share"]}
    solutions = at_cap = 0
    for short, branch in names.items():
        rows = rep["rounds"][short]
        out[f"gen_s.{short}"] = sum(x.get("generation_s") or 0.0 for x in rows)
        out[f"train_s.{short}"] = sum(x.get("training_s") or 0.0 for x in rows)
        out[f"tokens.{short}"] = sum(x.get("rollout_tokens") or 0 for x in rows)
        real, padded, n, cap = trained_tokens(run_dir, cfg, branch)
        out[f"trained.{short}"], out[f"padded.{short}"] = real, padded / real
        solutions, at_cap = solutions + n, at_cap + cap
    out["at_cap"] = at_cap / solutions
    return out


def label(d: Path) -> str:
    return "/".join(d.parts[-2:])[-28:]


def fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--against", nargs="*", type=Path, default=[], help="runs to divide by, paired in order")
    args = ap.parse_args()
    if args.against and len(args.against) != len(args.runs):
        raise SystemExit(f"--against needs one run per run: {len(args.runs)} runs, {len(args.against)} against")
    table = {d: figures(d) for d in [*args.runs, *args.against]}
    cols = list(next(iter(table.values())))
    print("run".ljust(28) + "".join(c.rjust(14) for c in cols))
    for d, f in table.items():
        print(label(d).ljust(28) + "".join(fmt(f[c]).rjust(14) for c in cols))
    if args.against:
        ratio_cols = [c for c in cols if c.split(".")[0] in ("run_s", "gen_s", "train_s", "bench_s", "tokens",
                                                              "trained")]
        pairs = list(zip(args.runs, args.against, strict=True))
        ratios = [{c: table[b][c] / table[a][c] for c in ratio_cols} for b, a in pairs]
        print("\nratio B / A".ljust(28) + "".join(c.rjust(14) for c in ratio_cols))
        for (b, a), r in zip(pairs, ratios, strict=True):
            print(f"{label(b)} / {label(a)}"[-28:].ljust(28) + "".join(f"{r[c]:.3f}".rjust(14) for c in ratio_cols))
        print("mean".ljust(28) + "".join(f"{statistics.mean(r[c] for r in ratios):.3f}".rjust(14)
                                         for c in ratio_cols))


if __name__ == "__main__":
    main()
