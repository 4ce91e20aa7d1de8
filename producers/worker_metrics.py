"""A training worker's own /metrics: its resident memory, its simulator throughput, its CPU and
I/O, and the trace spans it could not deliver. Served by stgym.httpserver, like the stream
workers' (the same bearer-token check for peers other than loopback)."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class WorkerMetrics:
    """The worker's own /metrics (one registry per process on its own port)."""

    def __init__(self, port: int | None, host: str, labels: dict) -> None:
        self._server = None
        self._gauges = None
        if port is None:
            return
        import prometheus_client as prom
        import psutil

        from stgym import httpserver, tracing
        from stgym.procmetrics import ProcessResourceCollector

        registry = prom.CollectorRegistry()
        memory = prom.Gauge(
            "memory_usage_bytes", "Resident memory of the process", ["service"], registry=registry
        )
        rate = prom.Gauge(
            "simulation_steps_per_second", "Integrator steps per second of wall time",
            ["experiment", "device_type", "algorithm"], registry=registry,
        )
        self._gauges = (memory.labels(service="stgym-trainer"), rate.labels(**labels))
        registry.register(ProcessResourceCollector("stgym-trainer"))
        registry.register(tracing.SpanDropCollector())
        self._process = psutil.Process()
        try:
            self._server = httpserver.HttpServer(host, port, [httpserver.metrics_route(registry)],
                                                 name="stgym-trainer")
        except OSError as error:
            log.warning("trainer /metrics not served on %s:%d: %s", host, port, error)
        self.update(0.0)

    def update(self, steps_per_s: float) -> None:
        if self._gauges:
            memory, rate = self._gauges
            memory.set(self._process.memory_info().rss)
            rate.set(steps_per_s)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
