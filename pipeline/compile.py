"""Compile to KFP IR YAML, submit a run, schedule recurring runs (the `kfp` client)."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from masa.config import RunConfig
from masa.pipeline.dag import build_pipeline, pipeline_name
from masa.pipeline.k8s import for_backend

log = logging.getLogger(__name__)


def compile_pipeline(cfg: RunConfig, out: str | Path, segment: int = 0,
                     backend: tuple[int, int] | None = None, *, scheduled: bool = False) -> Path:
    """One segment's run (`RunConfig.segments`) as KFP IR YAML at `out`; with `backend`, without what
    that KFP backend cannot read (`retarget`); `scheduled`: a recurring run's (`build_pipeline`)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg, segment, scheduled=scheduled), package_path=str(out))
    if backend is not None:
        for w in retarget(out, backend):
            log.warning(w)
    return out


def segment_paths(cfg: RunConfig, out: str | Path) -> list[Path]:
    """`out` for a one-run configuration, else `<stem>-partNN<suffix>` per segment."""
    out, n = Path(out), len(cfg.segments)
    return [out] if n == 1 else [out.with_name(f"{out.stem}-part{i + 1:02d}{out.suffix}") for i in range(n)]


def distinct_segments(cfg: RunConfig) -> list[int]:
    """The runs whose compiled shapes can differ: the first (no hand-over), a middle one, and the last two
    (the last may hold fewer rounds, and holds the benchmarks and the report). Runs in between compile
    like the second: same rounds, same tasks (`masa.config.run_tasks`)."""
    n = len(cfg.segments)
    return sorted({0, min(1, n - 1), max(n - 2, 0), n - 1})


def retarget(path: Path, backend: tuple[int, int]) -> list[str]:
    """Rewrite the IR's Kubernetes platform spec for an older backend; the warnings, one per field left
    out. Raises ValueError when that backend cannot run the pipeline at all."""
    import yaml

    spec, platform = yaml.safe_load_all(path.read_text())
    platform, warnings = for_backend(platform, backend)
    if warnings:
        path.write_text(yaml.safe_dump_all([spec, platform], sort_keys=True))
    return warnings


class ClusterError(RuntimeError):
    """The KFP API could not be reached or refused a call, or a followed run did not succeed: one line."""


@contextmanager
def _endpoint(host: str):
    """The SDK's failures (urllib3's, and the generated API client's with headers and body) as one
    ClusterError line naming the host and what it said, not a traceback of thirty frames."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as e:
        raise ClusterError(f"the KFP API at {host} answered {e.status} {e.reason}: {_api_message(e.body)}") from e
    except HTTPError as e:
        raise ClusterError(f"cannot reach the KFP API at {host}: {getattr(e, 'reason', None) or e}") from e


def _api_message(body) -> str:
    """A v2beta1 error's `message` (grpc-gateway's status JSON), else the body's first line."""
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return (str(body or "").strip().splitlines() or ["(no body)"])[0][:300]


def _client(host: str, namespace: str | None):
    import kfp

    # Credentials come from the environment (KF_PIPELINES_SA_TOKEN_PATH, cookies, ...), never flags.
    with warnings.catch_warnings():
        # kfp warns on every Client() that it needs a v2 backend; `masa preflight` / `--kfp-version`
        # check the backend the IR is compiled for, and the warning read as a fault to users
        warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline",
                                category=FutureWarning)
        return kfp.Client(host=host, namespace=namespace)


def submit(cfg: RunConfig, *, host: str, experiment: str, namespace: str | None = None,
           run_name: str | None = None, segment: int = 0, follow: bool = False,
           timeout_s: int = 14 * 24 * 3600, cache: bool = True,
           backend: tuple[int, int] | None = None) -> list[str]:
    """Create the run of one segment of this configuration; with `follow`, wait for each run to
    succeed and create the next segment's, to the last. Returns the run ids created.

    cache=False: KFP's cache key is parameters, input artifact names, image and command, so an image
    rebuilt under the same tag or data replaced behind the same URI would be served stale."""
    ids: list[str] = []
    with _endpoint(host):
        client = _client(host, namespace)
        for seg in range(segment, len(cfg.segments) if follow else segment + 1):
            if ids:  # the next segment starts from what the previous one left in the store
                state = _final_state(client.wait_for_run_completion(ids[-1], timeout=timeout_s))
                if state != "SUCCEEDED":
                    raise ClusterError(f"run {ids[-1]} ended {state}; resubmit with --segment {seg - 1} --follow")
            with tempfile.TemporaryDirectory() as d:
                package = compile_pipeline(cfg, Path(d) / "pipeline.yaml", seg, backend)
                run = client.create_run_from_pipeline_package(
                    str(package), arguments={}, run_name=run_name or pipeline_name(cfg, seg),
                    experiment_name=experiment, namespace=namespace, enable_caching=cache,
                    service_account=cfg.resources.service_account)
            ids.append(run.run_id)
    return ids


def _final_state(run) -> str:
    state = getattr(run, "state", None)
    return str(getattr(state, "value", state) or "UNKNOWN").upper()


def schedule(cfg: RunConfig, *, host: str, cron: str, experiment: str, job_name: str | None = None,
             namespace: str | None = None, cache: bool = True, backend: tuple[int, int] | None = None) -> str:
    """A recurring run (retraining): 6-field cron, at most one run at a time, no catch-up."""
    if len(cfg.segments) > 1:
        raise ValueError(f"a recurring run is one run, and this configuration needs {len(cfg.segments)} "
                         f"(docs/deploy.md, 'Bounded runs'): schedule fewer rounds (rounds <= {len(cfg.segments[0])})")
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--cron {cron!r}: KFP expects 6 fields (seconds minutes hours day month weekday), "
                         f"e.g. '0 0 3 * * *' for 03:00 daily")
    with _endpoint(host), tempfile.TemporaryDirectory() as d:
        client = _client(host, namespace)
        exp = client.create_experiment(name=experiment, namespace=namespace)
        package = compile_pipeline(cfg, Path(d) / "pipeline.yaml", 0, backend, scheduled=True)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name or f"masa-{cfg.name}-retrain",
            cron_expression=cron, max_concurrency=1, no_catchup=True, pipeline_package_path=str(package),
            enable_caching=cache, service_account=cfg.resources.service_account)
    return job.recurring_run_id
