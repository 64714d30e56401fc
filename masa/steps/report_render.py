"""Rendering of the run report (masa.steps.report assembles the figures): the self-contained
`report.html` with its inline SVG charts, and the Markdown summary for the Kubeflow UI. Imports no
torch: the report step's process stays light (tests/test_step_imports.py).
"""

from __future__ import annotations

from html import escape
from typing import Any

from masa.runner import charts
from masa.runner.charts import Z


def cost_to_reach(curve: list[tuple[float, float | None]], target: float) -> float | None:
    """First cumulative cost at which the accuracy reaches `target` (None if never)."""
    for cost, acc in curve:
        if acc is not None and acc >= target - 1e-9:
            return cost
    return None


def curves(rows: list[dict[str, Any]], final_acc: float | None, key: str) -> list[tuple[float, float | None]]:
    """(cost spent before the measured policy, its held-out accuracy), round by round, then the final."""
    out, spent = [], 0.0
    for row in rows:
        out.append((spent, row["heldout_accuracy"]))
        spent += float(row[key] or 0.0)
    out.append((spent, final_acc if final_acc is not None else (rows[-1]["heldout_accuracy"] if rows else None)))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return escape(str(v))


def _pm(v: float | None, stderr: float | None) -> str:
    """`value ± 1.96*stderr` (a 95% interval) when the figure carries its standard error."""
    if v is None or stderr is None:
        return _fmt(v)
    return f"{v:.3f} ± {Z * stderr:.3f}"


class _Raw(str):
    """Table cell content that is already HTML."""


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    cell = lambda c: c if isinstance(c, _Raw) else _fmt(c)  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _points(rows: list[dict], final: tuple[float | None, float | None], key: str) -> list[tuple]:
    """`curves()` with each point's standard error: the rounds' held-out ones, then the final checkpoint's (`final_point`)."""
    errs = [r.get("heldout_accuracy_stderr") for r in rows] + [final[1] if final[0] is not None else None]
    return [(x, y, se) for (x, y), se in zip(curves(rows, final[0], key), errs, strict=True)]


def first_benchmark(res: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's first benchmark result (the one its curve and headline figures use)."""
    return next(iter(res["benchmarks"].values()))


def render_charts(report: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """The report's charts as inline SVG: accuracy against tokens and wall time (the speedup), meta
    pass-rate error and training accuracy per round, calibration, tokens saved."""
    rounds, eff, n = report["rounds"], report["efficiency"], report["run"]["rounds"]
    # the curves' final points (build_report's final_point; a report without them: the benchmarks')
    finals = {k: (p["accuracy"], p["accuracy_stderr"]) for k, p in report["final_points"].items()} \
        if "final_points" in report else {k: (first_benchmark(r).get("accuracy"), first_benchmark(r).get("accuracy_stderr"))
                                          for k, r in results.items()}
    out = []
    for key, what, tag, unit in (("rollout_tokens", "cumulative rollout tokens", "tokens", "tokens"),
                                 ("wall_s", "cumulative wall seconds", "wall", "s")):
        pts = {b: _points(rows, finals.get(b, (None, None)), key) for b, rows in rounds.items()}
        target = eff.get(f"speedup_{tag}_target_accuracy")
        cross = {b: cost_to_reach([(x, y) for x, y, _ in p], target) for b, p in pts.items()} if target is not None else {}
        out.append(charts.accuracy_vs_cost(pts, target=target, crossings=cross, xlabel=what, unit=unit,
                                            name=f"accuracy-{tag}"))
    meta_final = {k: (0 if k == "base" else n, m.get("pass_rate_mae"), m.get("pass_rate_mae_stderr"))
                  for k, r in results.items() if (m := first_benchmark(r).get("meta") or {})}
    out.append(charts.per_round(
        {b: [(r["round"], r["meta"]["pass_rate_mae"], r["meta"].get("pass_rate_mae_stderr")) for r in rows]
         for b, rows in rounds.items()}, suffix=" (training rollouts)", title="Meta pass-rate error per round",
        ylabel="pass-rate MAE (±1.96 s.e.)", name="meta-error", finals=meta_final, final_label="benchmark"))
    out.append(charts.per_round(
        {b: [(r["round"], r["train_accuracy"], None) for r in rows] for b, rows in rounds.items()},
        title="Training-rollout accuracy per round", ylabel="pass rate", name="train-accuracy"))
    out.append(charts.calibration({k: [(c["observed"], c["predicted"]) for c in first_benchmark(r).get("calibration", [])]
                                   for k, r in results.items()}, name="calibration"))
    out.append(charts.bars({"gating": eff.get("tokens_saved_gating") or 0, "cutoff": eff.get("tokens_saved_cutoff") or 0},
                           title="Solution tokens saved (estimate)", ylabel="tokens", name="tokens-saved"))
    return out


def differences(evals: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Per benchmark, each later checkpoint against each earlier one: the difference in avg@k and in
    meta MAE, and whether it is within noise (the two 95% intervals overlap) or beyond it."""
    rows = []
    names = list(evals)
    for i, a in enumerate(names):
        for b in names[:i]:
            for bench in evals[a].keys() & evals[b].keys():
                x, y = evals[a][bench], evals[b][bench]
                mx, my = x.get("meta") or {}, y.get("meta") or {}
                rows.append([bench, f"{a} − {b}",
                             *_diff(x.get("accuracy"), x.get("accuracy_stderr"), y.get("accuracy"), y.get("accuracy_stderr")),
                             *_diff(mx.get("pass_rate_mae"), mx.get("pass_rate_mae_stderr"),
                                    my.get("pass_rate_mae"), my.get("pass_rate_mae_stderr"))])
    return rows


def _diff(a: float | None, sa: float | None, b: float | None, sb: float | None) -> list[Any]:
    if a is None or b is None:
        return [None, "–"]
    if sa is None or sb is None:
        return [a - b, "no interval"]
    return [a - b, "within noise (intervals overlap)" if abs(a - b) <= Z * (sa + sb) else "beyond noise"]


def render_promotion(record: dict[str, Any] | None) -> str:
    """The promote step's decision: candidate against the model in service, with intervals."""
    if not record:
        return "<p>No promotion step in this run.</p>"
    who = escape(f"{record.get('model_name')}" + (f" version {record['version']}" if record.get("version") else ""))
    rows = [[role, _Raw(f'<span class="uri">{escape(str(m.get("uri")))}</span>'),
             _pm(m.get("accuracy"), m.get("accuracy_stderr")), m.get("pass_rate_mae")]
            for role, m in (("candidate", record.get("candidate")), ("current", record.get("current"))) if m]
    if not record.get("current"):
        rows.append(["current", "none (no model promoted yet)", None, None])
    return (f'<p>Decision: <b class="decision">{escape(str(record.get("decision")))}</b> for {who}: '
            f'{escape(str(record.get("reason", "")))} (margin {_fmt(record.get("margin"))}).</p>'
            + _table(["model", "uri", "accuracy", "meta MAE"], rows, "wrap"))


def render_timing(t: dict[str, Any]) -> str:
    rows = [[k, v["steps"], v["compute_s"], v["overhead_s"], v["compute_s"] + v["overhead_s"]]
            for k, v in (t.get("by_kind") or {}).items()]
    rows.append(["all", sum(r[1] for r in rows), t["compute_s"], t["overhead_s"], t["total_s"]])
    return _table(["step kind", "steps", "compute s", "overhead s", "total s"], rows)


def render_html(report: dict[str, Any], results: dict[str, Any], svgs: list[str] | None = None) -> str:
    rounds, eff, t = report["rounds"], report["efficiency"], report["timing"]
    evals = [[ck, bn, _pm(b["accuracy"], b.get("accuracy_stderr")), b["k"], b.get("meta_k") or b["k"], b["n_problems"],
              *(b["pass_at_k"].get(str(k)) for k in (1, b["k"])),
              _pm((b.get("meta") or {}).get("pass_rate_mae"), (b.get("meta") or {}).get("pass_rate_mae_stderr")),
              *((b.get("meta") or {}).get(m) for m in ("pass_rate_mae_constant", "pass_rate_mae_median", "spearman",
                                                       "length_in_range", "notion"))]
             for ck, bs in report["eval"].items() for bn, b in bs.items()]
    round_rows = [[b, r["round"] + 1, r["train_accuracy"], _pm(r["heldout_accuracy"], r.get("heldout_accuracy_stderr")),
                   r["rollout_tokens"], r["wall_s"], r["gated_prompts"], r["cutoff_samples"],
                   _pm(r["meta"]["pass_rate_mae"], r["meta"].get("pass_rate_mae_stderr"))]
                  for b, rows in rounds.items() for r in rows]
    css = ("body{font-family:sans-serif;margin:24px auto;max-width:1180px;padding:0 16px}"
           "table{border-collapse:collapse;margin:8px 0;max-width:100%}"
           "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
           "table.wrap td,table.kv td{text-align:left;overflow-wrap:anywhere}"
           "table.kv td:first-child{white-space:nowrap;overflow-wrap:normal}.charts{display:flex;flex-wrap:wrap;gap:12px}"
           "svg.chart{width:570px;max-width:100%;height:auto}")
    title = f"MASA run report: {escape(report['run']['name'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style></head><body>
<h1>{title}</h1>
<p>Branches: {escape(' vs '.join(report['run']['branches']))}; {report['run']['rounds']} rounds.
{speedup_sentence(eff, lambda x: f"<b>{x}</b>", escape)}{escape(_ceiling_note(eff))} Total {_fmt(t['total_s'])} s, of which overhead {_fmt(t['overhead_s'])} s.
Intervals are ± 1.96 standard errors (95%) where the evaluation measured them.</p>
<div class="charts">{''.join(render_charts(report, results) if svgs is None else svgs)}</div>
<h2>Benchmarks</h2>{_table(['checkpoint', 'benchmark', 'avg@k', 'k', 'meta k', 'problems', 'pass@1', 'pass@k', 'meta MAE',
                         "constant's MAE", 'MAE of median', 'spearman', 'length in range', 'notion'], evals)}
<p>The constant's MAE is what one pass rate for every problem (the observed rates' median) would score: a
meta MAE above it predicts worse than that constant.</p>
<h2>Differences between checkpoints</h2>{_table(['benchmark', 'checkpoints', 'Δ avg@k', 'avg@k: the difference is', 'Δ meta MAE', 'meta MAE: the difference is'],
                                                differences(report["eval"]), "wrap")}
<h2>Rounds</h2>{_table(['algorithm', 'round', 'train acc', 'held-out acc', 'rollout tokens', 'wall s', 'gated',
                      'cutoff', 'meta MAE'], round_rows)}
<h2>Efficiency</h2>{_table(['figure', 'value'], [[k, v] for k, v in eff.items()], "kv")}
<h2>Timing per step kind</h2>{render_timing(t)}
<h2>Promotion</h2>{render_promotion(report.get("promotion"))}
<h2>Checkpoints</h2>{_table(['checkpoint', 'uri'], [[k, v] for k, v in report['checkpoints'].items()], "wrap")}
</body></html>"""


def speedup_sentence(eff: dict[str, Any], bold=lambda x: x, esc=lambda x: x) -> str:
    """The speedups as one sentence: each figure, or "none" and why (the report's first line, in HTML with
    `bold`/`esc` set, and in the Markdown the Kubeflow UI and `masa run` show)."""
    basis = (" on the rounds' held-out check problems (as every point of the curves)"
             if eff.get("final_accuracy_basis") == "heldout-check" else "")
    figures = ", ".join(bold(f"{v:.2f}×") + f" in {what}" if (v := eff.get(key)) is not None else f"none in {what}"
                        for key, what in (("speedup_tokens", "rollout tokens"), ("speedup_wall", "wall time")))
    why = eff.get("speedup_tokens_why_null") or eff.get("speedup_wall_why_null")
    notes = "".join(f" ({n})" for n in (why, eff.get("speedup_note")) if n)
    return f"Speedup to GRPO's final held-out accuracy{esc(basis)}: {figures}{esc(notes)}."


def _ceiling_note(eff: dict[str, Any]) -> str:
    c, off = eff.get("speedup_tokens_ceiling"), eff.get("gating_why_off")
    return ((f" At equal learning per round, the first round's costs allow at most {c:.2f}× in tokens (gating"
             " exactly the prompts without GRPO signal, the meta path paid for); more means MASA-efficient"
             " learned more per round, or the held-out check's noise." if c is not None else "")
            + (f" Predictive gating never switched on: {off}." if off else ""))


def render_markdown(report: dict[str, Any]) -> str:
    eff, lines = report["efficiency"], [f"# MASA run report: {report['run']['name']}", ""]
    lines += [f"{speedup_sentence(eff, lambda x: f'**{x}**')} Tokens saved by gating: "
              f"{_fmt(eff['tokens_saved_gating'])}; by cutoff: {_fmt(eff['tokens_saved_cutoff'])}.{_ceiling_note(eff)}",
              "", "| checkpoint | benchmark | avg@k | pass@k | meta MAE | constant's MAE | MAE of median | spearman |",
              "|---|---|---|---|---|---|---|---|"]
    for ck, bs in report["eval"].items():
        for bn, b in bs.items():
            m = b.get("meta") or {}
            lines.append(f"| {ck} | {bn} | {_pm(b['accuracy'], b.get('accuracy_stderr'))} | "
                         f"{_fmt(b['pass_at_k'].get(str(b['k'])))} | "
                         f"{_pm(m.get('pass_rate_mae'), m.get('pass_rate_mae_stderr'))} | "
                         f"{_fmt(m.get('pass_rate_mae_constant'))} | "
                         f"{_fmt(m.get('pass_rate_mae_median'))} | {_fmt(m.get('spearman'))} |")
    if p := report.get("promotion"):
        lines += ["", f"Promotion of {p.get('model_name')}: **{p.get('decision')}** ({p.get('reason')})."]
    return "\n".join(lines) + "\n"
