"""Reading the dead-letter topic (`stgym dlq`): each refused record once.

Consumption is at least once, so a worker killed between sending a bad record's envelope and
committing its offsets re-reads that record after the restart and sends the envelope again.
The copies carry one `dlq_id` (streams/pipeline.py: sha256 of source topic, partition,
offset and the original's sha256); `unique` keeps the first of each id and counts the others.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from typing import Iterable, Iterator

from stgym import events as ev
from stgym import settings as settings_module
from stgym.bus import parse_bus_url
from stgym.errors import ServiceUnavailable, UserError
from streams.pipeline import read_dlq_envelope


@dataclasses.dataclass
class DlqRecord:
    """One refused record: its envelope (read_dlq_envelope) and how many copies the topic holds."""

    envelope: dict
    copies: int = 1


def unique(envelopes: Iterable[dict]) -> list[DlqRecord]:
    """One DlqRecord per dlq_id, in the order first seen (an envelope without an id, from a
    worker older than the id, stands for itself)."""
    records: dict[object, DlqRecord] = {}
    for position, envelope in enumerate(envelopes):
        key = envelope.get("dlq_id") or position
        if key in records:
            records[key].copies += 1
        else:
            records[key] = DlqRecord(envelope)
    return list(records.values())


def read_topic(bootstrap: str, topic: str = ev.TOPIC_EPISODES_DLQ,
               timeout_s: float = 10.0) -> Iterator[dict]:
    """Every envelope of `topic` from the beginning to its end offsets at the start (no
    consumer group: nothing is committed)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000),
                                 **settings_module.kafka_options())
    except KafkaError as error:
        raise ServiceUnavailable(f"Kafka at {bootstrap} does not answer"
                                 f" ({type(error).__name__})") from None
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = {tp: offset for tp, offset in consumer.end_offsets(assigned).items() if offset > 0}
        while end:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=2000)
            if not polled:
                raise ServiceUnavailable(f"reading {topic} from {bootstrap} stalled")
            for tp, messages in polled.items():
                for message in messages:
                    if tp in end and message.offset < end[tp]:
                        yield read_dlq_envelope(message.value)
                if tp in end and consumer.position(tp) >= end[tp]:
                    del end[tp]
    finally:
        consumer.close()


def run(args) -> int:
    """`stgym dlq` (parser in streams/commands.py)."""
    kind, bootstrap = parse_bus_url(args.bus or settings_module.load().kafka_url)
    if kind != "kafka":
        raise UserError(f"stgym dlq reads Kafka; got --bus {args.bus!r}")
    records = [r for r in unique(read_topic(bootstrap))
               if args.reason is None or r.envelope["reason"] == args.reason]
    shown = records if args.limit <= 0 else records[-args.limit:]
    for record in shown:
        e = record.envelope
        if args.json:
            out = {k: v for k, v in e.items() if k not in ("original", "original_prefix")}
            out["original_b64"] = (None if e["original"] is None
                                   else base64.b64encode(e["original"]).decode())
            out["copies"] = record.copies
            print(json.dumps(out))
            continue
        when = dt.datetime.fromtimestamp(e["rejected_at"], dt.timezone.utc)
        print(f"{when:%Y-%m-%d %H:%M:%S}Z {e['reason']:<14s} {e['source_topic']}"
              f"[{e['source_partition']}]@{e['source_offset']} {e['original_length']} B"
              f"{f' x{record.copies}' if record.copies > 1 else ''}  {e['detail'][:120]}")
    if not args.json:
        copies = sum(r.copies - 1 for r in records)
        print(f"{len(records)} refused record(s)"
              + (f", {copies} copies sent again after a restart not shown" if copies else "")
              + (f"; the last {len(shown)} shown (--limit)" if len(shown) < len(records) else ""))
    return 0
