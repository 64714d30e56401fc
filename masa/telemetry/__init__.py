"""Observability of the pipeline's steps: Prometheus metrics (served and pushed), JSON logs, progress bars.

At the engines/storage level: imports prometheus_client, tqdm and masa.algo; never masa.steps,
masa.components or masa.pipeline (they call into this package). docs/metrics.md lists every metric.
"""

from masa.telemetry.export import MetricsServer, push, start_server
from masa.telemetry.logs import bind, configure_logging
from masa.telemetry.metrics import ALL as METRICS
from masa.telemetry.outcomes import count_outcomes, verifier_outcomes
from masa.telemetry.progress import progress
from masa.telemetry.telemetry import Telemetry, env_port, step_telemetry

__all__ = [
    "METRICS", "MetricsServer", "Telemetry", "bind", "configure_logging", "count_outcomes", "env_port", "progress",
    "push", "start_server", "step_telemetry", "verifier_outcomes",
]
