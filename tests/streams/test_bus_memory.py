"""The memory bus: topic routing, per-group offsets, ordering, thread safety, URL parsing."""
import threading

import pytest

from stgym import events
from stgym.bus import BusRecord, MemoryBus, open_bus
from stgym.errors import UserError


def make_training(run_id="run-1", iteration=0):
    return events.TrainingEvent(
        event_id=events.new_event_id(), timestamp=events.utc_now(), experiment_id="exp",
        run_id=run_id, worker_id="w0", device_type="stt-pma", algorithm="cem",
        iteration=iteration, objective=-1.0, learning_rate=0.1, model_accuracy=0.5,
    )


def test_publish_routes_by_type_and_keys_by_run_id():
    bus = MemoryBus("routing")
    event = make_training(run_id="run-7")
    bus.publish(event)
    (record,) = bus.poll([events.TOPIC_TRAINING], group="g")
    assert record == BusRecord(events.TOPIC_TRAINING, 0, 0, b"run-7", events.encode(event))
    assert events.decode_for_topic(record.value, record.topic) == event
    assert bus.poll([events.TOPIC_EPISODES], group="g", timeout_s=0) == []


def test_groups_have_independent_offsets_and_order_is_kept():
    bus = MemoryBus("groups")
    for i in range(10):
        bus.publish(make_training(iteration=i))
    first = bus.poll([events.TOPIC_TRAINING], group="a", max_records=4)
    rest = bus.poll([events.TOPIC_TRAINING], group="a")
    everything = bus.poll([events.TOPIC_TRAINING], group="b")
    assert [r.offset for r in first] == [0, 1, 2, 3]
    assert [r.offset for r in rest] == list(range(4, 10))
    assert [r.offset for r in everything] == list(range(10))
    assert bus.poll([events.TOPIC_TRAINING], group="a", timeout_s=0) == []


def test_poll_waits_for_a_publish_from_another_thread():
    bus = MemoryBus("threads")
    publisher = threading.Timer(0.05, lambda: bus.publish_raw("t", None, b"x"))
    publisher.start()
    records = bus.poll(["t"], group="g", timeout_s=10)
    publisher.join()
    assert [r.value for r in records] == [b"x"]


def test_concurrent_publishers_lose_nothing():
    bus = MemoryBus("concurrent")

    def publish(worker):
        for i in range(500):
            bus.publish_raw("t", str(worker).encode(), f"{worker}:{i}".encode())

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = bus.records("t")
    assert sorted(r.offset for r in records) == list(range(2000))
    for worker in range(4):
        mine = [r.value for r in records if r.key == str(worker).encode()]
        assert mine == [f"{worker}:{i}".encode() for i in range(500)]


def test_urls_name_the_bus():
    assert open_bus("memory") is open_bus("memory://default")
    assert open_bus("memory://one") is open_bus("memory://one")
    assert open_bus("memory://one") is not open_bus("memory://two")
    with pytest.raises(UserError, match="expected 'memory'"):
        open_bus("rabbit://x")
    with pytest.raises(UserError):
        open_bus("kafka://")
