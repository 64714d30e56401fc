"""What the meta path learns round by round, and which prompts its cloning sees (issue 15).

    .venv/bin/python bench/toy_meta_rounds.py RUN_DIR [RUN_DIR ...] [--every 1]

RUN_DIR is a finished `masa run --preset toy` output. Over the MASA-efficient branch's rounds, from each
round's scored rollouts (its G solutions give each prompt's observed pass rate):

- zero         share of the parsed meta samples that predict pass rate 0 (the exponential reward's best
               constant on a task that fails most prompts: docs/algorithm.md)
- rho          Spearman over prompts of the mean of a prompt's predictions against its observed rate
- pred / obs   mean prediction and mean observed rate (pass rates, 0..1)
- spread       mean |p_i - p_j| over pairs of one prompt's meta samples: how much the path disagrees
               with itself on the same prompt (a calibrated-but-blind path draws as widely as the data)
- experts      prompts whose best meta sample became a cloning target, over all prompts, by observed
               count: 0 correct, 1..G/2, G/2+1..G-1, G (`expert.min_reward` selects on the meta reward
               before the values are rewritten, so which prompts get cloned is not blind to the outcome)
"""

from __future__ import annotations

import argparse
import glob
import itertools
import statistics

import pyarrow.parquet as pq
import torch

from masa.algo.evaluation import spearman

BINS = ("0", "low", "high", "all")


def pairwise_spread(preds: list[float]) -> float | None:
    """Mean |a - b| over the unordered pairs of one prompt's predictions; None with fewer than two."""
    pairs = list(itertools.combinations(preds, 2))
    return statistics.fmean(abs(a - b) for a, b in pairs) if pairs else None


def count_bin(correct: int, g: int) -> str:
    """0 correct, at most half, more than half but not all, all of the G solutions."""
    return "0" if correct == 0 else "low" if correct <= g // 2 else "high" if correct < g else "all"


def round_row(scored, expert_ids: set, g: int) -> dict:
    sol = scored[scored.path == "solution"]
    correct = sol.groupby("prompt_id").correct.sum()
    parsed = scored.meta_parse_error.isna() | (scored.meta_parse_error == "")
    meta = scored[(scored.path == "meta") & parsed]
    preds = {pid: [v / g for v in s] for pid, s in meta.groupby("prompt_id").meta_pass_rate}
    ids = [pid for pid in preds if pid in correct.index]
    mean_pred = torch.tensor([statistics.fmean(preds[p]) for p in ids], dtype=torch.float64)
    obs = torch.tensor([correct[p] / g for p in ids], dtype=torch.float64)
    spreads = [s for s in (pairwise_spread(preds[p]) for p in ids) if s is not None]
    kept = {b: [0, 0] for b in BINS}
    for pid, c in correct.items():
        cell = kept[count_bin(int(c), g)]
        cell[0] += pid in expert_ids
        cell[1] += 1
    return {"zero": float((meta.meta_pass_rate == 0).mean()), "rho": float(spearman(mean_pred, obs)),
            "pred": float(mean_pred.mean()), "obs": float(obs.mean()), "spread": statistics.fmean(spreads),
            "experts": kept}


def _expert_ids(path: str) -> set:
    found = glob.glob(path)
    return set(pq.read_table(found[0], columns=["prompt_id"])["prompt_id"].to_pylist()) if found else set()


def main(runs: list[str], every: int) -> None:
    for run in runs:
        rounds = sorted(glob.glob(f"{run}/store/*/masa-efficient/round-*/scored/scored.parquet"))
        for path in rounds[::every]:
            scored = pq.read_table(path).to_pandas()
            g = int(scored[scored.path == "solution"].groupby("prompt_id").size().max())
            r = round_row(scored, _expert_ids(path.replace("scored.parquet", "experts.parquet")), g)
            cloned = " ".join(f"{b} {k}/{n}" for b, (k, n) in r["experts"].items())
            print(f"{run} round {int(scored['round'].iloc[0]):2d}: zero {r['zero']:.2f} rho {r['rho']:+.2f} "
                  f"pred {r['pred']:.3f} obs {r['obs']:.3f} spread {r['spread']:.3f} | experts {cloned}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--every", type=int, default=1, help="print every n-th round")
    a = p.parse_args()
    main(a.runs, a.every)
