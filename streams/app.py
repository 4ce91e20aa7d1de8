"""The Faust stream worker: Kafka -> validation -> PostgreSQL KPIs (+ DLQ) -> /metrics.

Correctness does not rest on Faust's exactly_once (see /work/shared/INFRA.md): the worker
consumes at least once. `stream.take_events` turns acks off and acks a batch only after the
agent body has finished with it; the body first sends rejected records to the DLQ and waits
for Kafka's acknowledgement, then writes the batch in ONE database transaction (episodes
upserted by event_id, only new rows added to the KPI rows) and only then returns. Faust
commits offsets of acked events, so after a SIGKILL the uncommitted tail is replayed and the
event_id upsert makes the replay harmless. Any unexpected error ends the process without
acking (os._exit), rather than letting a half-processed batch be acknowledged.

Cumulative state lives in the database (the KPI rows), not in Faust tables: it is recovered
by a restarted worker for free, and shared by all workers of the group.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket

import faust

from stgym import events as ev
from streams.metrics import KpiCollector, ProcessMetrics
from streams.pipeline import Processor, dlq_envelope, dlq_headers
from streams import web

log = logging.getLogger(__name__)
SOURCE_TOPICS = (ev.TOPIC_EPISODES, ev.TOPIC_TRAINING, ev.TOPIC_EXPERIMENTS)
PARTITIONS = 4


def ensure_topics(bootstrap: str, partitions: int = PARTITIONS, timeout_s: float = 30.0) -> None:
    """Create the source topics and the DLQ (idempotent) so workers can share partitions."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from stgym.errors import ServiceUnavailable

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stgym-stream-admin",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=10_000)
    except KafkaError as error:
        raise ServiceUnavailable(
            f"Kafka at {bootstrap} does not answer ({type(error).__name__}); "
            "start it with `make services-up`") from None
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1)
                  for t in (*SOURCE_TOPICS, ev.TOPIC_EPISODES_DLQ) if t not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


class StreamWorker:
    """One Faust worker process: app, agent, sink, metrics and the web endpoints."""

    def __init__(self, bus_url: str, db_url: str, web_port: int, worker_id: str = "0",
                 app_id: str = "stgym-stream", window_s: int = 60, batch_size: int = 2000,
                 batch_within_s: float = 0.2, service: str | None = None,
                 offset_reset: str = "earliest") -> None:
        from sinks.base import open_sink

        if not bus_url.startswith("kafka://"):
            from stgym.errors import UserError

            raise UserError(f"stgym stream needs a Kafka bus (kafka://HOST:PORT), got {bus_url!r}")
        self.bootstrap = bus_url[len("kafka://"):]
        self.worker_id = worker_id
        self.service = service or f"stgym-stream-{worker_id}"
        self.sink = open_sink(db_url, window_s=window_s)
        self.metrics = ProcessMetrics(self.service)
        # Only the owner of episodes partition 0 exports the (global) KPI series, so that
        # sum() over workers is exact; ownership moves with Kafka's partition assignment.
        self.exports_kpis = False
        self.metrics.registry.register(KpiCollector(self.sink, enabled=lambda: self.exports_kpis))
        self.processor = Processor(self.sink, self.metrics)
        self.batch_size = batch_size
        self.batch_within_s = batch_within_s
        self.web_port = web_port
        self.started = False
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sink")
        self.app = faust.App(
            app_id,
            broker=bus_url,
            store="memory://",
            web_enabled=False,
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=PARTITIONS,
            consumer_auto_offset_reset=offset_reset,
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            broker_commit_interval=1.0,
            broker_commit_every=self.batch_size,
            stream_buffer_maxsize=max(4 * batch_size, 4096),
            producer_acks=-1,
            producer_linger_ms=5,
            worker_redirect_stdouts=False,
        )
        self.source = self.app.topic(*SOURCE_TOPICS, value_type=bytes, key_type=bytes,
                                     value_serializer="raw", key_serializer="raw")
        self.dlq = self.app.topic(ev.TOPIC_EPISODES_DLQ, value_type=bytes, key_type=bytes,
                                  value_serializer="raw", key_serializer="raw")
        self.app.agent(self.source, name=f"{app_id}-kpi")(self._agent)
        self.app.timer(1.0)(self._update_lag)
        self._lag: dict = {}

    def ready(self) -> tuple[bool, dict]:
        kafka_ok = _kafka_reachable(self.bootstrap)
        db_ok = self.sink.ping()
        rebalancing = bool(getattr(self.app, "rebalancing", False))
        ok = kafka_ok and db_ok and self.started and not rebalancing
        return ok, {"kafka": kafka_ok, "database": db_ok, "recovered": self.started and not rebalancing,
                    "worker_id": self.worker_id, "exports_kpis": self.exports_kpis}

    async def _agent(self, stream) -> None:
        loop = asyncio.get_running_loop()
        self.started = True
        log.info("stream worker %s consuming %s", self.worker_id, ", ".join(SOURCE_TOPICS))
        async for events in stream.take_events(self.batch_size, within=self.batch_within_s):
            try:
                records = [(e.message.topic, e.message.partition, e.message.offset,
                            e.message.key, e.message.value) for e in events]
                batch = self.processor.parse(records)
                if batch.rejected:
                    futures = [
                        await self.app.producer.send(
                            ev.TOPIC_EPISODES_DLQ, r.key, dlq_envelope(r), None, None,
                            dlq_headers(r))
                        for r in batch.rejected
                    ]
                    await asyncio.gather(*futures)
                    log.warning("sent %d invalid record(s) to %s (first: %s)",
                                len(batch.rejected), ev.TOPIC_EPISODES_DLQ, batch.rejected[0].reason)
                result = await loop.run_in_executor(self.executor, self.processor.write, batch)
                log.debug("batch of %d records: %d new episodes, %d rejected", len(records),
                          len(result.new_episodes) if result else 0, len(batch.rejected))
                for e in events:
                    tp = e.message.tp
                    self._lag[tp] = e.message.offset
            except BaseException:  # never ack what was not written
                log.critical("unexpected error in the KPI agent; exiting without acknowledging",
                             exc_info=True)
                logging.shutdown()
                os._exit(70)

    async def _update_lag(self) -> None:
        consumer = self.app.consumer
        per_topic: dict[str, int] = {}
        try:
            assigned = consumer.assignment()
        except Exception:
            return
        self.exports_kpis = any(tp.topic == ev.TOPIC_EPISODES and tp.partition == 0
                                for tp in assigned)
        for tp in assigned:
            if tp.topic not in SOURCE_TOPICS:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = self._lag.get(tp)
            lag = high - (done + 1) if done is not None else high
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(lag, 0)
        for topic in SOURCE_TOPICS:
            self.metrics.consumer_lag.labels(topic=topic).set(per_topic.get(topic, 0))

    def run(self) -> int:
        """Blocks until SIGTERM/SIGINT; returns the exit code."""
        ensure_topics(self.bootstrap)
        self.sink.setup()
        server = web.serve(self.web_port, self.metrics.registry, self.ready, service=self.service)
        log.info("stream worker %s: /metrics /health /ready on 127.0.0.1:%d", self.worker_id,
                 self.web_port)
        worker = faust.Worker(self.app, loglevel=logging.getLogger().level or logging.INFO,
                              redirect_stdouts=False, quiet=True, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        finally:
            server.shutdown()
            self.sink.close()
        return 0
