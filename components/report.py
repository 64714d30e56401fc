from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output


def report(config_json: str, base_eval: Input[Artifact], report_json: Output[Artifact], report_html: Output[HTML],
           report_md: Output[Markdown], metrics: Output[Metrics],
           grpo_eval: Input[Artifact] = None, masa_eval: Input[Artifact] = None,
           grpo_history: Input[Artifact] = None, masa_history: Input[Artifact] = None,
           promotion: Input[Artifact] = None):
    """The run report: accuracy per round, calibration, tokens saved, speedup (JSON, HTML, Markdown)."""
    from masa.config import config_from_json
    from masa.steps.report import build_report
    from masa.telemetry.stepmetrics import log_metrics

    def path(a):
        return a.path if a else None

    stats = build_report(config_from_json(config_json),
                         evals={"base": base_eval.path, "grpo": path(grpo_eval), "masa": path(masa_eval)},
                         histories={"grpo": path(grpo_history), "masa": path(masa_history)},
                         json_out=report_json.path, html_out=report_html.path, md_out=report_md.path,
                         promotion=path(promotion))
    log_metrics(metrics, stats, step="report")
