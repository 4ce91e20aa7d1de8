"""`stgym stream --engine aiokafka`: the same processing on a plain aiokafka consumer.

Faust hands records one at a time through its conductor, channel and stream (≈ 4,000 records/s
per worker measured on this project's machine); this engine takes whole fetches
(`getmany(max_records=N)`), so the batch path (validate → DLQ → one DB transaction → commit
offsets) does all the work. Semantics are the same as the Faust agent's: offsets are committed
explicitly, only after the database transaction committed, so a crash replays at most the
uncommitted tail, which the event_id upsert makes harmless. A group must not mix engines
(Faust uses its own partition assignor): give each engine its own --app-id.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal

from stgym import events as ev
from streams import web
from streams.app import SOURCE_TOPICS, _kafka_reachable, ensure_topics
from streams.metrics import KpiCollector, ProcessMetrics
from streams.pipeline import Processor, dlq_envelope, dlq_headers

log = logging.getLogger(__name__)


class AiokafkaWorker:
    """One stream worker process on aiokafka (see the module docstring)."""

    def __init__(self, bus_url: str, db_url: str, web_port: int, worker_id: str = "0",
                 app_id: str = "stgym-stream-fast", window_s: int = 60, batch_size: int = 2000,
                 service: str | None = None, offset_reset: str = "earliest") -> None:
        from sinks.base import open_sink
        from stgym.errors import UserError

        if not bus_url.startswith("kafka://"):
            raise UserError(f"stgym stream needs a Kafka bus (kafka://HOST:PORT), got {bus_url!r}")
        self.bootstrap = bus_url[len("kafka://"):]
        self.worker_id = worker_id
        self.app_id = app_id
        self.service = service or f"stgym-stream-{worker_id}"
        self.sink = open_sink(db_url, window_s=window_s)
        self.metrics = ProcessMetrics(self.service)
        self.exports_kpis = False
        self.metrics.registry.register(KpiCollector(self.sink, enabled=lambda: self.exports_kpis))
        self.processor = Processor(self.sink, self.metrics)
        self.batch_size = batch_size
        self.web_port = web_port
        self.offset_reset = offset_reset
        self.consumer = None
        self.started = False
        self._stop: asyncio.Event | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sink")

    def ready(self) -> tuple[bool, dict]:
        kafka_ok = _kafka_reachable(self.bootstrap)
        db_ok = self.sink.ping()
        assigned = bool(self.consumer is not None and self.consumer.assignment())
        ok = kafka_ok and db_ok and self.started and assigned
        return ok, {"kafka": kafka_ok, "database": db_ok, "recovered": self.started and assigned,
                    "worker_id": self.worker_id, "exports_kpis": self.exports_kpis,
                    "engine": "aiokafka"}

    def _update_assignment_metrics(self, positions: dict) -> None:
        assigned = self.consumer.assignment()
        self.exports_kpis = any(tp.topic == ev.TOPIC_EPISODES and tp.partition == 0 for tp in assigned)
        per_topic: dict[str, int] = {}
        for tp in assigned:
            high = self.consumer.highwater(tp)
            position = positions.get(tp)
            if high is None or position is None:
                continue
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(high - position, 0)
        for topic in SOURCE_TOPICS:
            self.metrics.consumer_lag.labels(topic=topic).set(per_topic.get(topic, 0))

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.errors import CommitFailedError, KafkaError

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.consumer = AIOKafkaConsumer(
            *SOURCE_TOPICS, bootstrap_servers=self.bootstrap, group_id=self.app_id,
            client_id=f"{self.service}", enable_auto_commit=False,
            auto_offset_reset=self.offset_reset, max_poll_records=self.batch_size,
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    client_id=f"{self.service}-dlq")
        await self.consumer.start()
        await producer.start()
        self.started = True
        log.info("stream worker %s (aiokafka) consuming %s", self.worker_id, ", ".join(SOURCE_TOPICS))
        positions: dict = {}
        inflight = None  # (future of the sink write, offsets to commit after it)

        async def settle() -> None:
            """Wait for the in-flight batch's transaction, then commit its offsets."""
            nonlocal inflight
            if inflight is None:
                return
            future, offsets = inflight
            inflight = None
            await future
            positions.update(offsets)
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as error:
                # A rebalance took these partitions away: their new owner replays from the
                # last committed offset, and the event_id upsert makes that harmless.
                log.warning("offset commit skipped (%s); the new owner replays", error)
            self._update_assignment_metrics(positions)

        try:
            # Pipelined: batch N+1 is fetched, validated and its rejects sent to the DLQ while
            # batch N's transaction runs; N's offsets are committed once N has committed, and
            # N+1 is written only after that.
            while not self._stop.is_set():
                data = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                batch = None
                if data:
                    records = [(tp.topic, tp.partition, m.offset, m.key, m.value)
                               for tp, messages in data.items() for m in messages]
                    batch = self.processor.parse(records)
                    if batch.rejected:
                        futures = [await producer.send(ev.TOPIC_EPISODES_DLQ, dlq_envelope(r),
                                                       key=r.key, headers=dlq_headers(r))
                                   for r in batch.rejected]
                        await asyncio.gather(*futures)
                        log.warning("sent %d invalid record(s) to %s (first: %s)",
                                    len(batch.rejected), ev.TOPIC_EPISODES_DLQ,
                                    batch.rejected[0].reason)
                await settle()
                if batch is None:
                    self._update_assignment_metrics(positions)
                    continue
                inflight = (loop.run_in_executor(self.executor, self.processor.write, batch),
                            {tp: messages[-1].offset + 1 for tp, messages in data.items()})
            await settle()
        finally:
            await producer.stop()
            await self.consumer.stop()

    def run(self) -> int:
        ensure_topics(self.bootstrap)
        self.sink.setup()
        server = web.serve(self.web_port, self.metrics.registry, self.ready, service=self.service)
        log.info("stream worker %s: /metrics /health /ready on 127.0.0.1:%d", self.worker_id,
                 self.web_port)
        try:
            asyncio.run(self._consume())
        except BaseException:
            log.critical("stream worker %s failed; exiting without committing", self.worker_id,
                         exc_info=True)
            logging.shutdown()
            os._exit(70)
        finally:
            server.shutdown()
            self.sink.close()
        return 0
