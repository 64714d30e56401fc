from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def data_filter(config_json: str, base_model: Input[Model], prompts: Output[Dataset], heldout: Output[Dataset],
                filter_report: Output[Markdown], dropped_rows: Output[Dataset], metrics: Output[Metrics]):
    """Validate, normalise, de-duplicate, decontaminate and length-filter the training problems."""
    from masa.config import config_from_json
    from masa.steps.prepare import filter_data
    from masa.telemetry.stepmetrics import log_metrics

    stats = filter_data(config_from_json(config_json), base_model=base_model.path, prompts_out=prompts.path,
                        heldout_out=heldout.path, report_out=filter_report.path, dropped_out=dropped_rows.path)
    prompts.metadata.update({"rows": stats["kept"]})
    log_metrics(metrics, stats, step="data_filter")
