"""The Faust stream worker: Kafka -> validation -> PostgreSQL KPIs (+ DLQ) -> /metrics.

Correctness does not rest on Faust's exactly_once (faust-streaming has open reports of
duplicates and fenced producers on rebalance, issues #517, #323, #177, #136): the worker
consumes at least once. `stream.take_events` turns acks off and acks a batch only after the
agent body has finished with it; the body first sends rejected records to the DLQ and waits
for Kafka's acknowledgement, then writes the batch in ONE database transaction (episodes
upserted by event_id, only new rows added to the KPI rows) and only then returns. Faust
commits offsets of acked events, so after a SIGKILL the uncommitted tail is replayed and the
event_id upsert makes the replay harmless. take_events acks a batch even when the agent body
is interrupted (its `finally`), so the agent holds one extra reference on every message of a
batch until that batch is durable: an agent cancelled by SIGTERM mid-batch leaves it unacked.

Cumulative state lives in the database (the KPI rows), not in Faust tables: it is recovered
by a restarted worker for free, and shared by all workers of the group.
"""
from __future__ import annotations

import asyncio
import logging
import time
import types
from pathlib import Path

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from stgym import events as ev, settings as settings_module
from streams.worker import PARTITIONS, SOURCE_TOPICS, BaseWorker

log = logging.getLogger(__name__)


def broker_credentials() -> faust.SASLCredentials | None:
    """Faust's form of the settings' Kafka credentials (None: the loopback PLAINTEXT)."""
    options = settings_module.kafka_options()
    if not options:
        return None
    return faust.SASLCredentials(username=options["sasl_plain_username"],
                                 password=options["sasl_plain_password"],
                                 mechanism=options["sasl_mechanism"])


_SUSPEND_WAIT = asyncio.Event.wait.__code__  # Consumer.suspend_flow is an asyncio.Event


@types.coroutine
def _resume(coro, yielded):
    """The rest of a coroutine already stepped once that yielded `yielded`: what `await coro`
    would have done from there (futures passed up to the task, results and throws passed down)."""
    while True:
        try:
            sent = yield yielded
        except BaseException as error:  # e.g. the task cancelled: into the coroutine
            try:
                yielded = coro.throw(error)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class _Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer without four asyncio tasks per record.

    Its drain loop hands every record to the conductor through
    ``wait_first(callback(message), suspend_flow.wait())``: mode's wait_first makes a task of
    the callback, of the flow event and of the service's stopped and crashed events, then
    ``asyncio.wait``s them and cancels the losers — a third of a worker's CPU (py-spy,
    docs/benchmarks.md), while the callback (a put into the stream's buffer) almost always
    finishes without waiting. Here that call steps the callback once first: finished (the
    common case), nothing else is made; it waits (a full buffer) or the flow is suspended (a
    rebalance), mode's wait_first takes over as before with the rest of the callback, so a
    suspended flow still interrupts it.
    """

    async def wait_first(self, *coros, timeout=None) -> WaitResults:
        if (len(coros) != 2 or timeout is not None or self.suspend_flow.is_set()
                or getattr(coros[1], "cr_code", None) is not _SUSPEND_WAIT):
            return await super().wait_first(*coros, timeout=timeout)
        callback, flow = coros
        try:
            yielded = callback.send(None)
        except StopIteration as stop:
            flow.close()
            return WaitResults([callback], [stop.value], False)
        except BaseException:
            flow.close()
            raise

        async def rest():
            return await _resume(callback, yielded)

        return await super().wait_first(rest(), flow)


class _LeanMonitor(Monitor):
    """Faust's Monitor sensor without its per-record bookkeeping (counters, dictionaries and
    timestamps for every message and stream event: 3.7 % of a worker's busy CPU, py-spy),
    which nothing here reads (Faust's web views are off; the worker exports its own metrics).
    It keeps what Faust itself reads: when a partition's stream last took an event (the
    consumer's "stream stopped processing" check), committed and end offsets."""

    def on_message_in(self, tp, offset, message) -> None:
        pass

    def on_stream_event_in(self, tp, offset, stream, event) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass


class StreamWorker(BaseWorker):
    """One Faust worker process: the Faust app and its agent (the rest is BaseWorker's)."""

    engine = "faust"
    default_app_id = "stgym-stream"

    def __init__(self, *args, batch_within_s: float = 0.2, **kwargs) -> None:
        """BaseWorker's arguments, plus how long take_events waits to fill a batch."""
        super().__init__(*args, **kwargs)
        self.batch_within_s = batch_within_s
        batch_size, offset_reset = self.batch_size, self.offset_reset
        # Faust's own folder (it creates `<app id>-data` where the process started, else)
        datadir = Path(settings_module.load().data_dir) / "faust" / f"{self.app_id}-data"
        datadir.parent.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            self.app_id,
            broker=self.bus_url,
            datadir=str(datadir),
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
            broker_max_poll_records=batch_size,
            consumer_max_fetch_size=4 * 1024 * 1024,
            producer_acks=-1,
            producer_linger_ms=5,
            worker_redirect_stdouts=False,
            broker_credentials=broker_credentials(),
            Monitor=_LeanMonitor,
        )
        self.source = self.app.topic(*SOURCE_TOPICS, value_type=bytes, key_type=bytes,
                                     value_serializer="raw", key_serializer="raw")
        self.dlq = self.app.topic(ev.TOPIC_EPISODES_DLQ, value_type=bytes, key_type=bytes,
                                  value_serializer="raw", key_serializer="raw")
        self.app.agent(self.source, name=f"{self.app_id}-kpi")(self._agent)
        self.app.timer(1.0)(self._update_lag)
        self._lag: dict = {}

    def engine_ready(self) -> bool:
        return not bool(getattr(self.app, "rebalancing", False))

    async def _send_dlq(self, key, value, headers):
        return await self.app.producer.send(ev.TOPIC_EPISODES_DLQ, key, value, None, None, headers)

    async def _agent(self, stream) -> None:
        self.started = True
        log.info("stream worker %s consuming %s", self.worker_id, ", ".join(SOURCE_TOPICS))
        async for events in stream.take_events(self.batch_size, within=self.batch_within_s):
            for e in events:
                e.message.incref()  # held until the batch is durable (module docstring)
            records = [(e.message.topic, e.message.partition, e.message.offset,
                        e.message.key, e.message.value) for e in events]
            await self.process(records, self._send_dlq, [e.message.headers for e in events])
            for e in events:
                e.message.decref()
                self._lag[e.message.tp] = e.message.offset

    async def _update_lag(self) -> None:
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:
            return

        def lag_of(tp):
            high = consumer.highwater(tp)
            if high is None:
                return None
            done = self._lag.get(tp)
            return high - (done + 1) if done is not None else high

        self.update_assignment(assigned, lag_of)

    def consume(self) -> int:
        self.app.transport.Consumer = _Consumer  # before the app makes its consumer
        worker = _Worker(self.app, loglevel=logging.getLogger().level or logging.INFO,
                         redirect_stdouts=False, quiet=True, override_logging=False)
        worker.on_stop_requested = self.arm_shutdown_deadline
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0


class _Worker(faust.Worker):
    """faust.Worker that tells the stream worker when SIGTERM/SIGINT asked it to stop."""

    on_stop_requested = staticmethod(lambda: None)

    def _schedule_shutdown(self, signal) -> None:
        self.on_stop_requested()
        super()._schedule_shutdown(signal)
