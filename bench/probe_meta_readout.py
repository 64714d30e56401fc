"""Can the toy's base model see a problem's difficulty where the meta path predicts it? (issue 15)

    .venv/bin/python bench/probe_meta_readout.py RUN_DIR [RUN_DIR ...]

RUN_DIR is a finished `masa run --preset toy` output (one seed of bench/bench_toy_seeds.py). Over the
MASA-efficient branch's rounds, each prompt's pass rate (its G solutions) is the label. Printed, as
Spearman and MAE against it:

- facts      a lookup on the true (operation, columns, carries/borrows), 5-fold cross-validated: how
             much of the pass rate the problem's facts explain at all
- hidden     a ridge probe (5-fold CV, standardised features) on the base model's hidden states, every
             layer, at the meta prompt's last token: what a linear readout of what the model already
             computes could predict before writing a token
- meta path  the meta rollouts' own pass-rate predictions (mean of a prompt's samples / G)
- mean       predicting the labels' mean for every prompt (the MAE a constant gets)

`hidden` near `facts` with `meta path` near 0 says the difficulty is in the model and what is missing is
the readout from it to the predicted value's token, which the meta path's RL must learn.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

FOLDS = 5


def spearman(a, b) -> float:
    """`masa.algo.evaluation.spearman` (tie-averaged ranks) of two sequences, as a float."""
    import torch

    from masa.algo.evaluation import spearman as rank_corr

    return float(rank_corr(torch.as_tensor(np.asarray(a, dtype=float)), torch.as_tensor(np.asarray(b, dtype=float))))


def folds(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, FOLDS, n)


def cv_lookup(keys: list, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold mean label of each key (the training folds' overall mean for an unseen key)."""
    out = np.zeros(len(y))
    for k in range(FOLDS):
        tr = fold != k
        table = pd.DataFrame({"key": keys, "y": y})[tr].groupby("key").y.mean()
        out[~tr] = [table.get(key, y[tr].mean()) for key, t in zip(keys, tr, strict=True) if not t]
    return out


def cv_ridge(x: np.ndarray, y: np.ndarray, fold: np.ndarray, lam: float) -> np.ndarray:
    """Out-of-fold ridge predictions on features standardised with the training folds' statistics."""
    out = np.zeros(len(y))
    for k in range(FOLDS):
        tr = fold != k
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        a = (x[tr] - mu) / sd
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[tr] - y[tr].mean()))
        out[~tr] = (x[~tr] - mu) / sd @ w + y[tr].mean()
    return out


def prompts(run_dir: Path) -> pd.DataFrame:
    """One row per (round, prompt) of the MASA-efficient branch: problem, meta prompt ids, pass rate,
    the meta path's mean predicted pass rate (0-1)."""
    rows = []
    for f in sorted(run_dir.glob("store/*/masa-efficient/round-*/scored/scored.parquet")):
        d = pd.read_parquet(f)
        sol, meta = d[d.path == "solution"], d[d.path == "meta"]
        g = sol.groupby("prompt_id").size().max()
        per = meta.groupby("prompt_id").agg(problem=("problem", "first"), ids=("prompt_token_ids", "first"),
                                            predicted=("meta_pass_rate", "mean"))
        per["pass_rate"] = sol.assign(correct=sol.correct.astype(float)).groupby("prompt_id").correct.mean()
        per["predicted"] = per.predicted / g
        rows.append(per.dropna(subset=["pass_rate"]))
    return pd.concat(rows, ignore_index=True)


def hidden_states(model_dir: Path, ids: list) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return np.stack([torch.cat([h[0, -1] for h in model(torch.tensor([list(i)]), output_hidden_states=True)
                                    .hidden_states[1:]]).numpy() for i in ids])


def facts(problem: str) -> tuple:
    from masa.toy.task import ArithmeticProblem

    a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", problem).groups()
    p = ArithmeticProblem(int(a), op, int(b))
    return p.op, p.n_columns, p.regroups


def probe(run_dir: Path) -> dict[str, tuple[float, float]]:
    df = prompts(run_dir)
    y, fold = df.pass_rate.to_numpy(dtype=float), folds(len(df))
    model_dir = next(run_dir.glob("store/*/base/checkpoint"))
    preds = {"facts": cv_lookup([facts(p) for p in df.problem], y, fold),
             "hidden": cv_ridge(hidden_states(model_dir, df.ids), y, fold, lam=1.0),
             "meta path": df.predicted.to_numpy(), "mean": np.full(len(y), y.mean())}
    return {k: (spearman(v, y) if k != "mean" else float("nan"), float(np.abs(np.clip(v, 0, 1) - y).mean()))
            for k, v in preds.items()} | {"prompts": (len(y), float("nan"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    for run in ap.parse_args().runs:
        r = probe(run)
        print(f"{run} ({r.pop('prompts')[0]} prompts)")
        for k, (s, mae) in r.items():
            print(f"  {k:10s} Spearman {s:+.2f}  MAE {mae:.3f}")


if __name__ == "__main__":
    main()
