"""Does the meta path know more than its T = 1 samples show? Its low-temperature predictions (issue 15).

    .venv/bin/python bench/toy_meta_mode.py RUN_DIR [RUN_DIR ...] [--temperature 0.05]

RUN_DIR is a finished `masa run --preset toy` output. For every checkpoint the run benchmarked, the
meta prompt of each held-out problem is sampled once more at a low temperature (one prediction, near
the policy's mode; the engines take no temperature 0) on the benchmark step's engine and settings, and
scored against the pass rates the run's own benchmark observed (k solutions at T = 1). Printed beside
it, on the same problems:

- sampled      the benchmark's meta MAE (every T = 1 prediction; the report's figure and issue 15's bar)
- median       the MAE of the median of each problem's T = 1 predictions (what gating acts on)
- low-T        the MAE of the low-temperature prediction, its Spearman over problems and its mean
- constant     the median observed rate for every problem (the report's "constant's MAE")
- r_pass       the mean pass-rate reward (the meta path's training reward, the run's own: 0.01 **
               |p - k/G| by default, 1 - |p - k/G| under `pass_rate_reward: linear`) of the median, of
               the low-T prediction, of the MAE's constant and of the constant that
               maximises it (`best_constant`)

Two things this separates. The reward is sharp (each count off costs a factor 0.01 ** (1/G)), so its
optimum under uncertainty is near the most likely count, not the median the MAE wants: on a toy that
fails most problems the reward's best constant is 0, whose MAE is the accuracy. And a policy sampled at
T = 1 spreads its predictions around its mode, so its sampled MAE charges that spread as well as what
it does not know.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from masa.algo.evaluation import spearman
from masa.algo.rewards import pass_rate_reward
from masa.runner.evaluate import constant_mae


def mean_reward(observed: Sequence[float], predicted: Sequence[float], n_solution: int,
                variant: str = "exponential") -> float:
    """Mean r_pass (the run's `pass_rate_reward`) of predicted pass rates (fractions of G; a median of two
    counts may fall between) against observed ones."""
    counts = torch.tensor([p * n_solution for p in predicted], dtype=torch.float64)[:, None]
    return float(pass_rate_reward(counts, torch.tensor(observed, dtype=torch.float32), n_solution=n_solution,
                                  variant=variant).mean())


def best_constant(observed: Sequence[float], n_solution: int, variant: str = "exponential") -> tuple[float, float]:
    """The one predicted pass rate (a count of G, as a fraction) with the highest mean r_pass, and that mean."""
    scores = [(mean_reward(observed, [k / n_solution] * len(observed), n_solution, variant), k / n_solution)
              for k in range(n_solution + 1)]
    reward, value = max(scores)
    return value, reward


def mae(observed: Sequence[float], predicted: Sequence[float]) -> float:
    return statistics.fmean(abs(o - p) for o, p in zip(observed, predicted, strict=True))


def rank_corr(observed: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Spearman over problems; None where the predictions are all one value (no ranking to measure)."""
    if len(set(predicted)) < 2:
        return None
    return float(spearman(torch.tensor(predicted, dtype=torch.float64), torch.tensor(observed, dtype=torch.float64)))


def low_t_predictions(cfg, checkpoint: str, source: str, temperature: float) -> dict[str, float]:
    """One meta prediction per problem at `temperature`, on the benchmark step's engine and settings."""
    from masa.engines import make_engine
    from masa.runner.evaluate import run_benchmarks
    from masa.runner.settings import benchmark_eval_settings, engine_config

    s = dataclasses.replace(benchmark_eval_settings(cfg), k=1, meta_k=1, temperature=temperature)
    engine = make_engine(engine_config(cfg, "benchmark", checkpoint, s.max_prompt_tokens + s.max_tokens))
    try:
        result = run_benchmarks(checkpoint, [source], s, engine=engine)
    finally:
        engine.close()
    (bench,) = result["benchmarks"].values()
    return {r["prompt_id"]: r["median"] for r in bench["calibration"]}


def row(bench: dict, low_t: dict[str, float], n_solution: int, variant: str = "exponential") -> dict:
    """The figures of one checkpoint, over the problems with both a T = 1 and a low-T prediction; r_* in the
    run's own pass-rate reward (`variant`)."""
    cal = [r for r in bench["calibration"] if r["prompt_id"] in low_t]
    obs, med, low = [r["observed"] for r in cal], [r["median"] for r in cal], [low_t[r["prompt_id"]] for r in cal]
    const = statistics.median(obs)
    best, best_r = best_constant(obs, n_solution, variant)
    return {"n": len(cal), "observed": statistics.fmean(obs), "sampled": bench["meta"]["pass_rate_mae"],
            "median": mae(obs, med), "low_t": mae(obs, low), "low_t_rho": rank_corr(obs, low),
            "low_t_mean": statistics.fmean(low), "constant": constant_mae(obs),
            "r_median": mean_reward(obs, med, n_solution, variant), "r_low_t": mean_reward(obs, low, n_solution, variant),
            "r_constant": mean_reward(obs, [const] * len(obs), n_solution, variant), "best_constant": best,
            "r_best_constant": best_r}


def main(argv: list[str] | None = None) -> None:
    from masa.config import RunConfig
    from masa.configbase import from_dict

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--temperature", type=float, default=0.05)
    args = p.parse_args(argv)
    cols = ("n", "observed", "sampled", "median", "low_t", "low_t_rho", "low_t_mean", "constant", "r_median",
            "r_low_t", "r_constant", "best_constant", "r_best_constant")
    print(f"{'run':<10}{'checkpoint':<16}" + "".join(f"{c:>16}" for c in cols))
    for d in args.runs:
        cfg = from_dict(RunConfig, json.loads((Path(d) / "config.json").read_text()))
        for path in sorted(glob.glob(str(Path(d) / "kfp" / "*" / "benchmark*" / "results"))):
            (bench,) = json.loads(Path(path).read_text())["benchmarks"].values()
            checkpoint = next(x for x in glob.glob(str(Path(path).parent / "*checkpoint")) if Path(x).is_dir())
            low_t = low_t_predictions(cfg, checkpoint, bench["source"], args.temperature)
            f = row(bench, low_t, cfg.algorithm.n_solution, cfg.algorithm.reward.pass_rate_reward)
            name = bench["source"].split("__")[1]
            print(f"{Path(d).name:<10}{name:<16}" + "".join(
                f"{'-' if f[c] is None else (f[c] if isinstance(f[c], int) else round(f[c], 3)):>16}" for c in cols),
                flush=True)


if __name__ == "__main__":
    main()
