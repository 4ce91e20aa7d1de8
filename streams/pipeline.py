"""The processing step shared by the Faust agents and the embedded (memory-bus) pipeline.

records -> kpi.parse_records -> rejected ones to the DLQ -> sink.write_batch (one transaction;
bisected when the store refuses some events) -> the refused ones to the DLQ -> metrics. The caller acknowledges its input (Kafka offsets, bus offsets) only after this
returns, so a crash anywhere before means a replay, which the sink makes harmless.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time

from stgym import events as ev
from stgym import kpi, tracing

log = logging.getLogger(__name__)


DLQ_FULL_ORIGINAL_MAX = 256 * 1024
"""Originals up to this size travel whole (base64: +33 %); larger ones as a prefix, their
length and sha256, so an envelope stays far under Kafka's 1 MiB default record limit
whatever was published to the source topic."""
DLQ_PREFIX_BYTES = 1024
DLQ_KEY_MAX = 1024  # a longer record key is replaced by its sha256 (hex)


def dlq_id(topic: str, partition: int, offset: int, original_sha256: str) -> str:
    """The envelope's id: sha256 of where the record came from and what it held. Consumption
    is at least once, so a worker killed before its offsets were committed re-reads a bad
    record and sends its envelope again: the copies share this id (only `rejected_at`
    differs), and readers of the DLQ keep one per id (streams/dlq.py, `stgym dlq`)."""
    source = f"{topic}\x00{partition}\x00{offset}\x00{original_sha256}".encode()
    return hashlib.sha256(source).hexdigest()


def dlq_envelope(rejected: kpi.Rejected) -> bytes:
    """The DLQ record value: its id, why it was refused, where it came from, its original
    bytes (or, beyond DLQ_FULL_ORIGINAL_MAX, their prefix, length and sha256)."""
    value = rejected.value
    digest = hashlib.sha256(value).hexdigest()
    envelope = {
        "dlq_id": dlq_id(rejected.topic, rejected.partition, rejected.offset, digest),
        "reason": rejected.reason,
        "detail": rejected.detail[:1000],
        "source_topic": rejected.topic,
        "source_partition": rejected.partition,
        "source_offset": rejected.offset,
        "original_length": len(value),
        "original_sha256": digest,
        "rejected_at": time.time(),
    }
    if len(value) <= DLQ_FULL_ORIGINAL_MAX:
        envelope["original_b64"] = base64.b64encode(value).decode()
    else:
        envelope["original_prefix_b64"] = base64.b64encode(value[:DLQ_PREFIX_BYTES]).decode()
    return json.dumps(envelope).encode()


def dlq_key(rejected: kpi.Rejected) -> bytes | None:
    key = rejected.key
    if key is not None and len(key) > DLQ_KEY_MAX:
        return hashlib.sha256(key).hexdigest().encode()
    return key


def dlq_headers(rejected: kpi.Rejected) -> list[tuple[str, bytes]]:
    return [("stgym-reason", rejected.reason.encode()),
            ("stgym-source-topic", rejected.topic.encode())]


def read_dlq_envelope(value: bytes) -> dict:
    """Inverse of dlq_envelope: `original` holds the original bytes when they travelled
    whole, else None and `original_prefix` holds their first DLQ_PREFIX_BYTES."""
    envelope = json.loads(value)
    whole = envelope.pop("original_b64", None)
    envelope["original"] = None if whole is None else base64.b64decode(whole)
    prefix = envelope.pop("original_prefix_b64", None)
    envelope["original_prefix"] = (envelope["original"][:DLQ_PREFIX_BYTES] if prefix is None
                                   else base64.b64decode(prefix))
    return envelope


class Processor:
    """Parse + write + count; thread-safe enough for one writer at a time."""

    def __init__(self, sink, metrics=None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.episodes_written = 0

    def parse(self, records) -> kpi.ParsedBatch:
        return kpi.parse_records(records)

    def write(self, batch: kpi.ParsedBatch):
        """The batch's events written (one transaction, bisected if the store refuses some);
        returns the WriteResult (None for an empty batch)."""
        start = time.perf_counter()
        result = self.sink.write_batch(batch) if len(batch) else None
        if self.metrics is not None:
            self.metrics.observe_batch(batch, result, time.perf_counter() - start)
        if result is not None:
            self.episodes_written += len(result.new_episodes)
        return result

    @staticmethod
    def unstorable(batch: kpi.ParsedBatch, result) -> list[kpi.Rejected]:
        """The events the store refused, as DLQ records (reason `unstorable`)."""
        if result is None:
            return []
        return [batch.rejected_event(event, "unstorable", message)
                for event, message in result.unstorable]


class EmbeddedPipeline:
    """Consumes a Bus (the memory bus in `stgym demo`) in a thread and feeds a Processor."""

    TOPICS = [ev.TOPIC_EPISODES, ev.TOPIC_TRAINING, ev.TOPIC_EXPERIMENTS]

    def __init__(self, bus, processor: Processor, group: str = "stgym-embedded",
                 max_records: int = 2000) -> None:
        self.bus = bus
        self.processor = processor
        self.group = group
        self.max_records = max_records
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._publishes = tracing.OpenPublishes()

    def step(self) -> int:
        """Poll once, process what came; returns the number of records handled."""
        records = self.bus.poll(self.TOPICS, self.group, max_records=self.max_records, timeout_s=0.1)
        if not records:
            return 0
        positions = [(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
        trace = tracing.BatchTrace([r.headers for r in records], len(records), positions,
                                   self._publishes)
        try:
            with trace.step("validate"):
                batch = self.processor.parse(positions)
            if batch.rejected:
                with trace.step("dlq_publish", records=len(batch.rejected)):
                    for rejected in batch.rejected:
                        self.bus.publish_raw(ev.TOPIC_EPISODES_DLQ, dlq_key(rejected),
                                             dlq_envelope(rejected))
            with trace.step("db_commit", events=len(batch)):
                result = self.processor.write(batch)
            for rejected in self.processor.unstorable(batch, result):
                self.bus.publish_raw(ev.TOPIC_EPISODES_DLQ, dlq_key(rejected),
                                     dlq_envelope(rejected))
        finally:
            trace.end()
        return len(records)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except BaseException as error:  # surfaced by drain()/stop()
            self.error = error
            log.exception("embedded pipeline stopped")

    def start(self) -> "EmbeddedPipeline":
        self._thread = threading.Thread(target=self._run, name="stgym-pipeline", daemon=True)
        self._thread.start()
        return self

    def drain(self) -> None:
        """Stop the thread, then process everything published so far."""
        self.stop()
        while self.step() > 0:
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.error is not None:
            raise self.error
