"""How well could any meta path predict the toy's held-out pass rates? Floors for issue 15's MAE bar.

    .venv/bin/python bench/toy_meta_floor.py RUN_DIR [RUN_DIR ...]   # `masa run --preset toy --out RUN_DIR`

Reads each checkpoint's benchmark results of a finished toy run (kfp.local's outputs under
RUN_DIR/kfp/*/benchmark*/results: every problem's correct count out of k) and prints, per checkpoint,
the pass-rate MAE of predictors that see less and less of the outcome, beside the meta path's own:

- constant       one pass rate for every problem, the observed rates' median (the report's "constant's MAE")
- op+columns     one per (operation, number of columns) cell, the cell's median
- +regroupings   one per (operation, columns, carries or borrows) cell: a predictor that knows everything
                 the toy's difficulty is drawn from, but not the problem's digits
- binomial       E|c/k - p| with p = c/k: the part of any prediction's error that is the k samples' noise

The meta path is sampled at T = 1 in the rollouts and in the benchmark, and the report's MAE averages
its samples, so two more columns score a *sampler*: a predictor that draws each prediction from the
observed rates of the problem's group, the other problems' (leave one out: the problem's own outcome
is not known to it). That is what a calibrated meta path, for instance one cloned on the observed
rates by maximum likelihood, scores at T = 1; only a sharper path (one that puts its samples near the
group's median, as the reward's mode-seeking can teach) gets below it.

- sampler        the draw from all other problems' rates: calibrated, and knowing nothing of the problem
- cell sampler   the draw from its (operation, columns, regroupings) cell's other problems; a problem
                 alone in its cell draws from all others

Each run ends with the bar, half GRPO's meta MAE, beside them.

The cell medians are chosen knowing the outcomes, in-sample, so they are floors, not predictors: a meta
path that read only the difficulty cell could not do better than the third column. Issue 15's bar is half
GRPO's meta MAE, which is an untrained path's (the warm start's uniform guesses); the table shows where
that bar lies against these floors.
"""

from __future__ import annotations

import glob
import json
import re
import statistics
import sys
from collections import defaultdict
from math import comb
from pathlib import Path

from masa.data.records import load_problems
from masa.runner.evaluate import constant_mae
from masa.toy.task import ArithmeticProblem

_QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")


def cell(question: str) -> tuple[str, int, int]:
    a, op, b = _QUESTION.fullmatch(question).groups()
    p = ArithmeticProblem(int(a), op, int(b))
    return op, p.n_columns, p.regroups


def median_mae(groups: dict) -> float:
    """MAE of each group's median over all members: the best one value per group can do."""
    n = sum(len(v) for v in groups.values())
    return sum(constant_mae(v) * len(v) for v in groups.values()) / n


def sampler_mae(groups: dict) -> float:
    """MAE of drawing each member's prediction from its group's other members (mean |r_j - r_i| over
    j != i), averaged over all members; a member alone in its group draws from every other group's."""
    total, n = 0.0, 0
    for key, v in groups.items():
        for i, r in enumerate(v):
            pool = v[:i] + v[i + 1:] or [x for k, w in groups.items() if k != key for x in w]
            total += statistics.fmean(abs(x - r) for x in pool)
            n += 1
    return total / n


def binomial_noise(rates: list[float], k: int) -> float:
    def e_abs(p: float) -> float:
        return sum(comb(k, j) * p**j * (1 - p) ** (k - j) * abs(j / k - p) for j in range(k + 1))
    return statistics.fmean(e_abs(p) for p in rates)


def floors(results: dict) -> dict[str, float]:
    b = results["benchmarks"]["toy"]
    text = {p.prompt_id: p.problem for p in load_problems(b["source"], split="test")[0]}
    rates = {pid: c / b["k"] for pid, c in b["correct_counts"].items()}
    by_op_cols, by_cell = defaultdict(list), defaultdict(list)
    for pid, r in rates.items():
        c = cell(text[pid])
        by_op_cols[c[:2]].append(r)
        by_cell[c].append(r)
    return {"accuracy": b["accuracy"], "meta_mae": b["meta"]["pass_rate_mae"],
            "constant": constant_mae(list(rates.values())), "op+columns": median_mae(by_op_cols),
            "+regroupings": median_mae(by_cell), "binomial": binomial_noise(list(rates.values()), b["k"]),
            "sampler": sampler_mae({0: list(rates.values())}), "cell sampler": sampler_mae(by_cell)}


def main(run_dirs: list[str]) -> None:
    cols = ("accuracy", "meta_mae", "constant", "op+columns", "+regroupings", "binomial", "sampler",
            "cell sampler")
    print(f"{'run':<28}{'checkpoint':<16}" + "".join(f"{c:>14}" for c in cols))
    for d in run_dirs:
        bar = None
        for path in sorted(glob.glob(str(Path(d) / "kfp" / "*" / "benchmark*" / "results"))):
            res = json.loads(Path(path).read_text())
            checkpoint = res["benchmarks"]["toy"]["source"].split("__")[1]
            f = floors(res)
            print(f"{Path(d).name:<28}{checkpoint:<16}" + "".join(f"{f[c]:14.3f}" for c in cols))
            if checkpoint == "grpo":
                bar = f["meta_mae"] / 2
        if bar is not None:
            print(f"{Path(d).name:<28}{'the bar':<16}{'':>14}{bar:14.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1:])
