"""Traces (OpenTelemetry): spans around training, simulation, rewards and the stream batches.

    from stgym import tracing
    tracing.configure("stgym-train", worker_id="w0")   # once per process (the CLI does it)
    with tracing.span("iteration", iteration=3):
        ...

`configure` reads `settings.trace_endpoint` (an OTLP/HTTP base URL: on a bare machine the
collector, http://127.0.0.1:4318, which forwards to Jaeger). No endpoint: nothing is set up and
`span` returns a shared no-op context manager, so tracing costs nothing. With one, the SDK is
imported by the first span (or `start()`), not by `configure`: a process that makes none pays
nothing. Sampling is parent-based with `settings.trace_sample_ratio` (1.0 by default; README for
production). Every process is a `service.name` (stgym-train, stgym-stream, stgym-alerts, ...)
with resource attributes `host.name` and `stgym.worker_id`.

Export never blocks the traced code: spans go through a BatchSpanProcessor with a bounded queue
(the oldest span is dropped when it is full) and an export timeout; `stats()` counts spans
dropped on a full queue and spans whose export failed (`SpanDropCollector` exports both to
Prometheus as stgym_trace_spans_dropped_total{reason}), and shutdown at exit waits at most
`SHUTDOWN_TIMEOUT_S`.

Across Kafka the W3C trace context travels in record headers (`traceparent`): a producer sends
`headers()` with the FIRST record of each key (= partition) of a publish, the records after it
none, and a stream batch span links to the producers' spans with `links_from_headers(...)`
(links, not one span per episode: a batch holds thousands); a consumer's `OpenPublishes`
gives a headerless record the traceparent of the record of its (topic, partition, key) before
it. The ~70 header bytes on every record had cost the consumer more than the spans
(docs/benchmarks.md, Tracing).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import threading
from itertools import compress
from operator import itemgetter
from typing import Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
MAX_QUEUE_SIZE = 4096
MAX_EXPORT_BATCH_SIZE = 512
SCHEDULE_DELAY_MS = 1000
EXPORT_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 3.0
MAX_LINKS = 128  # the SDK's default span link limit

# configure() sets _pending, the first span the rest; while _tracer is None, nothing of
# OpenTelemetry is even imported.
_pending: tuple | None = None
_start_lock = threading.Lock()
_tracer = None
_provider = None
_propagator = None
_stats = None


class _NoSpan:
    """What span()/start_span() give when tracing is off: every method does nothing."""

    def set_attribute(self, key, value) -> None:
        pass

    def end(self) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NO_SPAN = _NoSpan()
_NOOP = contextlib.nullcontext(NO_SPAN)


class SpanStats:
    """Where this process's sampled spans are: queued, being exported, exported, dropped on a
    full queue, failed to export (each span is counted in exactly one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued = 0  # spans in the processor's queue (accepted, not yet handed to export)
        self.exporting = 0
        self.exported = 0
        self.dropped_queue_full = 0
        self.export_failed = 0

    def as_dict(self) -> dict:
        with self.lock:
            return {"queued": self.queued, "exporting": self.exporting, "exported": self.exported,
                    "dropped_queue_full": self.dropped_queue_full,
                    "export_failed": self.export_failed}


def configure(service: str, worker_id: str | None = None, endpoint: str | None = None,
              sample_ratio: float | None = None) -> bool:
    """Set up this process's tracer (idempotent: a second call changes nothing). Returns
    whether tracing is on. `endpoint` and `sample_ratio` default to the settings. The SDK is
    loaded by the first span (≈ 0.25 CPU s once), so a process that never makes one — `stgym
    train`'s parent of spawned workers, most commands — pays nothing."""
    global _pending
    if _pending is not None or _provider is not None:
        return True
    from stgym import settings as settings_module
    from stgym.errors import UserError

    settings = settings_module.load()
    endpoint = settings.trace_endpoint if endpoint is None else endpoint
    ratio = settings.trace_sample_ratio if sample_ratio is None else sample_ratio
    if not endpoint:
        return False
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"trace_sample_ratio must be in [0, 1], got {ratio}")
    _pending = (service, worker_id, endpoint, ratio)
    atexit.register(shutdown)
    return True


def start() -> bool:
    """Import and set up the SDK for the configuration now (the first span does it otherwise;
    a long-running service calls this at start, so its first batch does not wait for it).
    Returns whether tracing is on."""
    global _tracer, _provider, _propagator, _stats, _pending
    with _start_lock:
        if _tracer is not None or _pending is None:
            return _tracer is not None
        service, worker_id, endpoint, ratio = _pending
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from stgym import tracesdk

        attributes = {"service.name": service, "host.name": socket.gethostname()}
        if worker_id is not None:
            attributes["stgym.worker_id"] = worker_id
        _stats = SpanStats()
        provider = tracesdk.provider(attributes, endpoint, ratio, _stats)
        _propagator = TraceContextTextMapPropagator()
        # The exporter logs every retry; failures are counted in stats() instead.
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        _provider = provider
        _tracer = provider.get_tracer("stgym")
        _pending = None
        log.debug("tracing %s to %s (sample ratio %s)", service, endpoint, ratio)
        return True


def _active() -> bool:
    """Whether spans are made: the SDK is set up, or configured and loaded now."""
    return _tracer is not None or (_pending is not None and start())


def enabled() -> bool:
    return _tracer is not None or _pending is not None


def provider():
    """This process's TracerProvider (None when tracing is off), e.g. to add a span processor."""
    start()
    return _provider


def shutdown() -> None:
    """Export what is queued (waiting at most SHUTDOWN_TIMEOUT_S) and stop tracing."""
    global _tracer, _provider, _pending
    provider, _provider, _tracer, _pending = _provider, None, None, None
    if provider is not None:
        provider.shutdown()


def force_flush() -> None:
    if _provider is not None:
        _provider.force_flush(int(SHUTDOWN_TIMEOUT_S * 1000))


def stats() -> dict:
    """Span counts of this process (all zero when tracing is off)."""
    return _stats.as_dict() if _stats is not None else SpanStats().as_dict()


def span(name: str, **attributes):
    """A context manager: a span named `name` (child of the current one), current inside the
    block; the shared no-op when tracing is off."""
    if not _active():
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes or None)


def start_span(name: str, links: list | None = None, **attributes):
    """A span that is NOT made current (end it with `.end()`; make it current with
    `use(span)`): for a batch whose work spans several steps of an event loop."""
    if not _active():
        return NO_SPAN
    return _tracer.start_span(name, links=links, attributes=attributes or None)


def use(current_span):
    """Make `current_span` the current span for a block (it is not ended at the end)."""
    if current_span is NO_SPAN or _tracer is None:
        return _NOOP
    from opentelemetry import trace

    return trace.use_span(current_span, end_on_exit=False)


def headers() -> list[tuple[str, bytes]]:
    """W3C trace context of the current span as Kafka record headers ([] outside a span): for
    the first record of each key of a publish (the others go without; see OpenPublishes)."""
    if _tracer is None:
        return []
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def links_from_headers(record_headers: Iterable, positions: Sequence | None = None,
                       publishes: "OpenPublishes | None" = None,
                       runs: Iterable | None = None) -> list:
    """One Link per distinct producer span found in the records' `traceparent` headers
    (records of one producer batch share one). `record_headers` yields each record's headers
    (a sequence of (key, bytes) pairs, a dict, or None). With `publishes` (the consumer's
    OpenPublishes) and `positions` (each record's (topic, partition, offset, key, ...) tuple,
    in the order of `record_headers`; `runs` see OpenPublishes.traceparents), headerless
    records link to the publish they continue.
    At most MAX_LINKS (what the SDK's default SpanLimits keep)."""
    if not _active():
        return []
    from opentelemetry import trace

    if publishes is not None and positions is not None:
        values = publishes.traceparents(positions, record_headers, runs)
    else:
        values = _traceparents(record_headers)
    links = []
    for value in values:
        if not isinstance(value, bytes):  # a null (None) header value: no link, the batch goes on
            continue
        text = value.decode("ascii", "replace")
        context = trace.get_current_span(_propagator.extract({TRACEPARENT: text})).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context))
            if len(links) == MAX_LINKS:
                break
    return links


def _traceparents(record_headers: Iterable) -> set:
    """The distinct raw `traceparent` values of the records, deduplicated before any parsing:
    a stream batch of 2,000 records names a few dozen producer spans."""
    if not isinstance(record_headers, (list, tuple)):
        record_headers = list(record_headers)
    try:  # where stgym's producers put it: the first header (one C-speed pass over the batch)
        firsts = {headers_of_record[0] for headers_of_record in record_headers if headers_of_record}
        if all(key == TRACEPARENT for key, _ in firsts):
            return {value for _, value in firsts}
    except (KeyError, TypeError, ValueError):  # a dict, unhashable or not pairs
        pass
    values = {_traceparent_of(headers) for headers in filter(None, record_headers)}
    values.discard(None)
    return values


def _traceparent_of(headers_of_record) -> bytes | None:
    """The raw `traceparent` of one record's headers (pairs or a dict), None if it has none."""
    if not headers_of_record:
        return None
    pairs = headers_of_record.items() if isinstance(headers_of_record, dict) else headers_of_record
    try:
        value = next((v for k, v in pairs if k == TRACEPARENT), None)
    except (TypeError, ValueError):  # not (key, value) pairs: no link from this record
        return None
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


_KEY = itemgetter(3)


class OpenPublishes:
    """A consumer's memory of the publish each record of its batches belongs to. A producer
    sends the `traceparent` with the first record of each key of a publish only (all records
    of a key go to one partition, in order: the producers are idempotent), so a record without
    one continues the publish of the last traceparent this consumer saw under the same
    (topic, partition, key) — in this batch or an earlier one.

    That holds only while the consumer read the partition without a gap: when a batch's first
    offset of a partition is not the one after the last it saw (at its start, after a
    rebalance handed it the partition at another worker's committed offset, a seek), it
    forgets that partition's publishes. A headerless record whose publish began before the
    gap then gives no link (the batch span links what its records name) — never a wrong one.
    At most `max_keys` keys per partition are remembered (the least recently published go
    first; a partition rarely has more trainers writing to it at once)."""

    def __init__(self, max_keys: int = 256) -> None:
        self.max_keys = max_keys
        self._next: dict[tuple, int] = {}  # (topic, partition) -> the offset after the last seen
        self._open: dict[tuple, dict] = {}  # (topic, partition) -> {key: its publish's traceparent}

    def traceparents(self, positions: Sequence, record_headers: Iterable,
                     runs: Iterable | None = None) -> set:
        """The distinct raw traceparents of a batch's records, a headerless record's from the
        record before it of its (topic, partition, key). `positions`: each record's (topic,
        partition, offset, key, ...); `runs`: (topic, partition, count) of the batch's runs of
        records of one partition, in order (an engine that fetches per partition has them;
        found here otherwise). Whole-run passes at C speed; Python loops only over a run's
        distinct keys and its records that carry a header."""
        if not isinstance(record_headers, list):
            record_headers = list(record_headers)
        values = _traceparents(record_headers)
        if len(positions) != len(record_headers):
            return values
        start = 0
        for topic, partition, count in (_runs(positions) if runs is None else runs):
            end = start + count
            part = (topic, partition)
            publishes = self._open.get(part)
            if publishes is None or self._next.get(part) != positions[start][2]:
                publishes = self._open[part] = {}  # a gap: what came before it is unknown
            self._next[part] = positions[end - 1][2] + 1
            keys = list(map(_KEY, positions[start:end]))
            headers = record_headers[start:end]
            for key in publishes.keys() & set(keys):  # each key's first record here continues one?
                if _traceparent_of(headers[keys.index(key)]) is None:
                    values.add(publishes[key])
            for key, headers_of_record in zip(compress(keys, headers), filter(None, headers)):
                value = _traceparent_of(headers_of_record)
                if value is not None:
                    publishes.pop(key, None)  # re-inserted last: the most recent
                    publishes[key] = value
            while len(publishes) > self.max_keys:
                del publishes[next(iter(publishes))]
            start = end
        return values


def _runs(positions: Sequence) -> list[tuple]:
    """(topic, partition, count) of each run of consecutive records of one partition."""
    runs: list[list] = []
    for topic, partition, *_ in positions:
        if runs and runs[-1][0] == topic and runs[-1][1] == partition:
            runs[-1][2] += 1
        else:
            runs.append([topic, partition, 1])
    return [tuple(run) for run in runs]


class BatchTrace:
    """The spans of one stream batch: `process_batch`, linked to the producer spans named in
    its records' headers, and its steps as children. The batch span is not made current
    between steps (an engine works on the next batch meanwhile); end() ends it."""

    def __init__(self, record_headers: Iterable, records: int, positions: Sequence | None = None,
                 publishes: OpenPublishes | None = None, runs: Iterable | None = None,
                 **attributes) -> None:
        links = links_from_headers(record_headers, positions, publishes, runs)
        self.span = start_span("process_batch", links=links, records=records, **attributes)
        self._context = None
        if self.span is not NO_SPAN:
            from opentelemetry import trace

            self._context = trace.set_span_in_context(self.span)

    def step(self, name: str, **attributes):
        """A child span of the batch span, current inside the block."""
        if _tracer is None or self._context is None:
            return _NOOP
        return _tracer.start_as_current_span(name, context=self._context,
                                             attributes=attributes or None)

    def run(self, name: str, function, *args):
        """function(*args) inside the step `name` (for a step that runs in another thread)."""
        with self.step(name):
            return function(*args)

    def end(self) -> None:
        self.span.end()


def log_fields() -> dict[str, str]:
    """{"trace_id", "span_id"} of the current sampled span (what a log record carries), or {}."""
    if _tracer is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


class SpanDropCollector:
    """Prometheus collector: stgym_trace_spans_dropped_total{reason=queue_full|export_failed}."""

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily

        counts = stats()
        family = CounterMetricFamily(
            "stgym_trace_spans_dropped", "Spans not delivered to the trace collector",
            labels=["reason"],
        )
        family.add_metric(["queue_full"], counts["dropped_queue_full"])
        family.add_metric(["export_failed"], counts["export_failed"])
        yield family
