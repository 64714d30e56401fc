"""Getting metrics out of a step: an HTTP /metrics endpoint to be scraped, and a Pushgateway push.

Long steps (rollout, train, benchmark) are scraped while they run (manifests/podmonitor.yaml); steps
that end before a scrape (score, or any step on a cache hit) push their registry once at the end.
Neither may fail a step: a port in use or a dead gateway is logged as a warning and the step goes on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


@dataclass
class MetricsServer:
    """A running /metrics endpoint (prometheus_client's WSGI server in a daemon thread)."""

    server: Any
    thread: threading.Thread
    port: int  # the bound port (the OS's pick when started on port 0)
    addr: str

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("", "0.0.0.0") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving, release the port, join the thread (idempotent)."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout_s)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_server(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve `registry` at http://addr:port/metrics; port 0 binds a free port (see `.port`).

    Raises OSError when the port is taken; `Telemetry.serve` turns that into a warning.
    """
    from prometheus_client import start_http_server

    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be in 0..65535, got {port}")
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread, int(server.server_port), addr)


def push(registry: CollectorRegistry, gateway_url: str, job: str, grouping_key: dict[str, str] | None = None,
         *, timeout_s: float = 10.0) -> bool:
    """PUT the registry to a Pushgateway group (job + grouping key), replacing that group's metrics.

    Returns False, with a warning logged, when the push fails for any reason (gateway down, HTTP
    error, bad URL): metrics are never worth failing a training step for.
    """
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(gateway_url, job=job, registry=registry, grouping_key=grouping_key, timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - any failure to push is only worth a warning
        log.warning("metrics push to %s failed: %s", gateway_url, e,
                    extra={"gateway": gateway_url, "job": job, "error": type(e).__name__})
        return False
    return True
