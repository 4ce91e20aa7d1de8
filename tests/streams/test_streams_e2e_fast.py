"""The aiokafka engine of `stgym stream` on the real Kafka and PostgreSQL: two workers, one
SIGKILLed mid-stream and restarted, malformed records to the DLQ, exact counts."""
import signal

import pytest

from sinks.factory import open_sink
from stgym.bus import open_bus
from streams import workload
import streamkit
from streams.workload import stored_count
from streamkit import TopicReader

pytestmark = pytest.mark.services


def test_aiokafka_engine_two_workers_sigkill_exact(kafka_bootstrap, postgres_url, unique_id,
                                                   tmp_path):
    ports = [workload.free_port(), workload.free_port()]
    bus_url = f"kafka://{kafka_bootstrap}"
    app_id = f"stgym-fast-{unique_id}"
    experiment = f"fast-{unique_id}"

    def start(i):
        return workload.start_worker(bus_url, postgres_url, ports[i], i, app_id,
                                    str(tmp_path / f"worker{i}.log"),
                                    extra=["--engine", "aiokafka", "--batch-size", "500",
                                           "--offset-reset", "latest"])

    workers = [start(0), start(1)]
    bus = open_bus(bus_url)
    sink = open_sink(postgres_url)
    dlq = None
    try:
        workload.wait_workers_ready(workers, ports, sink)
        streamkit.warm_up(bus, sink, unique_id)
        dlq = TopicReader(kafka_bootstrap)
        dlq_start = dlq.end_offsets()
        episodes = workload.make_episodes(8000, experiment, seed=3)
        bad = streamkit.malformed_records(120, seed=4, tag=unique_id)
        chunks = [(episodes[k:k + 200], [raw for raw, _ in bad[k // 200 * 3:k // 200 * 3 + 3]])
                  for k in range(0, len(episodes), 200)]
        chunks.append((episodes[:500], []))  # a producer retry: duplicates
        publisher = streamkit.BackgroundPublisher(bus, chunks, unique_id.encode(), 0.05).start()
        workload.wait_until(lambda: stored_count(sink, experiment) > 1500, 120, what="flowing")
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(30)
        workers[1] = start(1)
        assert publisher.join(180), publisher.errors
        workload.wait_until(lambda: stored_count(sink, experiment) >= 8000, 180, what="all stored")
        streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment),
                                     streamkit.ground_truth(episodes))

        found = streamkit.read_dlq(dlq, dlq_start, unique_id, len(bad))
        assert found == {raw: reason for raw, reason in bad}
        for i, proc in enumerate(workers):
            assert proc.poll() is None
            workload.wait_ready(ports[i], 120, proc)
    finally:
        workload.stop_all(workers, bus, sink, dlq)
