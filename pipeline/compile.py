"""Compile to KFP IR YAML, submit a run, schedule recurring runs (the `kfp` client)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from masa.config import RunConfig
from masa.pipeline.dag import build_pipeline
from masa.pipeline.k8s import for_backend

log = logging.getLogger(__name__)


def compile_pipeline(cfg: RunConfig, out: str | Path, backend: tuple[int, int] | None = None) -> Path:
    """IR YAML at `out`; with `backend`, without what that KFP backend cannot read (`retarget`)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out))
    if backend is not None:
        for w in retarget(out, backend):
            log.warning(w)
    return out


def retarget(path: Path, backend: tuple[int, int]) -> list[str]:
    """Rewrite the IR's Kubernetes platform spec for an older backend; the warnings, one per field left
    out. Raises ValueError when that backend cannot run the pipeline at all."""
    import yaml

    spec, platform = yaml.safe_load_all(path.read_text())
    platform, warnings = for_backend(platform, backend)
    if warnings:
        path.write_text(yaml.safe_dump_all([spec, platform], sort_keys=True))
    return warnings


def _client(host: str, namespace: str | None):
    import kfp

    # Credentials come from the environment (KF_PIPELINES_SA_TOKEN_PATH, cookies, ...), never flags.
    return kfp.Client(host=host, namespace=namespace)


def submit(cfg: RunConfig, *, host: str, experiment: str, namespace: str | None = None,
           run_name: str | None = None, cache: bool = True, backend: tuple[int, int] | None = None) -> str:
    """Create a run of this configuration; returns the run id."""
    client = _client(host, namespace)
    with tempfile.TemporaryDirectory() as d:
        package = compile_pipeline(cfg, Path(d) / "pipeline.yaml", backend)
        # cache=False: KFP's cache key is parameters, input artifact names, image and command, so an image
        # rebuilt under the same tag or data replaced behind the same URI would be served stale
        run = client.create_run_from_pipeline_package(
            str(package), arguments={}, run_name=run_name or f"masa-{cfg.name}",
            experiment_name=experiment, namespace=namespace, enable_caching=cache,
            service_account=cfg.resources.service_account)
    return run.run_id


def schedule(cfg: RunConfig, *, host: str, cron: str, experiment: str, job_name: str | None = None,
             namespace: str | None = None, cache: bool = True, backend: tuple[int, int] | None = None) -> str:
    """A recurring run (retraining): 6-field cron, at most one run at a time, no catch-up."""
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--cron {cron!r}: KFP expects 6 fields (seconds minutes hours day month weekday), "
                         f"e.g. '0 0 3 * * *' for 03:00 daily")
    client = _client(host, namespace)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    with tempfile.TemporaryDirectory() as d:
        package = compile_pipeline(cfg, Path(d) / "pipeline.yaml", backend)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name or f"masa-{cfg.name}-retrain",
            cron_expression=cron, max_concurrency=1, no_catchup=True, pipeline_package_path=str(package),
            enable_caching=cache, service_account=cfg.resources.service_account)
    return job.recurring_run_id
