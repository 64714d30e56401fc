"""The run report: `report.json` (schema in docs/report.md), a self-contained `report.html` with
inline SVG plots, and a Markdown summary for the Kubeflow UI. This module assembles the figures;
`masa.steps.report_render` draws them.

Sources: the benchmark results of each checkpoint (KFP artifacts) and the per-round stats that every
step published beside its part in the store (`masa.runner.layout`).

Efficiency figures (paper, Sec. 5.3, "1.28x faster to the same accuracy"): each branch's held-out
accuracy curve is indexed by the *cumulative rollout tokens* (and wall time) spent before the policy
that was measured; the speedup is GRPO's cost to reach its own final held-out accuracy divided by
MASA's cost to reach the same accuracy (null when MASA never does). Tokens saved by gating and
cutoff are estimated against the GRPO branch, which sampled the same prompts in the same round:
a gated prompt saves what GRPO spent on that prompt's solutions, a cut sample saves what GRPO's samples
of that prompt that ran past the cut sample's budget ran past it, on average (`cutoff_excess`; a cut
sample is one that would have run past its budget, so the samples that stopped short of it say nothing
of its length). Without a GRPO branch they are estimated from MASA's own round (documented in the JSON
as `estimate_basis`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from masa.algo.gate_switch import signal_loss
from masa.config import RunConfig
from masa.runner.charts import Z
from masa.runner.layout import STATS_FILE, run_layout, train_stats_key
from masa.schemas import REPORT_LENGTH_NEEDS, SOLUTION
from masa.steps.report_render import (
    cost_to_reach,
    curves,
    first_benchmark,
    render_charts,
    render_html,
    render_markdown,
)
from masa.storage import open_store, put_dir_atomic

PARTS = ("rollouts", "scored", "checkpoint")


def _stats(store, prefix: str, part: str) -> dict[str, Any]:
    key = train_stats_key(prefix) if part == "checkpoint" else f"{prefix}/{STATS_FILE}"
    return json.loads(store.get_bytes(key)) if store.exists(key) else {}


def round_records(cfg: RunConfig, branch: str) -> list[dict[str, Any]]:
    store, layout = open_store(cfg.store), run_layout(cfg)
    rows = []
    for r in range(cfg.rounds):
        ro, sc, tr = (_stats(store, layout.part(branch, r, p), p) for p in PARTS)
        rows.append({
            "round": r, "train_accuracy": sc.get("train_accuracy"),
            "heldout_accuracy": (ro.get("heldout") or {}).get("accuracy"),
            "heldout_accuracy_stderr": (ro.get("heldout") or {}).get("accuracy_stderr"),
            "rollout_tokens": ro.get("tokens"), "meta_tokens": sc.get("meta_tokens"),
            "solution_tokens": sc.get("solution_tokens"),
            "wall_s": sum(x.get("wall_s", 0.0) or 0.0 for x in (ro, tr)) + _span(sc),
            "generation_s": ro.get("wall_s"), "scoring_s": _span(sc), "training_s": tr.get("wall_s"),
            "gated_prompts": ro.get("gated_prompts"), "cutoff_samples": ro.get("cutoff_samples"),
            "gating_active": ro.get("gating_active"), "cutoff_active": ro.get("cutoff_active"),
            "zero_variance_share": _zero_variance_share(sc),
            "zero_variance_tokens": sc.get("zero_variance_solution_tokens"),
            "_heldout_ids": (ro.get("heldout") or {}).get("prompt_ids"),
            "meta": {"pass_rate_mae": sc.get("meta_pass_rate_mae"),
                     "pass_rate_mae_stderr": sc.get("meta_pass_rate_mae_stderr"),
                     "pass_rate_mae_median": sc.get("meta_pass_rate_mae_median"), "parse_rate": sc.get("meta_parse_rate"),
                     "gate_hits": sc.get("meta_gate_hits"), "gate_candidates": sc.get("meta_gate_candidates"),
                     "gate_mixed": sc.get("meta_gate_mixed"), "mixed": sc.get("meta_mixed"),
                     "reward": sc.get("meta_reward_mean")},
            "policy_loss": tr.get("policy_loss"), "grad_norm": tr.get("grad_norm"),
            "_steps": [(kind, y["started_at"], y["finished_at"], _compute(kind, y)) for kind, y in
                       (("rollout", ro), ("score", sc), ("train", tr)) if y.get("started_at") and y.get("finished_at")],
        })
    return rows


def _zero_variance_share(sc: dict[str, Any]) -> float | None:
    """Share of the round's solution groups whose rewards are all equal (no GRPO signal). Stats written
    before `solution_groups` existed: a round without gating has one group per prompt."""
    groups = sc.get("solution_groups")
    if groups is None and sc.get("gated_prompts") == 0:
        groups = sc.get("n_prompts")
    zero = sc.get("zero_variance_solution_groups")
    return zero / groups if zero is not None and groups else None


def _span(stats: dict[str, Any]) -> float:
    a, b = stats.get("started_at"), stats.get("finished_at")
    return float(b - a) if a and b else 0.0


def _compute(kind: str, stats: dict[str, Any]) -> float:
    """A step's own work: generation (engine start-up excluded) and the rollout step's held-out check,
    training steps, or the whole scoring span."""
    if kind == "score":
        return _span(stats)
    return float(stats.get("wall_s") or 0.0) + float((stats.get("heldout") or {}).get("wall_s") or 0.0)


Step = tuple[str, float, float, float]  # (kind, started_at, finished_at, compute seconds)


def timing(steps: list[Step], report_started: float, report_finished: float) -> dict[str, Any]:
    """Wall time from the first stamped step to the end of the report, split per step kind.

    A step's overhead is what its measured span holds beyond its compute (engine start-up, store
    reads and writes) plus the gap since the latest step that finished before it started (process
    start, imports, KFP bookkeeping: what a step pays before its first stamp). Steps run one at a
    time under kfp.local, so the kinds add up to `total_s`; unstamped steps (configure, prepare,
    resume) fall in the gap of the next stamped one. The report's own compute is building the report."""
    steps = sorted(steps, key=lambda x: x[1]) + [("report", report_started, report_finished,
                                                   report_finished - report_started)]
    kinds: dict[str, dict[str, float]] = {}
    for i, (kind, a, b, compute) in enumerate(steps):
        before = [f for _, _, f, _ in steps[:i] if f <= a]
        over = (a - max(before) if before else 0.0) + max(0.0, (b - a) - compute)
        k = kinds.setdefault(kind, {"steps": 0, "compute_s": 0.0, "overhead_s": 0.0})
        k["steps"] += 1
        k["compute_s"] += min(compute, b - a)
        k["overhead_s"] += over
    total = report_finished - steps[0][1]
    compute = sum(k["compute_s"] for k in kinds.values())
    return {"total_s": round(total, 2), "overhead_s": round(max(0.0, total - compute), 2),
            "compute_s": round(compute, 2),
            "by_kind": {n: {"steps": k["steps"], "compute_s": round(k["compute_s"], 2),
                            "overhead_s": round(k["overhead_s"], 2)} for n, k in kinds.items()}}


def final_point(ids: list[str] | None, result: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """(accuracy, standard error, basis) of a final checkpoint for its accuracy curve: on the rounds'
    held-out check problems (`ids`), read from its first benchmark's correct counts, when the benchmark
    holds them all, so that the curve's last point measures what its other points measure. A check that
    samples `data.heldout_size` of the benchmark's problems differs from the whole in difficulty by a
    few points (toy seed 0's old 64: 0.262 against 0.301 for the base model), which, mixed into one
    curve, made "reaches GRPO's final accuracy" a comparison of two problem sets. (The toy's check is
    the whole benchmark since 2026-12-05, so there the last point is the benchmark's avg@k.) Otherwise
    (a benchmark other than the held-out split, results without counts) the benchmark's own accuracy,
    basis "benchmark"."""
    first = first_benchmark(result)
    counts, k = first.get("correct_counts") or {}, first.get("k")
    if not ids or not k or any(i not in counts for i in ids):
        return first.get("accuracy"), first.get("accuracy_stderr"), "benchmark"
    rates = [counts[i] / k for i in ids]
    # masa.algo.evaluation.accuracy_stderr with every problem at k samples, without its torch (the report
    # step imports none: tests/test_step_imports.py)
    se = statistics.stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else None
    return sum(rates) / len(rates), se, "heldout-check"


def speedup_ceiling(solution: int | None, zero_variance: int | None, meta: int | None) -> float | None:
    """The token speedup a MASA round's costs allow at best: GRPO spends `solution` tokens for a round's
    signal; MASA-efficient, gating exactly the prompts whose groups give no signal (`zero_variance` of
    those tokens) and learning as much per round, spends solution - zero_variance + meta. Early cutoff
    is left out. Below 1, no calibration of the meta path can make MASA-efficient cheaper than GRPO at
    equal learning per round (a run can still time it faster: by learning more per round, or by the
    noise of the held-out check it is timed on)."""
    if not solution or zero_variance is None or meta is None:
        return None
    return solution / (solution - zero_variance + meta)


def gating_note(rows: list[dict[str, Any]], *, window: int, mae_threshold: float,
                min_precision: float = 0.0, max_signal_loss: float = 1.0) -> dict[str, Any]:
    """How many of MASA-efficient's rounds had predictive gating on and, when none did, the figures that
    kept it off: the error of what gating acts on (the rounds' MAE of the median prediction) against the
    switch (masa.algo.gating: its mean over the last `window` rounds below `mae_threshold`) and, with
    `min_precision`, the share of the prompts it would have skipped that were on the skipped side and,
    with `max_signal_loss` < 1, the share of the mixed groups it would have skipped."""
    on = sum(bool(r.get("gating_active")) for r in rows)
    maes = [m for r in rows if (m := (r.get("meta") or {}).get("pass_rate_mae_median")) is not None]
    why = None
    if not on:
        why = ("no round measured the meta path's pass-rate error" if not maes else
               f"the meta path's pass-rate error (MAE of the median prediction) went {maes[0]:.3f} -> {maes[-1]:.3f} "
               f"over the rounds (best {min(maes):.3f}); gating switches on once its mean over the last "
               f"{window} rounds is below {mae_threshold}")
        gates = [(m["gate_hits"], m["gate_candidates"]) for r in rows
                 if (m := r.get("meta") or {}).get("gate_candidates")]
        if maes and min_precision > 0 and gates:
            h, c = sum(h for h, _ in gates), sum(c for _, c in gates)
            why += (f", and once at least {min_precision} of the prompts it would skip, pooled over the same rounds, "
                    f"were all wrong or all right (over the run: {h} of {c}, {h / c:.2f})")
        signal = [(m["gate_mixed"], m["mixed"], m["gate_candidates"] or 0, r.get("gated_prompts") or 0)
                  for r in rows if (m := r.get("meta") or {}).get("mixed") is not None]
        if maes and max_signal_loss < 1 and (loss := signal_loss(signal)) is not None:
            why += (f", and once it would skip at most {max_signal_loss} of the rolled-out prompts' mixed groups, "
                    f"GRPO's signal (over the run: {loss:.2f})")
    return {"gating_active_rounds": on, "gating_why_off": why}


def cutoff_rounds(rows: list[dict[str, Any]]) -> int | None:
    """How many of MASA-efficient's rounds had early cutoff acting (`algorithm.cutoff.max_cut_passing`
    can hold it back; without that switch, every round); None for rounds rolled out before the flag."""
    flags = [r.get("cutoff_active") for r in rows]
    return None if any(f is None for f in flags) else sum(map(bool, flags))


def speedup_noise(eff: dict[str, Any], points: dict[str, tuple]) -> dict[str, Any]:
    """How far the speedups can be trusted: the interval (Z = 1.96 s.e.) of GRPO's final check accuracy,
    the target both speedups time, and a note when MASA-efficient reached that target but ended below
    it. Such a speedup times one check's crossing of another within their noise, not a level the run
    kept (toy seed 1, 2026-12-05: 1.98x in tokens from a check of 0.252 against a target of
    0.248 ± 0.088, ending at 0.230)."""
    target, se = (points.get("grpo") or (None, None, None))[:2]
    masa = (points.get("masa") or (None, None, None))[0]
    interval = Z * se if se is not None else None
    crossed = eff.get("speedup_tokens") is not None or eff.get("speedup_wall") is not None
    note = None
    if crossed and target is not None and masa is not None and masa < target:
        note = (f"MASA-efficient reached GRPO's final held-out accuracy {target:.3f}"
                + (f" (± {interval:.3f})" if interval is not None else "")
                + f" on the way but ended at {masa:.3f}, below it: the speedup times a crossing the run did not keep")
    return {"speedup_target_interval": interval, "speedup_note": note}


def efficiency(rounds: dict[str, list], finals: dict[str, float | None], savings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"speedup_tokens": None, "speedup_wall": None, **savings}
    # from MASA's first round: the base model's costs, before gating can act
    first = (rounds.get("masa") or [{}])[0]
    out["speedup_tokens_ceiling"] = speedup_ceiling(first.get("solution_tokens"), first.get("zero_variance_tokens"),
                                                    first.get("meta_tokens"))
    if "grpo" in rounds and "masa" in rounds:
        for key, name in (("rollout_tokens", "speedup_tokens"), ("wall_s", "speedup_wall")):
            g, m = curves(rounds["grpo"], finals.get("grpo"), key), curves(rounds["masa"], finals.get("masa"), key)
            target = g[-1][1]
            cg, cm = (cost_to_reach(g, target), cost_to_reach(m, target)) if target is not None else (None, None)
            out[name] = (cg / cm) if cg and cm else None
            out[f"{name}_target_accuracy"] = target
            out[f"{name}_why_null"] = _why_null(target, cg, cm) if out[name] is None else None
    return out


def _why_null(target: float | None, cost_grpo: float | None, cost_masa: float | None) -> str:
    """Why a speedup is null, in words for the report (a bare null reads like a bug)."""
    if target is None:
        return "GRPO's held-out accuracy was not measured"
    if cost_masa is None:
        return f"MASA never reached GRPO's final held-out accuracy {target:.3f}"
    if not cost_grpo:
        return (f"the starting policy already had GRPO's final held-out accuracy {target:.3f} "
                "(GRPO did not improve on it), so both costs are 0")
    return f"MASA reached GRPO's final held-out accuracy {target:.3f} before spending anything"


def _part_rows(cfg: RunConfig, branch: str, r: int, part: str, name: str, columns: list[str]) -> list[dict]:
    """Selected columns of one parquet file of a round's part in the store ([] if absent)."""
    import tempfile

    import pyarrow.parquet as pq

    store = open_store(cfg.store)
    key = f"{run_layout(cfg).part(branch, r, part)}/{name}"
    if not store.exists(key):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        store.get_file(key, f"{tmp}/{name}")
        return pq.read_table(f"{tmp}/{name}", columns=columns).to_pylist()


def _solution_lengths(cfg: RunConfig, branch: str, r: int) -> dict[str, list[tuple[int, str, int]]]:
    """prompt_id → [(length, finish_reason, budget)] of the round's solution samples."""
    rows = _part_rows(cfg, branch, r, "scored", "scored.parquet",
                      list(REPORT_LENGTH_NEEDS))
    out: dict[str, list] = {}
    for row in rows:
        if row["path"] == SOLUTION:
            out.setdefault(row["prompt_id"], []).append((len(row["response_token_ids"]), row["finish_reason"],
                                                         row["max_tokens"]))
    return out


def cutoff_excess(budget: int, reference: list[int]) -> float | None:
    """Tokens a sample cut at `budget` would still have generated, estimated from `reference` lengths of
    samples of the same prompt (or round): E[x - budget | x > budget], the mean over those that ran past
    the budget. None when none did (the reference says nothing of how far a cut sample would have run).
    Not E[max(0, x - budget)], which counts the samples that stopped short as saving 0 and so charges a
    cut sample as if it might have stopped short too."""
    past = [x - budget for x in reference if x > budget]
    return sum(past) / len(past) if past else None


def cutoff_savings(cut: list[tuple[int, list[int]]]) -> float:
    """Solution tokens saved by one round's cut samples, each (budget, reference lengths): GRPO's samples
    of its prompt, or the round's own uncut samples. `cutoff_excess` for each; a cut sample whose
    reference never ran past its budget is charged the mean of the round's other estimates (0 when there
    are none): it did run past its budget, so 0 would undercount it."""
    own = [cutoff_excess(budget, reference) for budget, reference in cut]
    known = [x for x in own if x is not None]
    fallback = sum(known) / len(known) if known else 0.0
    return sum(fallback if x is None else x for x in own)


def token_savings(cfg: RunConfig, masa_branch: str, gated: list[list[str]]) -> dict[str, Any]:
    """Estimated solution tokens saved by gating and by cutoff in the MASA branch (see module doc)."""
    g_total = c_total = 0.0
    basis = "grpo-same-prompts" if cfg.compare else "masa-round-mean"
    G = cfg.algorithm.n_solution
    for r in range(cfg.rounds):
        masa = _solution_lengths(cfg, masa_branch, r)
        ref = _solution_lengths(cfg, "grpo", r) if cfg.compare else {}
        own = [ln for samples in masa.values() for ln, fr, _ in samples if fr != "cutoff"]
        mean_len = sum(own) / len(own) if own else 0.0
        for pid in gated[r] if r < len(gated) else []:
            g_total += sum(ln for ln, _, _ in ref[pid]) if pid in ref else G * mean_len
        c_total += cutoff_savings([(budget, [x for x, _, _ in ref.get(pid, [])] if cfg.compare else own)
                                   for pid, samples in masa.items() for _, fr, budget in samples if fr == "cutoff"])
    return {"tokens_saved_gating": round(g_total), "tokens_saved_cutoff": round(c_total),
            "estimate_basis": basis}


def _gated_prompts(cfg: RunConfig, branch: str) -> list[list[str]]:
    """Per round, the prompt ids whose solution samples were gated out."""
    return [sorted({x["prompt_id"] for x in _part_rows(cfg, branch, r, "rollouts", "rollouts.parquet",
                                                       ["prompt_id", "gated"]) if x["gated"]})
            for r in range(cfg.rounds)]


def _load_eval(path: str | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _eval_section(res: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "accuracy_stderr", "pass_at_k", "k", "meta_k", "n_problems", "meta", "tokens", "wall_s", "samples_per_s")
    return {name: {k: b.get(k) for k in keep} for name, b in res["benchmarks"].items()}


def build_report(cfg: RunConfig, *, evals: dict[str, str | None], histories: dict[str, str | None],
                 json_out: str, html_out: str, md_out: str, promotion: str | None = None) -> dict[str, Any]:
    """Assemble report.json / report.html / report.md from the evals and the store's round stats;
    `promotion` is the promote step's record (JSON path), when the run has one."""
    started = time.time()
    results = {k: r for k, p in evals.items() if (r := _load_eval(p))}
    # GRPO against algorithm.name; another baseline (plain MASA) is not in the report (its benchmark
    # step's output holds its figures)
    masa_branch = cfg.algorithm.name if cfg.algorithm.name != "grpo" else None
    gating = cfg.algorithm.gating if cfg.algorithm.name == "masa-efficient" and cfg.algorithm.gating.enabled else None
    rounds = {("grpo" if b == "grpo" else "masa"): round_records(cfg, b) for b in cfg.branches
              if b in ("grpo", cfg.algorithm.name)}
    # the final point of each accuracy curve: the final checkpoint on the rounds' held-out check problems
    # (final_point); the benchmark's own figures are in "eval"
    # (one set for every branch: prepare draws it once per run)
    ids = next((i for rows in rounds.values() for row in rows if (i := row.get("_heldout_ids"))), None)
    for rows in rounds.values():
        for row in rows:
            row.pop("_heldout_ids", None)
    points = {k: final_point(ids, r) for k, r in results.items()}
    finals = {k: p[0] for k, p in points.items()}
    savings = (token_savings(cfg, masa_branch, _gated_prompts(cfg, masa_branch)) if masa_branch
               else {"tokens_saved_gating": 0, "tokens_saved_cutoff": 0})
    steps = [st for rows in rounds.values() for row in rows for st in row.pop("_steps")]
    steps += [("benchmark", r["started_at"], r["finished_at"], float(r.get("wall_s") or 0.0))
              for r in results.values() if r.get("started_at") and r.get("finished_at")]
    report = {
        "run": {"name": cfg.name, "branches": list(cfg.branches), "rounds": cfg.rounds, "config": cfg.to_dict(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "eval": {k: _eval_section(r) for k, r in results.items()},
        "rounds": rounds,
        "efficiency": {**(eff := efficiency(rounds, finals, savings)), **speedup_noise(eff, points),
                       "final_accuracy_basis": points.get("grpo", (None, None, None))[2],
                       **(gating_note(rounds["masa"], window=gating.window, mae_threshold=gating.mae_threshold,
                                      min_precision=gating.min_precision,
                                      max_signal_loss=gating.max_signal_loss)
                          if gating and rounds.get("masa") else {}),
                       **({"cutoff_active_rounds": cutoff_rounds(rounds["masa"])}
                          if cfg.algorithm.name == "masa-efficient" and rounds.get("masa") else {})},
        "final_points": {k: {"accuracy": a, "accuracy_stderr": se, "basis": basis} for k, (a, se, basis) in points.items()},
        "checkpoints": {k: r.get("uri") for k, r in results.items()},
        "promotion": _load_eval(promotion),
    }
    svgs = render_charts(report, results)  # before the timing, so that the report's compute includes them
    report["timing"] = timing(steps, started, time.time())
    Path(json_out).write_text(json.dumps(report, indent=1, default=str))
    Path(html_out).write_text(render_html(report, results, svgs))
    Path(md_out).write_text(render_markdown(report))
    publish_report(cfg, {"report.json": json_out, "report.html": html_out, "report.md": md_out})
    e = report["efficiency"]
    return {"speedup_tokens": e["speedup_tokens"], "speedup_wall": e["speedup_wall"],
            "tokens_saved_gating": e["tokens_saved_gating"], "tokens_saved_cutoff": e["tokens_saved_cutoff"],
            **{f"{k}.accuracy": first_benchmark(r)["accuracy"] for k, r in results.items()}}


def report_prefix(cfg: RunConfig) -> str:
    return f"{run_layout(cfg).run_id}/report"


def publish_report(cfg: RunConfig, files: dict[str, str]) -> str:
    """The report files, sealed by a manifest in the store under the run (`<run_id>/report/`), as the
    checkpoints are: the KFP artifacts are the UI's copies. Returns the prefix's URI."""
    import shutil
    import tempfile


    store = open_store(cfg.store)
    with tempfile.TemporaryDirectory(prefix="masa-report-") as tmp:
        for name, path in files.items():
            shutil.copyfile(path, Path(tmp, name))
        put_dir_atomic(store, tmp, report_prefix(cfg))
    return store.uri(report_prefix(cfg))
