"""BaseWorker.process, the batch step both engines share, without Kafka: a DLQ that refuses
records is retried (each record acknowledged once) while /ready names the block, a failing
database write is retried with nothing lost, and the store's refusals reach the DLQ as
`unstorable` with the database's message."""
import asyncio

import pytest

from stgym import events as ev
from streams import worker as worker_module
from streams.pipeline import read_dlq_envelope
from streams.worker import BaseWorker
from streams import workload


@pytest.fixture
def worker(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_module, "RETRY_MIN_S", 0.01)
    monkeypatch.setattr(worker_module, "RETRY_MAX_S", 0.02)
    w = BaseWorker("kafka://127.0.0.1:1", f"sqlite:///{tmp_path / 'kpi.sqlite3'}", 0)
    w.sink.setup()
    yield w
    w.sink.close()
    w.executor.shutdown()


def records(events, bad=()):
    out = [(ev.TOPIC_EPISODES, 0, i, b"k", ev.encode(e)) for i, e in enumerate(events)]
    out += [(ev.TOPIC_EPISODES, 1, i, f"bad-{i}".encode(), raw) for i, raw in enumerate(bad)]
    return out


class FlakyDlq:
    """A DLQ producer whose first `failures` sends of each record fail."""

    def __init__(self, failures: int, worker: BaseWorker) -> None:
        self.failures = failures
        self.worker = worker
        self.attempts: dict[bytes, int] = {}
        self.acked: list[tuple[bytes, bytes]] = []
        self.blocked_seen: list[dict] = []

    async def send(self, key, value, headers):
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.blocked_seen.append(dict(self.worker.blocked))
        future = asyncio.get_running_loop().create_future()
        if self.attempts[key] <= self.failures:
            future.set_exception(ConnectionError("DLQ broker unreachable"))
        else:
            future.set_result(None)
            self.acked.append((key, value))
        return future


def test_a_refusing_dlq_is_retried_and_each_record_acknowledged_once(worker):
    episodes = workload.make_episodes(50, "exp-steps-dlq", seed=1)
    bad = [b"{not json", b'{"event_id": 1}']
    dlq = FlakyDlq(2, worker)
    result = asyncio.run(worker.process(records(episodes, bad), dlq.send))
    assert len(result.new_episodes) == 50
    assert sorted(k for k, _ in dlq.acked) == [b"bad-0", b"bad-1"]
    assert dlq.attempts == {b"bad-0": 3, b"bad-1": 3}
    assert any("dlq" in seen for seen in dlq.blocked_seen)  # /ready said why meanwhile
    assert worker.blocked == {}
    assert worker.metrics.dlq_records.labels(reason="bad_json")._value.get() == 1


def test_a_failing_database_write_is_retried_and_loses_nothing(worker, monkeypatch):
    episodes = workload.make_episodes(30, "exp-steps-db", seed=2)
    real = worker.sink.write_batch
    calls = []

    def flaky(batch):
        calls.append(dict(worker.blocked))
        if len(calls) <= 2:
            raise RuntimeError("database is being upgraded")
        return real(batch)

    monkeypatch.setattr(worker.sink, "write_batch", flaky)
    result = asyncio.run(worker.process(records(episodes), FlakyDlq(0, worker).send))
    assert len(calls) == 3 and "database" in calls[2]
    assert len(result.new_episodes) == 30 and worker.blocked == {}


def test_the_stores_refusals_reach_the_dlq_as_unstorable(worker):
    worker.sink.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON episodes WHEN NEW.run_id = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
    episodes = workload.make_episodes(40, "exp-steps-unstorable", seed=3,
                                      run_ids=["ok-a", "ok-b", "poison", "ok-c"])
    dlq = FlakyDlq(0, worker)
    result = asyncio.run(worker.process(records(episodes), dlq.send))
    poisoned = [e for e in episodes if e.run_id == "poison"]
    assert len(result.new_episodes) == 30 and len(dlq.acked) == len(poisoned) == 10
    envelopes = [read_dlq_envelope(value) for _, value in dlq.acked]
    assert {e["reason"] for e in envelopes} == {"unstorable"}
    assert all("poison refused" in e["detail"] for e in envelopes)
    assert sorted(e["original"] for e in envelopes) == sorted(ev.encode(e) for e in poisoned)
    assert worker.metrics.dlq_records.labels(reason="unstorable")._value.get() == 10
