"""`stgym train --algo ppo` through the real Kafka: a stream worker counts exactly the episodes
the agent ran (the ledger's), with their training progress, into PostgreSQL."""
import json
import subprocess
import sys

import pytest

from sinks.factory import open_sink
from stgym.bus import open_bus
from streams import workload
import streamkit

pytestmark = pytest.mark.services


def test_short_ppo_run_is_counted_exactly_by_a_stream_worker(kafka_bootstrap, postgres_url,
                                                             unique_id, tmp_path):
    port, bus_url = workload.free_port(), f"kafka://{kafka_bootstrap}"
    experiment = f"ppo-kafka-{unique_id}"
    worker = workload.start_worker(bus_url, postgres_url, port, 0, f"stgym-rl-{unique_id}",
                                  str(tmp_path / "stream.log"),
                                  extra=["--engine", "aiokafka", "--offset-reset", "latest"])
    bus, sink = open_bus(bus_url), open_sink(postgres_url)
    try:
        workload.wait_workers_ready([worker], [port], sink)
        streamkit.warm_up(bus, sink, unique_id)
        result = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "train", "--algo", "ppo", "--env",
             "SpinTorque-v1", "--episodes", "150", "--batch-size", "50", "--experiment",
             experiment, "--bus", bus_url, "--run-dir", str(tmp_path / "run"),
             "--metrics-port", "-1", "--json"],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout)
        ledger = (tmp_path / "run" / "worker-0.ledger").read_text().split()
        assert len(ledger) == len(set(ledger)) == 150
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= 150, 120,
                           what="150 episodes stored")
        ph = sink.ph
        stored = {r[0] for r in sink._fetch(
            f"SELECT event_id FROM episodes WHERE experiment_id = {ph}", [experiment])}
        assert stored == set(ledger) and workload.stored_count(sink, experiment) == 150
        (kpis,) = sink.query_kpis(experiment=experiment)
        assert kpis["algorithm"] == "ppo" and kpis["success_rate"] == pytest.approx(
            summary["success_rate"])
        iterations = sink._fetch(
            f"SELECT COUNT(*) FROM training_progress WHERE experiment_id = {ph}", [experiment])
        assert iterations[0][0] == 3  # one per batch of 50
        assert worker.poll() is None
    finally:
        workload.stop_all([worker], bus, sink)
