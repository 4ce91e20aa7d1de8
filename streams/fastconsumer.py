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
import logging
import os
import signal

from stgym import events as ev, settings as settings_module
from streams.pipeline import dlq_envelope, dlq_headers
from streams.worker import SOURCE_TOPICS, BaseWorker

log = logging.getLogger(__name__)


class AiokafkaWorker(BaseWorker):
    """One stream worker process on aiokafka (see the module docstring)."""

    engine = "aiokafka"
    default_app_id = "stgym-stream-fast"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.consumer = None
        self._stop: asyncio.Event | None = None

    def engine_ready(self) -> bool:
        return bool(self.consumer is not None and self.consumer.assignment())

    def _update_assignment_metrics(self, positions: dict) -> None:
        def lag_of(tp):
            high = self.consumer.highwater(tp)
            position = positions.get(tp)
            return None if high is None or position is None else high - position

        self.update_assignment(self.consumer.assignment(), lag_of)

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
            max_partition_fetch_bytes=4 * 1024 * 1024, **settings_module.kafka_options(),
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    client_id=f"{self.service}-dlq",
                                    **settings_module.kafka_options())
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
                        self.log_rejected(batch.rejected)
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

    def consume(self) -> int:
        try:
            asyncio.run(self._consume())
        except BaseException:
            log.critical("stream worker %s failed; exiting without committing", self.worker_id,
                         exc_info=True)
            logging.shutdown()
            os._exit(70)
        return 0
