"""Test helpers for the stream pipeline: the exact ground truth of synthetic episodes,
malformed records with their expected DLQ reasons, topic and DLQ readers, a background
publisher. Synthetic episodes and worker processes come from streams.workload."""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid

from stgym import events as ev, settings as settings_module
from streams.workload import make_episodes, partition_keys


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def ground_truth(episodes) -> dict[tuple[str, str, str], dict]:
    """KPIs computed directly from the events (deduplicated by event id), independently of
    stgym.kpi, for comparing with what the pipeline stored."""
    unique = {e.event_id: e for e in episodes}.values()
    groups: dict = {}
    for e in unique:
        groups.setdefault((e.experiment_id, e.device_type, e.algorithm), []).append(e)
    truth = {}
    for key, group in groups.items():
        ok = [e for e in group if e.success]
        times = [e.switching_time_s for e in ok if e.switching_time_s is not None]
        truth[key] = {
            "episodes_total": len(group),
            "successes": len(ok),
            "success_rate": len(ok) / len(group),
            "energy_per_switch_j_mean": math.fsum(e.energy_j for e in ok) / len(ok) if ok else None,
            "switching_time_s_p50": _percentile(times, 0.5),
            "switching_time_s_p95": _percentile(times, 0.95),
            "switching_time_s_p99": _percentile(times, 0.99),
            "sim_steps_per_s": sum(e.sim_steps for e in group) / math.fsum(e.wall_time_s for e in group),
        }
    return truth


def assert_matches_truth(rows: list[dict], truth: dict, rel: float = 1e-9) -> None:
    """Exact counts, floats to `rel` relative, for every key of the truth and no other."""
    got = {(r["experiment_id"], r["device_type"], r["algorithm"]): r for r in rows}
    assert set(got) == set(truth), (sorted(got), sorted(truth))
    for key, expected in truth.items():
        row = got[key]
        for name, value in expected.items():
            if isinstance(value, int) or value is None:
                assert row[name] == value, (key, name, row[name], value)
            else:
                assert row[name] is not None and math.isclose(row[name], value, rel_tol=rel), (
                    key, name, row[name], value)


def malformed_records(n: int, seed: int = 0, tag: str = "x") -> list[tuple[bytes, str]]:
    """n invalid episode records (raw bytes, expected DLQ reason), cycling through the kinds;
    every one contains `tag` (to find them again in a shared DLQ topic)."""
    rng = random.Random(seed)
    good = json.loads(ev.encode(make_episodes(1, f"malformed-{tag}", seed)[0]))
    out = []
    for i in range(n):
        kind = i % 6
        record = dict(good, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        if kind == 0:
            out.append((f"{{not json {tag} {i}".encode(), "bad_json"))
        elif kind == 1:
            del record["energy_j"]
            out.append((json.dumps(record).encode(), "invalid_field"))
        elif kind == 2:
            record["episode"] = "seven"
            out.append((json.dumps(record).encode(), "invalid_field"))
        elif kind == 3:
            record["energy_j"] = -1.0 if (i // 6) % 2 else float("nan")
            raw = json.dumps(record).encode()  # json.dumps writes NaN, which msgspec refuses
            out.append((raw, "bad_json" if b"NaN" in raw else "out_of_range"))
        elif kind == 4:
            record["schema_version"] = 2
            out.append((json.dumps(record).encode(), "schema_version"))
        else:
            record["run_id"] = "x" * 100
            out.append((json.dumps(record).encode() + b" " * (ev.MAX_EVENT_BYTES + 1), "oversized"))
    return out


def warm_up(bus, sink, tag: str, timeout_s: float = 120.0, partitions: int = 4) -> None:
    """For workers started with --offset-reset latest: publish one episode, training and
    experiment event to every partition of the three topics, again and again, until the store
    has one of each — then every partition's position is fixed and nothing later is skipped."""
    experiment = f"warmup-{tag}"
    keys = partition_keys(tag, partitions)
    run_of = {p: key.decode() for p, key in keys.items()}
    deadline = time.monotonic() + timeout_s
    while True:
        now = ev.utc_now()
        for p, run_id in run_of.items():
            base = dict(event_id=ev.new_event_id(), timestamp=now, experiment_id=experiment,
                        run_id=run_id, worker_id="warmup", device_type="warmup", algorithm="warmup")
            episode = dict(base, episode=0, seed=0, success=True, energy_j=1e-13,
                           switching_time_s=1e-9, steps=1, total_reward=0.0, sim_steps=1,
                           wall_time_s=1e-3, sim_steps_per_s=1e3)
            bus.publish_raw(ev.TOPIC_EPISODES, keys[p], ev.encode(ev.EpisodeEvent(**episode)))
            bus.publish_raw(ev.TOPIC_TRAINING, keys[p], ev.encode(ev.TrainingEvent(
                **dict(base, event_id=ev.new_event_id()), iteration=0, objective=0.0,
                learning_rate=0.0, model_accuracy=0.0)))
            bus.publish_raw(ev.TOPIC_EXPERIMENTS, keys[p], ev.encode(ev.ExperimentEvent(
                **dict(base, event_id=ev.new_event_id()), status="started")))
        bus.flush(60)
        ph = sink.ph
        got = [
            {r[0] for r in sink._fetch(f"SELECT DISTINCT run_id FROM {table} WHERE experiment_id = {ph}",
                                       [experiment])}
            for table in ("episodes", "training_progress", "runs")
        ]
        if all(set(run_of.values()) <= runs for runs in got):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream workers did not consume the warm-up events in {timeout_s:.0f} s")
        time.sleep(1.0)


class TopicReader:
    """Reads a topic by explicit partition assignment (no consumer-group join)."""


    def __init__(self, bootstrap: str, topic: str = ev.TOPIC_EPISODES_DLQ) -> None:
        from kafka import KafkaConsumer, TopicPartition


        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      max_partition_fetch_bytes=8 * 1024 * 1024,
                                      **settings_module.kafka_options())
        partitions = self.consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} exists (stream workers create it)"
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)


    def end_offsets(self) -> dict:
        return self.consumer.end_offsets(self.partitions)


    def seek_to(self, offsets: dict) -> None:
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)


    def poll(self, **kwargs):
        return self.consumer.poll(**kwargs)


    def close(self) -> None:
        self.consumer.close()


def read_dlq(reader: TopicReader, start: dict, tag: str, expected: int,
             timeout_s: float = 120.0) -> dict[bytes, str]:
    """{dlq_identity(original): reason} of the DLQ envelopes after `start` whose original
    (or, for a large one, its prefix) contains `tag`, read until `expected` are found or
    time runs out."""
    from streams.pipeline import read_dlq_envelope


    found: dict[bytes, str] = {}
    deadline = time.monotonic() + timeout_s
    reader.seek_to(start)
    while len(found) < expected and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=1000, max_records=2000).values():
            for record in records:
                envelope = read_dlq_envelope(record.value)
                if tag.encode() in envelope["original_prefix"] or (
                        envelope["original"] is not None and tag.encode() in envelope["original"]):
                    identity = envelope["original"]
                    if identity is None:
                        identity = f"sha256:{envelope['original_sha256']}".encode()
                    found[identity] = envelope["reason"]
    return found


def dlq_identity(raw: bytes) -> bytes:
    """How read_dlq names a record: its bytes, or "sha256:<hex>" when the DLQ holds only
    a prefix of it."""
    from streams.pipeline import DLQ_FULL_ORIGINAL_MAX


    if len(raw) <= DLQ_FULL_ORIGINAL_MAX:
        return raw
    return f"sha256:{hashlib.sha256(raw).hexdigest()}".encode()


class BackgroundPublisher:
    """Publishes chunks of (events, raw episode records) in a thread, flushing and pausing
    after each chunk, as a steady stream; errors are collected in `errors`."""


    def __init__(self, bus, chunks: list[tuple[list, list[bytes]]], raw_key: bytes,
                 pause_s: float) -> None:
        import threading


        self.bus = bus
        self.chunks = chunks
        self.raw_key = raw_key
        self.pause_s = pause_s
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="stgym-test-publisher")


    def _run(self) -> None:
        try:
            for events, raws in self.chunks:
                for event in events:
                    self.bus.publish(event)
                for raw in raws:
                    self.bus.publish_raw(ev.TOPIC_EPISODES, self.raw_key, raw)
                self.bus.flush(60)
                time.sleep(self.pause_s)
        except Exception as error:  # reported by the test's assertion
            self.errors.append(error)


    def start(self) -> "BackgroundPublisher":
        self.thread.start()
        return self


    def join(self, timeout_s: float) -> bool:
        """True if it finished in time without an error."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive() and not self.errors
