"""`Telemetry`: one process's metrics registry, fed from the steps' stats dicts, served and pushed.

    with step_telemetry("rollout", run=cfg.name, branch=branch, round_idx=r) as tel:
        stats = ...                      # the step's work, served at :$MASA_METRICS_PORT/metrics meanwhile
        tel.observe_rollout(r, stats)    # then pushed to $MASA_PUSHGATEWAY_URL (if set) on the way out

Each `Telemetry` owns its `CollectorRegistry` (never prometheus_client's global one), so two in one
process (tests, `masa run` executing several steps) never collide. A step whose stats say `reused`
(a run-once cache hit) did no work in this process: only `masa_step_reused` is set for it, so counters
never count the same tokens twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from masa.telemetry.export import MetricsServer, push, start_server
from masa.telemetry.metrics import BENCHMARK, ROLLOUT, SCORING, TRAIN, apply, build, number

log = logging.getLogger(__name__)

PORT_ENV = "MASA_METRICS_PORT"
ADDR_ENV = "MASA_METRICS_ADDR"
PUSHGATEWAY_ENV = "MASA_PUSHGATEWAY_URL"
PUSH_JOB = "masa"


class Telemetry:
    """Prometheus metrics of one run (and branch) in this process; see docs/metrics.md."""

    def __init__(self, run: str, branch: str | None = None, *, registry: CollectorRegistry | None = None,
                 process_metrics: bool = True):
        if not run:
            raise ValueError("Telemetry needs a run name (the `run` label of every series)")
        self.run, self.branch = run, branch or ""
        self.registry = registry if registry is not None else CollectorRegistry()
        if registry is None and process_metrics:  # process_* and python_* series, as a default registry has
            for collector in (ProcessCollector, PlatformCollector, GCCollector):
                collector(registry=self.registry)
        self._m = build(self.registry)
        self.server: MetricsServer | None = None

    def _base(self, round_idx: int | None) -> tuple[str, str, str]:
        return self.run, self.branch, "" if round_idx is None else str(round_idx)

    # ---------------------------------------------------------------- feeding

    def observe_reuse(self, step: str, round_idx: int | None, reused: bool) -> None:
        self._m["masa_step_reused"].labels(*self._base(round_idx), step).set(float(bool(reused)))

    def _fresh(self, step: str, round_idx: int | None, stats: Mapping[str, Any]) -> bool:
        if "reused" in stats:
            self.observe_reuse(step, round_idx, stats["reused"])
        return not stats.get("reused")

    def observe_rollout(self, round_idx: int, stats: Mapping[str, Any]) -> None:
        """A rollout step's stats (`RolloutStats` as a dict, plus `startup_s`, `heldout`, `reused`)."""
        if self._fresh("rollout", round_idx, stats):
            apply(self._m, ROLLOUT, self._base(round_idx), stats)

    def observe_scoring(self, round_idx: int, stats: Mapping[str, Any],
                        outcomes: Mapping[str, int] | None = None) -> None:
        """`score_shard`'s stats; verifier outcome counts from `outcomes` (`verifier_outcomes(scored)`)
        or, when the scoring step provides them, `stats["verifier_outcomes"]`."""
        if self._fresh("score", round_idx, stats):
            outcomes = outcomes if outcomes is not None else stats.get("verifier_outcomes") or {}
            apply(self._m, SCORING, self._base(round_idx), {**stats, "outcome": dict(outcomes)})

    def observe_train_step(self, round_idx: int, row: Mapping[str, Any]) -> None:
        """One optimizer step's metrics row (masa.train.metrics), as `train_round` hands it to on_step."""
        base = self._base(round_idx)
        self._m["masa_train_steps_total"].labels(*base).inc()
        apply(self._m, TRAIN, base, row)

    def train_hook(self, round_idx: int) -> Callable[[dict], None]:
        """`train_round(..., on_step=tel.train_hook(r))`."""
        return functools.partial(self.observe_train_step, round_idx)

    def observe_benchmark(self, checkpoint: str, results: Mapping[str, Any]) -> None:
        """`run_benchmarks`' result ({"benchmarks": {name: figures}}) for the checkpoint `checkpoint`."""
        pass_at_k = self._m["masa_benchmark_pass_at_k_ratio"]
        for name, figures in results.get("benchmarks", {}).items():
            base = (self.run, checkpoint, name)
            apply(self._m, BENCHMARK, base, figures)
            for k, v in (figures.get("pass_at_k") or {}).items():
                if (x := number(v)) is not None:
                    pass_at_k.labels(*base, str(k)).set(x)

    def observe_step(self, step: str, round_idx: int | None, *, seconds: float, success: bool) -> None:
        base = (*self._base(round_idx), step)
        self._m["masa_step_duration_seconds"].labels(*base).set(seconds)
        self._m["masa_step_success"].labels(*base).set(float(success))
        self._m["masa_step_last_completion_timestamp_seconds"].labels(*base).set(time.time())

    # ---------------------------------------------------------------- export

    def serve(self, port: int, addr: str = "0.0.0.0") -> int | None:
        """Serve /metrics on `port` (0 = disabled); the bound port, or None when off or the port is taken."""
        if port == 0:
            return None
        if self.server is not None:
            raise RuntimeError(f"already serving on port {self.server.port}")
        try:
            self.server = start_server(self.registry, port, addr)
        except OSError as e:
            log.warning("metrics endpoint on %s:%d not started: %s", addr, port, e, extra={"port": port})
            return None
        return self.server.port

    def push(self, gateway_url: str, job: str = PUSH_JOB, grouping_key: Mapping[str, str] | None = None) -> bool:
        """Push to a Pushgateway group {run, branch, **grouping_key}; False (and a warning) on failure."""
        key = {"run": self.run, "branch": self.branch, **(grouping_key or {})}
        return push(self.registry, gateway_url, job, {k: v for k, v in key.items() if v != ""})

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def env_port(environ: Mapping[str, str] | None = None) -> int:
    """MASA_METRICS_PORT (unset or empty = 0 = off); a malformed value is warned about and means off."""
    raw = (os.environ if environ is None else environ).get(PORT_ENV, "").strip()
    try:
        port = int(raw or 0)
        if not 0 <= port <= 65535:
            raise ValueError(raw)
    except ValueError:
        log.warning("%s=%r is not a port number (0..65535); metrics endpoint off", PORT_ENV, raw)
        return 0
    return port


@contextlib.contextmanager
def step_telemetry(step: str, run: str, branch: str | None = None, round_idx: int | None = None, *,
                   port: int | None = None, gateway_url: str | None = None,
                   grouping_key: Mapping[str, str] | None = None,
                   registry: CollectorRegistry | None = None) -> Iterator[Telemetry]:
    """Serve metrics during a step and push them when it ends (successful or not).

    `port` defaults to $MASA_METRICS_PORT (0/unset: no endpoint), `gateway_url` to $MASA_PUSHGATEWAY_URL
    (unset: no push). The push group is {job="masa", run, branch, round, step, **grouping_key}; give the
    benchmark step `grouping_key={"checkpoint": name}` so its checkpoints do not replace each other.
    """
    port = env_port() if port is None else port
    gateway_url = os.environ.get(PUSHGATEWAY_ENV, "").strip() if gateway_url is None else gateway_url
    tel = Telemetry(run, branch, registry=registry)
    tel.serve(port, os.environ.get(ADDR_ENV, "0.0.0.0"))
    t0, ok = time.monotonic(), False
    try:
        yield tel
        ok = True
    finally:
        tel.observe_step(step, round_idx, seconds=time.monotonic() - t0, success=ok)
        if gateway_url:
            key = {"round": "" if round_idx is None else str(round_idx), "step": step, **(grouping_key or {})}
            tel.push(gateway_url, grouping_key=key)
        tel.close()
