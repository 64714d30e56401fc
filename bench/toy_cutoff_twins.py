"""What early cutoff did in a run's first round, counted exactly rather than estimated.

    .venv/bin/python bench/toy_cutoff_twins.py RUN_DIR [RUN_DIR ...]     # `masa run --out` directories

In round 0 both branches of a `compare` run sample the same prompts from the same base model with the same
seeds, so every MASA-efficient solution has a GRPO twin that is the same token for token, up to where
cutoff stopped it (checked below: a run where that fails is reported, not counted). The twin shows what
the cut sample would have been: how many tokens cutoff saved, and whether the sample would have passed
(its GRPO reward). The report's `tokens_saved_cutoff` is an estimate over all rounds, after which the
branches' policies differ; this is the one round where nothing needs estimating. Prints per run: samples
cut, of them the ones that would have passed (and their share of the round's passing samples: signal
cutoff took from GRPO's groups), tokens saved and their share of the round's solution tokens, `whole`:
prompts whose every solution was cut, `lost`: prompts whose GRPO twins had a passing sample and whose
solutions kept none after cutoff (an all-wrong group: no GRPO signal, and an observed pass rate of 0 for
the meta path's reward), and `fail_mixed`: what cutoff had to work with, GRPO's round-0 failing solutions' mean length over their
passing siblings', within each prompt that has both, averaged over those prompts (as
`bench/bench_toy_cost.py`'s fail/pass_mixed, here on the run's own base-model samples).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def round0(run_dir: Path, branch: str, part: str, name: str):
    import pyarrow.parquet as pq

    (path,) = run_dir.glob(f"store/*/{branch}/round-000/{part}/{name}")
    return pq.read_table(path).to_pylist()


def twins(run_dir: Path) -> dict[str, float]:
    masa = [r for r in round0(run_dir, "masa-efficient", "rollouts", "rollouts.parquet") if r["path"] == "solution"]
    grpo = {(r["prompt_id"], r["sample_idx"]): r for r in round0(run_dir, "grpo", "rollouts", "rollouts.parquet")}
    reward = {(r["prompt_id"], tuple(r["response_token_ids"])): r["reward"]
              for r in round0(run_dir, "grpo", "scored", "scored.parquet")}
    cut = saved = passed = 0
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)  # per prompt: (cut, its twin passed)
    for m in masa:
        g = grpo[(m["prompt_id"], m["sample_idx"])]
        mine, twin = m["response_token_ids"], g["response_token_ids"]
        if list(mine) != list(twin[: len(mine)]):
            raise SystemExit(f"{run_dir}: {m['prompt_id']} sample {m['sample_idx']} differs from its GRPO twin "
                             "before any cut (not a compare run's round 0?)")
        twin_passed = reward[(g["prompt_id"], tuple(twin))] > 0
        groups[m["prompt_id"]].append((m["finish_reason"] == "cutoff", twin_passed))
        if m["finish_reason"] == "cutoff":
            cut += 1
            saved += len(twin) - len(mine)
            passed += twin_passed
    # a group cut whole has no sample left to observe; a group whose only passes were cut observes pass
    # rate 0 (no GRPO signal, and the meta path's pass-rate target says 0: docs/report.md, "Cutoff on an
    # uncalibrated length prediction")
    whole = sum(all(c for c, _ in got) for got in groups.values())
    lost = sum(any(ok for _, ok in got) and not any(ok and not c for c, ok in got) for got in groups.values())
    tokens = sum(len(g["response_token_ids"]) for g in grpo.values())
    passing = sum(reward[(g["prompt_id"], tuple(g["response_token_ids"]))] > 0 for g in grpo.values()) or 1
    return {"samples": len(masa), "cut": cut, "cut_passing": passed, "of_passing": passed / passing,
            "saved": saved, "saved_share": saved / tokens, "whole": whole, "lost": lost,
            "fail_mixed": fail_mixed(grpo.values(), reward)}


def fail_mixed(samples, reward) -> float:
    """Mean over prompts with passing and failing samples of (failing mean length / passing mean length)."""
    by_prompt: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for g in samples:
        ids = tuple(g["response_token_ids"])
        by_prompt[g["prompt_id"]].append((len(ids), reward[(g["prompt_id"], ids)] > 0))
    ratios = [statistics.mean(n for n, ok in got if not ok) / statistics.mean(n for n, ok in got if ok)
              for got in by_prompt.values() if 0 < sum(ok for _, ok in got) < len(got)]
    return statistics.mean(ratios) if ratios else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args()
    cols = ("samples", "cut", "cut_passing", "of_passing", "saved", "saved_share", "whole", "lost", "fail_mixed")
    print(f"{'run':<40}" + "".join(f"{c:>13}" for c in cols))
    for run in a.runs:
        f = twins(run)
        print(f"{str(run)[-40:]:<40}" + "".join(f"{f[c]:>13.3g}" if isinstance(f[c], float) else f"{f[c]:>13}"
                                                for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
