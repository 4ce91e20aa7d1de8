"""What every stream-worker engine shares: topics, the sink, metrics, the KPI collector, the
Processor, the DLQ bookkeeping, /ready and the web endpoints around the engine's main loop.

An engine (streams.app = Faust, streams.fastconsumer = aiokafka) subclasses `BaseWorker`,
implements `consume()` (blocks until stopped, returns the exit code) and `engine_ready()`, and
holds nothing else. The rule both engines keep: rejected records reach the DLQ and the batch
is committed to the database in one transaction BEFORE the Kafka offsets are acknowledged.

No record and no outage ends a worker: `process()` retries each step (DLQ produce, database
write) with backoff until it succeeds, naming what blocks it on /ready and /health, and the
database bisects away what it refuses (to the DLQ as `unstorable`). Only SIGTERM/SIGINT end
it, within SHUTDOWN_GRACE_S, exit code 0, with nothing acknowledged that was not committed.

Traced (stgym.tracing): each batch is a `process_batch` span linked to the producer spans in
its records' `traceparent` headers, with `validate`, `dlq_publish` and `db_commit` inside.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import threading
import time

from stgym import events as ev, settings as settings_module
from stgym import httpserver, tracing
from streams.metrics import KpiCollector, ProcessMetrics
from streams.pipeline import Processor, dlq_envelope, dlq_headers, dlq_key

log = logging.getLogger(__name__)
SOURCE_TOPICS = (ev.TOPIC_EPISODES, ev.TOPIC_TRAINING, ev.TOPIC_EXPERIMENTS)
PARTITIONS = 4
RETRY_MIN_S, RETRY_MAX_S = 0.1, 5.0  # backoff of a step that cannot make progress
DLQ_ACK_TIMEOUT_S = 15.0  # one DLQ produce attempt (Kafka down: aiokafka would wait longer)
SHUTDOWN_GRACE_S = 8.0  # after SIGTERM/SIGINT the process ends by then, whatever hangs
WAIT_LOG_EVERY_S = 30.0  # a "waiting for Kafka/PostgreSQL" line at most this often


def ensure_topics(bootstrap: str, partitions: int = PARTITIONS, timeout_s: float = 30.0,
                  topics: tuple[str, ...] = (*SOURCE_TOPICS, ev.TOPIC_EPISODES_DLQ)) -> dict[str, int]:
    """Create the source topics and the DLQ (idempotent) with `partitions` partitions each, so
    that the workers of a group share the load; returns each topic's partition count.

    A topic that already exists with fewer partitions is grown to `partitions`, with a
    WARNING: a producer that publishes before any worker has run makes the broker auto-create
    its topic (with the broker's num.partitions, 1 unless configured), and then one worker of
    the group reads everything while the others idle. Growing changes which partition a record
    key goes to from then on: episodes and KPI rows do not depend on the order (event_id
    upserts, additive sums), but a training run in flight at that moment may have one
    iteration read after a later one, which the convergence fold skips as a straggler."""
    from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import InvalidPartitionsError, KafkaError, TopicAlreadyExistsError

    from stgym.errors import ServiceUnavailable

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stgym-stream-admin",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=10_000, **settings_module.kafka_options())
    except KafkaError as error:
        raise ServiceUnavailable(
            f"Kafka at {bootstrap} does not answer ({type(error).__name__}); "
            "start it with `make services-up`") from None
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1)
                  for t in topics if t not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another worker was first
                pass
        counts = dict.fromkeys(topics, partitions)
        old = [t for t in topics if t in existing]  # (describing [] would describe all)
        counts.update((d["name"], len(d["partitions"])) for d in (
            admin.describe_topics(old) if old else ()) if not d["error_code"])
        few = {t: n for t, n in counts.items() if n < partitions}
        if few:
            log.warning("topic(s) %s had fewer than %d partitions (auto-created by a producer"
                        " before any stream worker ran?): growing them to %d so that every"
                        " worker of a group gets a share; record keys map to new partitions"
                        " from now on", ", ".join(f"{t} ({n})" for t, n in sorted(few.items())),
                        partitions, partitions)
            try:
                admin.create_partitions({t: NewPartitions(partitions) for t in few})
            except InvalidPartitionsError:  # another worker grew them first
                pass
            counts.update(dict.fromkeys(few, partitions))
        return counts
    finally:
        admin.close()


def kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


class BaseWorker:
    """One stream worker process; the engine subclass supplies the consuming loop."""

    engine = "base"
    default_app_id = "stgym-stream"

    def __init__(self, bus_url: str, db_url: str, web_port: int, worker_id: str = "0",
                 app_id: str | None = None, batch_size: int = 2000,
                 service: str | None = None, offset_reset: str = "earliest") -> None:
        from sinks.factory import open_sink
        from stgym.errors import UserError

        if not bus_url.startswith("kafka://"):
            raise UserError(f"stgym stream needs a Kafka bus (kafka://HOST:PORT), got {bus_url!r}")
        self.bus_url = bus_url
        self.bootstrap = bus_url[len("kafka://"):]
        self.worker_id = worker_id
        self.app_id = app_id or self.default_app_id
        self.service = service or f"stgym-stream-{worker_id}"
        self.sink = open_sink(db_url)
        self.metrics = ProcessMetrics(self.service)
        # Only the owner of episodes partition 0 exports the (global) KPI series, so that
        # sum() over workers is exact; ownership moves with Kafka's partition assignment.
        self.exports_kpis = False
        self.metrics.registry.register(KpiCollector(self.sink, enabled=lambda: self.exports_kpis))
        self.processor = Processor(self.sink, self.metrics)
        self.metrics.registry.register(tracing.SpanDropCollector())
        tracing.start()  # the SDK's import (≈0.25 CPU s) now, not in the first batch
        self._traces: dict[int, tracing.BatchTrace] = {}  # id(batch) -> its spans
        self._publishes = tracing.OpenPublishes()  # a headerless record's producer span
        self.batch_size = batch_size
        self.web_port = web_port
        self.offset_reset = offset_reset
        self.started = False
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sink")
        self.blocked: dict[str, str] = {}  # step -> why it cannot make progress right now
        self._lag_labels: set[tuple[str, str]] = set()
        self.stopping = threading.Event()

    # -- what an engine provides -----------------------------------------------------------
    def engine_ready(self) -> bool:
        """True once the engine holds its final partition assignment."""
        raise NotImplementedError

    def consume(self) -> int:
        """Consume until SIGTERM/SIGINT; returns the exit code."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        kafka_ok = kafka_reachable(self.bootstrap)
        db_ok = self.sink.ping()
        recovered = self.started and self.engine_ready()
        blocked = self.blocked_reasons()
        ok = kafka_ok and db_ok and recovered and not blocked
        return ok, {"kafka": kafka_ok, "database": db_ok, "recovered": recovered,
                    "blocked": blocked, "worker_id": self.worker_id,
                    "exports_kpis": self.exports_kpis, "engine": self.engine}

    def health(self) -> dict:
        """What /health adds: why the worker cannot make progress now (empty when it can)."""
        return {"blocked": self.blocked_reasons(), "engine": self.engine}

    def blocked_reasons(self) -> dict[str, str]:
        reasons = dict(self.blocked)
        outage = getattr(self.sink, "outage", None)
        if outage:
            reasons["database"] = outage
        return reasons

    # -- one batch, both engines -----------------------------------------------------------
    async def process(self, records, send, headers=()):
        """Validate, DLQ the rejected, write (bisecting what the store refuses), DLQ the
        unstorable; returns the WriteResult once all of it is durable, so the caller may
        acknowledge. `send(key, value, headers)` is the engine's producer (awaits to a
        future of the broker's ack). Each step is retried with backoff until it succeeds;
        on shutdown the CancelledError propagates and the caller acknowledges nothing."""
        return await self.finish(await self.prepare(records, send, headers), send)

    async def prepare(self, records, send, headers=(), runs=None):
        """The first half of process(): validate, and the rejected records to the DLQ.
        `headers` yields each record's Kafka headers (for the batch span's links); `runs`, if
        the engine has them, (topic, partition, count) of its runs of one partition's records."""
        trace = tracing.BatchTrace(headers, len(records), records, self._publishes, runs)
        with trace.step("validate"):
            batch = self.processor.parse(records)
        if batch.rejected:
            with trace.step("dlq_publish", records=len(batch.rejected)):
                await self._to_dlq(send, batch.rejected)
        self._traces[id(batch)] = trace
        return batch

    async def finish(self, batch, send):
        """The second half of process(): write, and the unstorable events to the DLQ."""
        trace = self._traces.pop(id(batch))
        try:
            with trace.step("db_commit", events=len(batch)):
                result = await self._write(batch)
            unstorable = self.processor.unstorable(batch, result)
            if unstorable:
                with trace.step("dlq_publish", records=len(unstorable)):
                    await self._to_dlq(send, unstorable)
        finally:
            trace.end()
        self.metrics.last_commit_ts = time.time()
        return result

    async def _write(self, batch):
        loop = asyncio.get_running_loop()
        delay = RETRY_MIN_S
        while True:
            try:
                result = await loop.run_in_executor(self.executor, self.processor.write, batch)
                self.blocked.pop("database", None)
                return result
            except Exception as error:  # not a record's fault (those are bisected away)
                self.blocked["database"] = f"{type(error).__name__}: {error}"[:300]
                log.error("writing a batch of %d events failed (%s); nothing acknowledged,"
                          " retrying in %.1f s", len(batch), self.blocked["database"], delay,
                          exc_info=delay == RETRY_MIN_S)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)

    async def _to_dlq(self, send, rejected) -> None:
        """Every record of `rejected` acknowledged by the DLQ topic; a record is sent again
        only when its own send failed."""
        pending = list(rejected)
        delay = RETRY_MIN_S
        while pending:
            outcomes = await asyncio.gather(*(self._send_one(send, r) for r in pending),
                                            return_exceptions=True)
            failed = [(r, o) for r, o in zip(pending, outcomes) if isinstance(o, BaseException)]
            sent = [r for r, o in zip(pending, outcomes) if not isinstance(o, BaseException)]
            for record in sent:
                self.metrics.dlq_records.labels(reason=record.reason).inc()
            if sent:
                log.warning("sent %d invalid record(s) to %s (first: %s)", len(sent),
                            ev.TOPIC_EPISODES_DLQ, sent[0].reason)
            pending = [r for r, _ in failed]
            if pending:
                error = failed[0][1]
                self.blocked["dlq"] = f"{type(error).__name__}: {error}"[:300]
                log.error("the DLQ refuses %d record(s) (%s); nothing acknowledged, retrying"
                          " in %.1f s", len(pending), self.blocked["dlq"], delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
        self.blocked.pop("dlq", None)

    @staticmethod
    async def _send_one(send, rejected) -> None:
        future = await asyncio.wait_for(
            send(dlq_key(rejected), dlq_envelope(rejected), dlq_headers(rejected)),
            DLQ_ACK_TIMEOUT_S)
        await asyncio.wait_for(future, DLQ_ACK_TIMEOUT_S)

    # -- start and stop ---------------------------------------------------------------------
    def arm_shutdown_deadline(self) -> None:
        """From now on the process ends within SHUTDOWN_GRACE_S even if a client library
        hangs on a broker or database that is gone: exiting then is safe, since nothing
        uncommitted was acknowledged (exit code 0: a requested stop, not a crash)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.sink.interrupt()

        def force_exit() -> None:
            log.warning("stream worker %s still stopping after %.0f s; exiting now (nothing"
                        " uncommitted was acknowledged)", self.worker_id, SHUTDOWN_GRACE_S)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(SHUTDOWN_GRACE_S, force_exit)
        timer.daemon = True
        timer.start()

    def _wait_for_services(self) -> bool:
        """Topics and migrations, waiting (a log line now and then) while Kafka or the
        database is down; False if a stop was requested meanwhile."""
        from kafka.errors import KafkaError

        from stgym.errors import ServiceUnavailable

        for what, step in (("Kafka", lambda: ensure_topics(self.bootstrap, timeout_s=10.0)),
                           ("the database", self.sink.setup)):
            last_log = 0.0
            while not self.stopping.is_set():
                self.blocked.setdefault("starting", f"connecting to {what}")
                try:
                    step()
                    break
                except (ServiceUnavailable, KafkaError) as error:
                    self.blocked["starting"] = f"waiting for {what}: {error}"[:300]
                    if time.monotonic() - last_log > WAIT_LOG_EVERY_S:
                        log.warning("stream worker %s waits for %s (%s)", self.worker_id,
                                    what, error)
                        last_log = time.monotonic()
                    self.stopping.wait(2.0)
            self.blocked.pop("starting", None)
        return not self.stopping.is_set()

    def update_assignment(self, assigned, lag_of) -> None:
        """KPI export ownership and consumer_lag_records{topic, partition} of the assigned
        partitions; lag_of(tp) is the partition's lag or None when unknown."""
        self.exports_kpis = any(tp.topic == ev.TOPIC_EPISODES and tp.partition == 0
                                for tp in assigned)
        gauge = self.metrics.consumer_lag
        current = set()
        for tp in assigned:
            if tp.topic not in SOURCE_TOPICS:
                continue
            lag = lag_of(tp)
            if lag is not None:
                gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(max(lag, 0))
                current.add((tp.topic, str(tp.partition)))
        for labels in self._lag_labels - current:  # partitions that moved to another worker
            gauge.remove(*labels)
        self._lag_labels = current

    def run(self) -> int:
        """The web endpoints (at once: /ready says 503 while waiting), topics and migrations
        (waiting for Kafka and the database), then the engine's loop."""
        host = settings_module.load().host
        server = httpserver.serve(self.web_port, self.metrics.registry, self.ready, host=host,
                           service=self.service, health=self.health)
        previous = {sig: signal.signal(sig, lambda *_: self.arm_shutdown_deadline())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not self._wait_for_services():
                server.shutdown()
                return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stream worker %s (%s): /metrics /health /ready on %s:%d",
                 self.worker_id, self.engine, host, self.web_port)
        try:
            return self.consume()
        finally:
            server.shutdown()
            self.sink.close()
