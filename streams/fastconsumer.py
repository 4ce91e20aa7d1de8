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
import signal

from stgym import events as ev, settings as settings_module
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
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def on_signal() -> None:
            self.arm_shutdown_deadline()
            main.cancel()  # whatever the loop awaits (a write retrying, a fetch) ends here

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
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

        async def send(key, value, headers):
            return await producer.send(ev.TOPIC_EPISODES_DLQ, value, key=key, headers=headers)

        inflight = None  # (task finishing the previous batch, offsets to commit after it)
        try:
            await self.consumer.start()
            await producer.start()
            self.started = True
            log.info("stream worker %s (aiokafka) consuming %s", self.worker_id,
                     ", ".join(SOURCE_TOPICS))
            positions: dict = {}

            async def settle() -> None:
                """Wait for the in-flight batch to be durable, then commit its offsets."""
                nonlocal inflight
                if inflight is None:
                    return
                task, offsets = inflight
                await task
                inflight = None
                positions.update(offsets)
                try:
                    await self.consumer.commit(offsets)
                except KafkaError as error:
                    # A rebalance took these partitions away or Kafka is unreachable: whoever
                    # owns them next replays from the last committed offset, harmlessly.
                    log.warning("offset commit skipped (%s); the next owner replays", error)
                self._update_assignment_metrics(positions)

            # Pipelined: batch N+1 is fetched, validated and its rejects sent to the DLQ while
            # batch N is written; N's offsets are committed once N is durable, and N+1 is
            # written only after that.
            while True:
                try:
                    data = await self.consumer.getmany(timeout_ms=200,
                                                       max_records=self.batch_size)
                except KafkaError as error:  # the client reconnects by itself
                    log.warning("fetch failed (%s); retrying", error)
                    await asyncio.sleep(1.0)
                    continue
                batch = None
                if data:
                    records = [(tp.topic, tp.partition, m.offset, m.key, m.value)
                               for tp, messages in data.items() for m in messages]
                    batch = await self.prepare(records, send, [
                        m.headers for messages in data.values() for m in messages],
                        [(tp.topic, tp.partition, len(messages)) for tp, messages in data.items()])
                await settle()
                if batch is None:
                    self._update_assignment_metrics(positions)
                    continue
                inflight = (asyncio.ensure_future(self.finish(batch, send)),
                            {tp: messages[-1].offset + 1 for tp, messages in data.items()})
        finally:
            if inflight is not None:
                inflight[0].cancel()  # not committed, so its offsets are not either
            await producer.stop()
            await self.consumer.stop()

    def consume(self) -> int:
        try:
            asyncio.run(self._consume())
        except asyncio.CancelledError:  # SIGTERM/SIGINT: a requested stop
            log.info("stream worker %s stopped", self.worker_id)
        return 0
