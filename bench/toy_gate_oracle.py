"""Could any gate skip the toy's zero-variance prompts well enough to pay for the meta path? (issue 15)

    .venv/bin/python bench/toy_gate_oracle.py RUN_DIR [RUN_DIR ...] [--samples 64] [--problems 400]

RUN_DIR is a finished `masa run --preset toy` output (one seed of bench/bench_toy_seeds.py). Predictive
gating skips a prompt when its meta path says all G solutions will be wrong (or right); it switches on only
once at least `gating.min_precision` (0.8) of the prompts it would skip were, and on the toy it never has.
This asks whether that is the meta path's shortfall or the toy's: how precise could a gate be that knew
more, and what would its skipping save? Two parts:

1. The stored rounds of the run's MASA-efficient branch (its newest run in the store): every rolled-out
   prompt with its G solutions and the meta path's predictions, gated by
   - the gate          the median prediction is 0 or G (`masa.algo.gating`'s own median_prediction and
                       gate_mask)
   - unanimous         every parsed prediction is 0, or every one G
   - cell oracle       as many prompts as the gate picks, those whose (operation, columns, regroupings)
                       cell had the highest share of zero-variance groups among the *other* prompts of the
                       run (leave one out): what knowing each problem's difficulty, and nothing else, buys
   - sure cells        the prompts of cells whose leave-one-out share is at least 0.8
2. With --samples N (> 0), the run's base checkpoint on the first --problems held-out problems, N + G
   samples each at T = 1 on vLLM: the first N estimate the problem's own pass rate p, the last G are the
   group gating would have saved. The oracle gates p_hat <= t or >= 1 - t: what knowing each problem's
   pass rate to within N samples buys.

Printed for each rule: the share of prompts gated, its precision (the gated groups that were all wrong or
all right), the token ratio S / (S - gated + M) (S: the solution tokens, M: the meta path's, as in the
report's `speedup_tokens_ceiling`; gating's best case, equal learning per round assumed), and the share
of mixed groups (GRPO's only signal) that it would have thrown away.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_meta_floor import cell  # noqa: E402  (a sibling bench script, not a package)

G = 8


def rounds(run: Path) -> pd.DataFrame:
    """One row per rolled-out (round, prompt) of the newest MASA-efficient branch in the run's store."""
    store = max(run.glob("store/*/masa-efficient"), key=lambda p: p.stat().st_mtime)
    rows = []
    for f in sorted(store.glob("round-*/scored/scored.parquet")):
        d = pd.read_parquet(f)
        sol, meta = d[d.path == "solution"], d[d.path == "meta"]
        sol = sol.assign(c=sol.correct.astype(float), t=sol.response_token_ids.map(len))
        per = sol.groupby("prompt_id").agg(problem=("problem", "first"), c=("c", "sum"), n=("c", "size"),
                                           t=("t", "sum"))
        m = meta.assign(t=meta.response_token_ids.map(len)).groupby("prompt_id").agg(
            mt=("t", "sum"), preds=("meta_pass_rate", lambda s: [x for x in s if x == x]))
        rows.append(per[per.n == G].join(m, how="left"))
    d = pd.concat(rows, ignore_index=True)
    d["zv"] = (d.c == 0) | (d.c == G)
    d["preds"] = d.preds.map(lambda p: p if isinstance(p, list) else [])
    return d


def leave_one_out(cells: list, zv: np.ndarray) -> np.ndarray:
    """Each prompt's cell's share of zero-variance groups among the cell's other prompts (0.5 if alone)."""
    tot, cnt = defaultdict(float), defaultdict(int)
    for c, z in zip(cells, zv, strict=True):
        tot[c] += z
        cnt[c] += 1
    return np.array([(tot[c] - z) / (cnt[c] - 1) if cnt[c] > 1 else 0.5 for c, z in zip(cells, zv, strict=True)])


def figures(gated: np.ndarray, zv: np.ndarray, tokens: np.ndarray, meta_tokens: float) -> dict[str, float]:
    """A rule's share of prompts gated, precision (gated groups all wrong or all right), token ratio
    S / (S - gated + M) and share of the mixed groups it throws away. gated, zv: [P] bool; tokens: [P]."""
    s = tokens.sum()
    return {"gated": gated.mean(), "precision": zv[gated].mean() if gated.any() else float("nan"),
            "tokens": s / (s - tokens[gated].sum() + meta_tokens),
            "lost": (gated & ~zv).sum() / max((~zv).sum(), 1)}


def rules(preds: list[list[float]], loo: np.ndarray) -> dict[str, np.ndarray]:
    """Part 1's gates over P prompts, from each prompt's parsed predictions (counts 0..G) and its cell's
    leave-one-out zero-variance share."""
    import torch

    from masa.algo.gating import gate_mask, median_prediction

    # the pipeline's own gate: the median of each prompt's parsed predictions (padded to [P, Gm]), 0 or G
    width = max((len(p) for p in preds), default=0) or 1
    pred = torch.tensor([list(p) + [0] * (width - len(p)) for p in preds], dtype=torch.float64).view(-1, width)
    valid = torch.tensor([[i < len(p) for i in range(width)] for p in preds], dtype=torch.bool).view(-1, width)
    gate = gate_mask(*median_prediction(pred, valid), n_solution=G).numpy()
    oracle = np.zeros(len(preds), bool)
    oracle[np.argsort(-loo, kind="stable")[: gate.sum()]] = True
    return {"the gate (median 0 or G)": gate,
            "unanimous": np.array([bool(p) and (max(p) <= 0 or min(p) >= G) for p in preds]),
            "cell oracle, same count": oracle, "sure cells (LOO >= 0.8)": loo >= 0.8}


def line(name: str, f: dict[str, float]) -> str:
    return (f"  {name:<26} gated {f['gated']:5.2f}  precision {f['precision']:4.2f}  tokens "
            f"{f['tokens']:4.2f}x  mixed lost {f['lost']:4.2f}")


def stored(run: Path) -> float:
    """Part 1; returns the run's meta tokens per solution token (M / S) for part 2."""
    d = rounds(run)
    zv, t, mt = d.zv.to_numpy(), d.t.to_numpy(), float(d.mt.fillna(0).sum())
    loo = leave_one_out([cell(q) for q in d.problem], zv)
    print(f"{run}: {len(d)} rolled-out prompts, zero-variance share {zv.mean():.2f}")
    for name, g in rules(list(d.preds), loo).items():
        print(line(name, figures(g, zv, t, mt)))
    return mt / t.sum()


def problem_oracle(run: Path, samples: int, n_problems: int, meta_ratio: float) -> None:
    """Part 2: the base model's own pass rate per problem, from `samples` draws, against a fresh group."""
    import json

    from masa.data.records import load_problems
    from masa.engines import EngineConfig, make_engine
    from masa.runner.evaluate import sample_outcomes
    from masa.runner.settings import EvalSettings

    model = next(run.glob("store/*/base/checkpoint"))
    res = json.loads(next(run.glob("kfp/*/benchmark/results")).read_text())
    problems = load_problems(res["benchmarks"]["toy"]["source"], split="test")[0][:n_problems]
    s = EvalSettings(k=samples + G, temperature=1.0, max_tokens=256, max_prompt_tokens=256, n_solution=G)
    engine = make_engine(EngineConfig(model=str(model), dtype="float32", seed=0, max_model_len=512))
    try:
        out = sample_outcomes(engine, problems, s, meta=False).outcomes
    finally:
        engine.close()
    p_hat = np.array([sum(o.correct[:samples]) / samples for o in out])
    c = np.array([sum(o.correct[samples:]) for o in out])
    zv = (c == 0) | (c == G)
    t = np.array([sum(o.lengths[samples:]) for o in out], dtype=float)
    m = meta_ratio * t.sum()
    print(f"{run}: base checkpoint, {len(out)} held-out problems x ({samples} + {G}) samples, "
          f"zero-variance share of the last {G} {zv.mean():.2f}")
    sure = leave_one_out([cell(p.problem) for p in problems[:len(out)]], zv) >= 0.8
    print(line("cell oracle, sure cells", figures(sure, zv, t, m)))
    for k in (0, 1, 2, 4, 8):
        gated = (p_hat <= k / samples) | (p_hat >= 1 - k / samples)
        print(line(f"own pass rate, <= {k}/{samples}", figures(gated, zv, t, m)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--samples", type=int, default=0, help="part 2's samples per problem (0: part 1 only)")
    ap.add_argument("--problems", type=int, default=400)
    a = ap.parse_args()
    for run in a.runs:
        ratio = stored(run)
        if a.samples:
            problem_oracle(run, a.samples, a.problems, ratio)


if __name__ == "__main__":
    main()
