"""Compile to KFP IR YAML, submit a run, schedule recurring runs (the `kfp` client)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from masa.config import RunConfig
from masa.pipeline.dag import build_pipeline


def compile_pipeline(cfg: RunConfig, out: str | Path) -> Path:
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out))
    return out


def _client(host: str, namespace: str | None):
    import kfp

    # Credentials come from the environment (KF_PIPELINES_SA_TOKEN_PATH, cookies, ...), never flags.
    return kfp.Client(host=host, namespace=namespace)


def submit(cfg: RunConfig, *, host: str, experiment: str, namespace: str | None = None,
           run_name: str | None = None) -> str:
    """Create a run of this configuration; returns the run id."""
    client = _client(host, namespace)
    with tempfile.TemporaryDirectory() as d:
        package = compile_pipeline(cfg, Path(d) / "pipeline.yaml")
        run = client.create_run_from_pipeline_package(
            str(package), arguments={}, run_name=run_name or f"masa-{cfg.name}",
            experiment_name=experiment, namespace=namespace, enable_caching=True,
            service_account=cfg.resources.service_account)
    return run.run_id


def schedule(cfg: RunConfig, *, host: str, cron: str, experiment: str, job_name: str | None = None,
             namespace: str | None = None) -> str:
    """A recurring run (retraining): 6-field cron, at most one run at a time, no catch-up."""
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--cron {cron!r}: KFP expects 6 fields (seconds minutes hours day month weekday), "
                         f"e.g. '0 0 3 * * *' for 03:00 daily")
    client = _client(host, namespace)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    with tempfile.TemporaryDirectory() as d:
        package = compile_pipeline(cfg, Path(d) / "pipeline.yaml")
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name or f"masa-{cfg.name}-retrain",
            cron_expression=cron, max_concurrency=1, no_catchup=True, pipeline_package_path=str(package),
            enable_caching=True, service_account=cfg.resources.service_account)
    return job.recurring_run_id
