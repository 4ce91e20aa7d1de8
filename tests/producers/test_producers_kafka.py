"""`stgym train --bus kafka://...` against the real broker: exactly the episodes it ran arrive,
also when a worker is SIGKILLed mid-run (its completed episodes are kept, none duplicated).

"Completed" (see producers/runner.py): an episode whose event id is in its worker's ledger —
written only after the broker acknowledged the episode's batch. A killed worker may leave at
most one unacknowledged batch (`--batch-size` episodes) on the bus beyond its ledger.
"""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from stgym import events
from stgym.bus import KafkaBus

pytestmark = pytest.mark.services


def consume_experiment(bootstrap: str, topic: str, experiment: str, since_ms: int) -> list:
    """Every event of `experiment` on `topic` published since `since_ms`, read up to the end
    offsets of the moment of the call (so the result is complete, not a timing guess)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.offsets_for_times({tp: since_ms for tp in partitions})
        for tp in partitions:
            consumer.seek(tp, starts[tp].offset if starts[tp] else ends[tp])
        found, deadline = [], time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "could not read the topic to its end in 60 s"
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:  # other tests put malformed records on the shared topics on purpose
                        event = events.decode_for_topic(record.value, topic)
                    except events.InvalidEvent:
                        continue
                    if event.experiment_id == experiment:
                        found.append(event)
        return found
    finally:
        consumer.close()


def stgym(*args: str) -> list[str]:
    return [sys.executable, "-m", "stgym.cli", "train", *args]


def ledger_ids(run_dir: Path, worker: int) -> list[str]:
    text = (run_dir / f"worker-{worker}.ledger").read_text()
    return text[: text.rfind("\n") + 1].split()


def test_kafka_bus_round_trip_keeps_key_order(kafka_bootstrap, unique_id):
    topic = f"stgym.test.bus.{unique_id}"
    bus = KafkaBus(kafka_bootstrap)
    try:
        for i in range(300):
            bus.publish_raw(topic, f"run-{i % 3}".encode(), str(i).encode())
        bus.flush()
        records, deadline = [], time.monotonic() + 60
        while len(records) < 300 and time.monotonic() < deadline:
            records += bus.poll([topic], group=f"g-{unique_id}", timeout_s=1.0)
    finally:
        bus.close()
    assert len(records) == 300
    for run in range(3):
        values = [int(r.value) for r in records if r.key == f"run-{run}".encode()]
        assert values == list(range(run, 300, 3))


@pytest.mark.parametrize("env_id, device_type", [
    ("SpinTorque-v0", "stt-pma"), ("SpinTorqueArray-v0", "stt-pma-array4"),
])
def test_train_delivers_exactly_the_episodes_it_ran(
    env_id, device_type, kafka_bootstrap, unique_id, tmp_path
):
    experiment = f"kafka-exact-{unique_id}"
    since_ms = int(time.time() * 1000) - 5000
    result = subprocess.run(
        stgym("--algo", "cem", "--env", env_id, "--episodes", "300", "--workers", "2",
              "--experiment", experiment,
              "--bus", f"kafka://{kafka_bootstrap}", "--run-dir", str(tmp_path),
              "--metrics-port", "-1", "--batch-size", "32", "--json"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    episodes = consume_experiment(kafka_bootstrap, events.TOPIC_EPISODES, experiment, since_ms)
    ids = [e.event_id for e in episodes]
    assert len(ids) == 300 and len(set(ids)) == 300
    assert {e.device_type for e in episodes} == {device_type}
    assert set(ids) == set(ledger_ids(tmp_path, 0)) | set(ledger_ids(tmp_path, 1))
    assert Counter(e.worker_id for e in episodes) == {"w0": 150, "w1": 150}
    for worker in ("w0", "w1"):
        mine = [e.episode for e in episodes if e.worker_id == worker]
        assert sorted(mine) == list(range(150))
    training = consume_experiment(kafka_bootstrap, events.TOPIC_TRAINING, experiment, since_ms)
    assert len(training) == 2 * 5  # ceil(150 / 32) iterations per worker
    statuses = Counter(
        e.status for e in consume_experiment(
            kafka_bootstrap, events.TOPIC_EXPERIMENTS, experiment, since_ms)
    )
    assert statuses == {"started": 2, "finished": 2}


def test_sigkilled_worker_loses_no_completed_episode_and_duplicates_none(
    kafka_bootstrap, unique_id, tmp_path
):
    experiment = f"kafka-kill-{unique_id}"
    since_ms = int(time.time() * 1000) - 5000
    batch_size, per_worker = 16, 1500
    process = subprocess.Popen(
        stgym("--algo", "random", "--episodes", str(2 * per_worker), "--workers", "2",
              "--experiment", experiment, "--bus", f"kafka://{kafka_bootstrap}",
              "--run-dir", str(tmp_path), "--metrics-port", "-1",
              "--batch-size", str(batch_size), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ledger = tmp_path / "worker-1.ledger"
        deadline = time.monotonic() + 120
        while not (ledger.exists() and len(ledger_ids(tmp_path, 1)) >= 4 * batch_size):
            assert time.monotonic() < deadline and process.poll() is None, "worker 1 never got going"
            time.sleep(0.02)
        os.kill(int((tmp_path / "worker-1.pid").read_text()), signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stderr[-2000:]
    assert '"failed_workers": [\n    "w1"\n  ]' in stdout

    episodes = consume_experiment(kafka_bootstrap, events.TOPIC_EPISODES, experiment, since_ms)
    counts = Counter(e.event_id for e in episodes)
    assert max(counts.values()) == 1  # nothing duplicated
    on_bus = {w: {e.event_id for e in episodes if e.worker_id == w} for w in ("w0", "w1")}
    completed = {0: set(ledger_ids(tmp_path, 0)), 1: set(ledger_ids(tmp_path, 1))}
    assert len(completed[0]) == per_worker and on_bus["w0"] == completed[0]
    assert 4 * batch_size <= len(completed[1]) < per_worker  # killed mid-run
    assert completed[1] <= on_bus["w1"]  # no completed episode lost
    assert len(on_bus["w1"] - completed[1]) <= batch_size  # at most the in-flight batch
    killed_episodes = sorted(e.episode for e in episodes if e.worker_id == "w1")
    assert killed_episodes == list(range(len(killed_episodes)))  # a gap-free prefix


def test_sigterm_stops_the_run_with_every_published_episode_flushed(
    kafka_bootstrap, unique_id, tmp_path
):
    experiment = f"kafka-term-{unique_id}"
    since_ms = int(time.time() * 1000) - 5000
    batch_size = 16
    process = subprocess.Popen(
        stgym("--algo", "random", "--episodes", "20000", "--workers", "2",
              "--experiment", experiment, "--bus", f"kafka://{kafka_bootstrap}",
              "--run-dir", str(tmp_path), "--metrics-port", "-1",
              "--batch-size", str(batch_size), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not all(
            (tmp_path / f"worker-{i}.ledger").exists() and len(ledger_ids(tmp_path, i)) >= 32
            for i in (0, 1)
        ):
            assert time.monotonic() < deadline and process.poll() is None, "workers never got going"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]

    episodes = consume_experiment(kafka_bootstrap, events.TOPIC_EPISODES, experiment, since_ms)
    assert max(Counter(e.event_id for e in episodes).values()) == 1
    for worker in (0, 1):
        completed = set(ledger_ids(tmp_path, worker))
        on_bus = {e.event_id for e in episodes if e.worker_id == f"w{worker}"}
        assert completed <= on_bus and len(on_bus - completed) <= batch_size
        assert len(completed) < 10000
    statuses = Counter(
        e.status for e in consume_experiment(
            kafka_bootstrap, events.TOPIC_EXPERIMENTS, experiment, since_ms)
    )
    assert statuses == {"started": 2, "failed": 2}
