"""The message bus: one interface, an in-process memory bus and Kafka (kafka-python).

    from stgym.bus import open_bus
    bus = open_bus("memory")                      # or "memory://name", "kafka://127.0.0.1:9092"
    bus.publish(event)                            # EpisodeEvent/TrainingEvent/ExperimentEvent
    bus.publish(event, headers=[("traceparent", b"00-...")])   # record headers (trace context)
    bus.flush(); bus.close()
    records = bus.poll([TOPIC_EPISODES], group="g", max_records=500, timeout_s=0.1)

Every event goes to the topic of its type (`stgym.events.TOPIC_OF`) keyed by its `run_id`, so
the events of one run stay ordered within one partition.

The Kafka producer is idempotent with `acks=all` (the broker de-duplicates its retries), batches
with a short linger, and surfaces delivery errors: a failed send is raised as `DeliveryError` by
the next `publish` or by `flush`, which waits for every acknowledgement. A Kafka bus flushes on
interpreter exit and turns SIGTERM into `SystemExit` (only where SIGTERM still has its default
action), so `finally:` blocks and the exit flush run. Consumption in production is Faust's job;
`poll` here serves tests and tools.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import signal
import threading
import urllib.parse
import weakref
from collections import defaultdict

from stgym import events, settings as settings_module
from stgym.errors import ServiceUnavailable, UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BusRecord:
    """One consumed record; `value` is the raw JSON bytes (decode with `stgym.events.decode`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a published record (after the producer's own retries)."""


class Bus:
    """A publish/poll message bus; subclasses implement `publish_raw`, `flush`, `poll`, `close`."""

    url: str

    def publish(self, event: events.Event, headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send `event` to the topic of its type, keyed by its run_id, with record `headers`."""
        self.publish_raw(events.TOPIC_OF[type(event)], event.run_id.encode(), events.encode(event),
                         headers)

    def publish_raw(self, topic: str, key: bytes | None, value: bytes,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        raise NotImplementedError

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything published so far is delivered (raises DeliveryError)."""
        raise NotImplementedError

    def poll(
        self, topics: list[str], group: str, max_records: int = 500, timeout_s: float = 0.1
    ) -> list[BusRecord]:
        """Up to `max_records` records of `topics` not yet seen by consumer group `group`."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MemoryBus(Bus):
    """In-process, thread-safe bus: one partition per topic, offsets kept per consumer group."""

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        self._records: dict[str, list[BusRecord]] = defaultdict(list)
        self._offsets: dict[tuple[str, str], int] = defaultdict(int)
        self._changed = threading.Condition()

    def publish_raw(self, topic: str, key: bytes | None, value: bytes,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        with self._changed:
            records = self._records[topic]
            records.append(BusRecord(topic, 0, len(records), key, bytes(value), tuple(headers or ())))
            self._changed.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        """Nothing is ever pending in memory."""

    def poll(
        self, topics: list[str], group: str, max_records: int = 500, timeout_s: float = 0.1
    ) -> list[BusRecord]:
        with self._changed:
            self._changed.wait_for(lambda: self._pending(topics, group), timeout=timeout_s)
            batch: list[BusRecord] = []
            for topic in topics:
                start = self._offsets[(group, topic)]
                taken = self._records[topic][start : start + max_records - len(batch)]
                self._offsets[(group, topic)] = start + len(taken)
                batch.extend(taken)
            return batch

    def _pending(self, topics: list[str], group: str) -> bool:
        return any(len(self._records[t]) > self._offsets[(group, t)] for t in topics)

    def records(self, topic: str) -> list[BusRecord]:
        """Everything ever published to `topic` (for tests and the demo's summaries)."""
        with self._changed:
            return list(self._records[topic])

    def close(self) -> None:
        """The records stay readable: a memory bus lives as long as its process."""


class KafkaBus(Bus):
    """kafka-python producer (idempotent, acks=all, lingering batches) plus lazy consumers."""

    LINGER_MS = 5
    BATCH_BYTES = 256 * 1024

    def __init__(self, bootstrap: str, connect_timeout_s: float = 10.0) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.url = f"kafka://{bootstrap}"
        self.bootstrap = bootstrap
        self._consumers: dict[str, object] = {}
        self._errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="stgym-producer",
                enable_idempotence=True,
                acks="all",
                linger_ms=self.LINGER_MS,
                batch_size=self.BATCH_BYTES,
                max_in_flight_requests_per_connection=5,
                bootstrap_timeout_ms=int(connect_timeout_s * 1000),
                **settings_module.kafka_options(),
            )
        except KafkaError as error:
            raise ServiceUnavailable(
                f"Kafka at {bootstrap} does not answer ({type(error).__name__}); "
                "start it with `make services-up` or use --bus memory"
            ) from None
        _open_kafka_buses.add(self)
        _install_sigterm_exit()

    def publish_raw(self, topic: str, key: bytes | None, value: bytes,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        self._raise_delivery_errors()
        future = self._producer.send(topic, key=key, value=value, headers=headers or None)
        future.add_errback(self._record_error)

    def _record_error(self, error: BaseException) -> None:
        with self._errors_lock:
            self._errors.append(error)

    def _raise_delivery_errors(self) -> None:
        with self._errors_lock:
            errors, self._errors = self._errors, []
        if errors:
            raise DeliveryError(
                f"{len(errors)} record(s) not delivered to {self.url}: {errors[0]!r}"
            )

    def flush(self, timeout_s: float | None = None) -> None:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as error:
            raise DeliveryError(f"flush to {self.url} timed out: {error}") from None
        self._raise_delivery_errors()

    def poll(
        self, topics: list[str], group: str, max_records: int = 500, timeout_s: float = 0.1
    ) -> list[BusRecord]:
        consumer = self._consumers.get(group)
        if consumer is None:
            from kafka import KafkaConsumer

            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=True,
                **settings_module.kafka_options(),
            )
            self._consumers[group] = consumer
        if set(consumer.subscription() or ()) != set(topics):
            consumer.subscribe(topics)
        polled = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            BusRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
            for partition_records in polled.values()
            for r in partition_records
        ]

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Flush what is pending (delivery errors are logged, not raised) and disconnect."""
        if self not in _open_kafka_buses:
            return
        _open_kafka_buses.discard(self)
        try:
            self.flush(timeout_s)
        except DeliveryError as error:
            log.error("closing %s: %s", self.url, error)
        finally:
            self._producer.close(timeout=5)
            for consumer in self._consumers.values():
                consumer.close()
            self._consumers.clear()


_memory_buses: dict[str, MemoryBus] = {}
_memory_lock = threading.Lock()
_open_kafka_buses: weakref.WeakSet[KafkaBus] = weakref.WeakSet()


def parse_bus_url(url: str) -> tuple[str, str]:
    """("memory", NAME) or ("kafka", "HOST:PORT[,...]"); UserError for anything else."""
    if url == "memory":
        return "memory", "default"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "memory":
        return "memory", parsed.netloc or parsed.path.lstrip("/") or "default"
    if parsed.scheme == "kafka" and parsed.netloc:
        return "kafka", parsed.netloc
    raise UserError(f"bus URL {url!r}: expected 'memory', 'memory://NAME' or 'kafka://HOST:PORT'")


def open_bus(url: str) -> Bus:
    """The bus at `url`: "memory" (the process's default), "memory://NAME" (one per name in this
    process, shared by every caller) or "kafka://HOST:PORT[,HOST:PORT...]"."""
    kind, where = parse_bus_url(url)
    if kind == "memory":
        with _memory_lock:
            return _memory_buses.setdefault(where, MemoryBus(where))
    return KafkaBus(where)


def _flush_open_buses() -> None:
    for bus in list(_open_kafka_buses):
        bus.close()


def _install_sigterm_exit() -> None:
    """SIGTERM -> SystemExit in the main thread, so `finally` blocks and the atexit flush run."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


atexit.register(_flush_open_buses)
