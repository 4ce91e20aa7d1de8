"""The OpenTelemetry SDK side of `stgym.tracing` (imported only when tracing is configured):
an OTLP/HTTP (protobuf) exporter behind a BatchSpanProcessor that counts what it drops and shuts
down in bounded time. HTTP, not gRPC: the same spans, and half the SDK's set-up cost in every
traced process (importing the gRPC exporter and grpcio took ~0.15 CPU s, the HTTP one ~0.08 s;
docs/benchmarks.md, Tracing) — which a short training pays once per worker process."""
from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from stgym import tracing


def provider(attributes: dict, endpoint: str, ratio: float,
             stats: tracing.SpanStats) -> TracerProvider:
    """A TracerProvider: resource `attributes`, parent-based sampling at `ratio`, spans posted
    to `endpoint`/v1/traces (an OTLP/HTTP base URL, as OTEL_EXPORTER_OTLP_ENDPOINT), counted in
    `stats`."""
    result = TracerProvider(
        resource=Resource.create(attributes), sampler=ParentBased(TraceIdRatioBased(ratio)),
        shutdown_on_exit=False,  # tracing.shutdown at exit, with a bounded wait
    )
    exporter = CountingExporter(
        OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces",
                         timeout=tracing.EXPORT_TIMEOUT_S),
        stats,
    )
    result.add_span_processor(BoundedBatchProcessor(exporter, stats))
    return result


class CountingExporter:
    """Wraps a SpanExporter: counts what leaves the queue, what was exported, what failed."""

    def __init__(self, exporter, stats: tracing.SpanStats) -> None:
        self._exporter, self._stats = exporter, stats

    def export(self, spans) -> SpanExportResult:
        with self._stats.lock:
            self._stats.queued -= len(spans)
            self._stats.exporting += len(spans)
        result = self._exporter.export(spans)
        with self._stats.lock:
            self._stats.exporting -= len(spans)
            if result is SpanExportResult.SUCCESS:
                self._stats.exported += len(spans)
            else:
                self._stats.export_failed += len(spans)
        return result

    def shutdown(self, **kwargs) -> None:
        # OTLP/HTTP's shutdown takes no timeout: it ends the retries of an export in flight,
        # and BoundedBatchProcessor bounds the wait for the export thread.
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class BoundedBatchProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor (queue of tracing.MAX_QUEUE_SIZE) that counts the spans its full
    queue drops (it drops the oldest to take the new one) and shuts down within
    tracing.SHUTDOWN_TIMEOUT_S even when the endpoint does not answer."""

    def __init__(self, exporter: CountingExporter, stats: tracing.SpanStats) -> None:
        super().__init__(exporter, max_queue_size=tracing.MAX_QUEUE_SIZE,
                         schedule_delay_millis=tracing.SCHEDULE_DELAY_MS,
                         max_export_batch_size=tracing.MAX_EXPORT_BATCH_SIZE)
        self._stats = stats

    def on_end(self, span) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._stats.lock:
                if self._stats.queued >= tracing.MAX_QUEUE_SIZE:
                    self._stats.dropped_queue_full += 1
                else:
                    self._stats.queued += 1
        super().on_end(span)

    def shutdown(self) -> None:
        self._batch_processor.shutdown(timeout_millis=int(tracing.SHUTDOWN_TIMEOUT_S * 1000))
