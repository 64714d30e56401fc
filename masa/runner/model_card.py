"""The model card (README.md) of a promoted version: what it is, what it was trained on, how it scored."""

from __future__ import annotations

import json
from typing import Any

from masa.algo.promotion import Figures


def _interval(value: float | None, se: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" ± {1.96 * se:.4f}" if se is not None else "")


def model_card(name: str, record: dict[str, Any], overall: Figures) -> str:
    """Markdown: base model, data snapshot, preset and config, benchmarks with 95% intervals, calibration,
    run id and date (`record` as masa.steps.promote writes it)."""
    cfg = record["config"]
    lines = [f"# {name}", "", "Trained with MASA RL by masa-pipeline and promoted by its promote step.", "",
             f"- base model: `{record['base_model']}`",
             f"- training data: `{record['data']}` (snapshot `{record['data_snapshot']}`)",
             f"- run: `{record['run_id']}` (configuration `{cfg['name']}`, algorithm `{cfg['algorithm']['name']}`)",
             f"- promoted: {record['date']} — {record['reason']}", "",
             "## Benchmarks (avg@k, 95% interval)", "",
             # the constant's MAE: one pass rate (the observed median) for every problem; a meta MAE above
             # it predicts worse than that constant (masa.runner.evaluate.constant_mae)
             "| benchmark | k | accuracy | pass-rate MAE | the constant's MAE | Spearman |", "|---|---|---|---|---|---|"]
    for bench, r in record["results"]["benchmarks"].items():
        meta = r.get("meta") or {}
        rho = meta.get("spearman")
        lines.append(f"| {bench} | {r['k']} | {_interval(r['accuracy'], r.get('accuracy_stderr'))} | "
                     f"{_interval(meta.get('pass_rate_mae'), meta.get('pass_rate_mae_stderr'))} | "
                     f"{'n/a' if (c := meta.get('pass_rate_mae_constant')) is None else f'{c:.3f}'} | "
                     f"{'n/a' if rho is None else f'{rho:.3f}'} |")
    lines += ["", f"Overall: accuracy {_interval(overall.accuracy, overall.accuracy_stderr)}, calibration "
              f"(pass-rate MAE, lower is better) {_interval(overall.pass_rate_mae, overall.pass_rate_mae_stderr)}.",
              "", "## Configuration", "", "```json", json.dumps(cfg, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)
