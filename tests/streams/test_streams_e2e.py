"""End to end on the real services: Kafka -> 2 Faust stream workers -> PostgreSQL -> Prometheus.

One run, bounded (< 3 min): publish episodes, training and experiment events; SIGKILL a worker
mid-stream and restart it; restart PostgreSQL mid-stream; publish 1,000 malformed records.
Then PostgreSQL must hold exactly the ground truth, the DLQ every malformed record with its
reason, both workers must be healthy, and Prometheus (really scraping the workers on the
stream ports) must report the same success_rate and training_episodes_total.
"""
import datetime as dt
import json
import math
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from sinks.factory import open_sink
from stgym import events as ev
from stgym import settings as settings_module
from stgym.bus import open_bus
from streams import workload
import streamkit
from streams.workload import stored_count
from streamkit import TopicReader

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]


def restart_postgres() -> None:
    """Stop and start the real PostgreSQL service (compose/bare scripts)."""
    script = REPO / "compose" / "bare" / "postgres.sh"
    subprocess.run(["bash", str(script), "down"], check=True, timeout=120)
    subprocess.run(["bash", str(script), "up"], check=True, timeout=180)


def prom_query(prometheus_url: str, query: str) -> list[dict]:
    status, body = workload.http_get(
        f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=5)
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def training_events(experiment: str, n: int) -> list[ev.Event]:
    now = ev.utc_now()
    out: list[ev.Event] = []
    for run in range(4):
        base = dict(experiment_id=experiment, run_id=f"{experiment}-run{run}", worker_id=f"w{run}",
                    device_type=workload.DEVICE_TYPES[run % 2], algorithm=workload.ALGORITHMS[(run // 2) % 2])
        out.append(ev.ExperimentEvent(event_id=ev.new_event_id(), timestamp=now, status="started", **base))
        for i in range(n):
            out.append(ev.TrainingEvent(
                event_id=ev.new_event_id(), timestamp=now + dt.timedelta(seconds=i), iteration=i,
                objective=-1.0 / (i + 1), learning_rate=0.05, model_accuracy=i / n, **base))
    return out


def test_two_workers_survive_sigkill_and_postgres_restart_exactly(
        kafka_bootstrap, postgres_url, prometheus_url, unique_id, tmp_path):
    settings = settings_module.load()
    ports = [settings.stream_web_port, settings.stream_web_port + 1]
    bus_url = f"kafka://{kafka_bootstrap}"
    app_id = f"stgym-e2e-{unique_id}"
    experiment = f"e2e-{unique_id}"
    logs = [str(tmp_path / f"worker{i}.log") for i in range(2)]

    def start(i):
        # Start at the end of the topics (their history belongs to other tests and runs);
        # warm_up() below fixes every partition's position before anything is published.
        return workload.start_worker(bus_url, postgres_url, ports[i], i, app_id, logs[i],
                                    extra=["--batch-size", "500", "--offset-reset", "latest"])

    workers = [start(0), start(1)]
    dlq = None
    bus = open_bus(bus_url)
    sink = open_sink(postgres_url)
    try:
        workload.wait_workers_ready(workers, ports, sink)
        streamkit.warm_up(bus, sink, unique_id)

        # Phase 0: the real trainer, 2 worker processes, into Kafka; the truth is what it sent.
        train_experiment = f"e2e-train-{unique_id}"
        episodes_topic = TopicReader(kafka_bootstrap, ev.TOPIC_EPISODES)
        train_start = episodes_topic.end_offsets()
        trained = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "train", "--algo", "cem", "--episodes", "240",
             "--workers", "2", "--experiment", train_experiment, "--seed", "5", "--bus", bus_url,
             "--run-dir", str(tmp_path / "train"), "--json"],
            capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert json.loads(trained.stdout)["episodes"] == 240
        sent = []
        episodes_topic.seek_to(train_start)
        deadline = time.monotonic() + 120
        while len(sent) < 240 and time.monotonic() < deadline:
            for records in episodes_topic.poll(timeout_ms=1000, max_records=2000).values():
                for record in records:
                    if train_experiment.encode() in record.value:
                        sent.append(ev.decode(record.value, ev.EpisodeEvent))
        episodes_topic.close()
        assert len({e.event_id for e in sent}) == 240
        workload.wait_until(lambda: stored_count(sink, train_experiment) == 240, 120,
                           what="trained episodes stored")
        streamkit.assert_matches_truth(sink.query_kpis(experiment=train_experiment),
                                     streamkit.ground_truth(sent))
        assert all(r["training_iterations"] > 0 and r["model_accuracy"] is not None
                   for r in sink.query_kpis(experiment=train_experiment))

        # Phase 1: episodes + training + experiment events, both workers consuming.
        phase1 = workload.make_episodes(3000, experiment, seed=1)
        extra = training_events(experiment, 10)
        for event in phase1 + extra:
            bus.publish(event)
        bus.flush(60)
        workload.wait_until(lambda: stored_count(sink, experiment) == 3000, 120, what="phase 1 stored")

        dlq = TopicReader(kafka_bootstrap)
        dlq_start = dlq.end_offsets()

        # Phase 2: a steady stream while one worker is SIGKILLed and PostgreSQL restarts.
        phase2 = workload.make_episodes(6000, experiment, seed=2,
                                       start=ev.utc_now() + dt.timedelta(seconds=5))
        bad = streamkit.malformed_records(1000, seed=3, tag=unique_id)
        chunks = [(phase2[k:k + 200], [raw for raw, _ in bad[k // 6:(k + 200) // 6]])
                  for k in range(0, len(phase2), 200)]
        chunks.append(([], [raw for raw, _ in bad[len(phase2) // 6:]]))
        publisher = streamkit.BackgroundPublisher(bus, chunks, unique_id.encode(), 0.1).start()
        workload.wait_until(lambda: stored_count(sink, experiment) > 3600, 120, what="phase 2 flowing")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(30)
        workers[0] = start(0)
        workload.wait_until(lambda: stored_count(sink, experiment) > 5000, 120,
                           what="progress after the SIGKILL")
        sink.close()
        restart_postgres()
        sink = open_sink(postgres_url)
        sink.setup()
        assert publisher.join(180), publisher.errors

        everything = phase1 + phase2
        workload.wait_until(lambda: stored_count(sink, experiment) >= 9000, 180, what="all stored")
        rows = sink.query_kpis(experiment=experiment)
        streamkit.assert_matches_truth(rows, streamkit.ground_truth(everything))
        assert sink._fetch("SELECT COUNT(*) FROM episodes WHERE experiment_id = %s",
                           [experiment])[0][0] == 9000
        for row in rows:
            assert row["training_iterations"] == 10
            assert row["objective"] == pytest.approx(-0.1) and row["model_accuracy"] == pytest.approx(0.9)
        assert sink.metric_snapshot()["experiments"].get("started", 0) >= 1

        # Every malformed record is in the DLQ with its reason (read from where the DLQ ended
        # before this test published anything malformed).
        found = streamkit.read_dlq(dlq, dlq_start, unique_id, len(bad))
        assert found == {raw: reason for raw, reason in bad}
        assert set(Counter(found.values())) == {"bad_json", "invalid_field", "out_of_range", "schema_version", "oversized"}

        # Both workers healthy and ready after all that.
        for i, proc in enumerate(workers):
            assert proc.poll() is None, f"worker {i} exited"
            workload.wait_ready(ports[i], 120, proc)
            assert workload.http_get(f"http://127.0.0.1:{ports[i]}/health")[0] == 200

        # Prometheus, scraping the workers, agrees with the ground truth.
        truth = streamkit.ground_truth(everything)

        def prometheus_agrees():
            got = {}
            for s in prom_query(prometheus_url, f'sum by (device_type, algorithm, outcome) '
                                                f'(training_episodes_total{{experiment="{experiment}"}})'):
                m = s["metric"]
                got[(m["device_type"], m["algorithm"], m["outcome"])] = float(s["value"][1])
            want = {}
            for (_, device, algo), row in truth.items():
                want[(device, algo, "success")] = row["successes"]
                want[(device, algo, "failure")] = row["episodes_total"] - row["successes"]
            if got != want:
                return False
            rates = {(s["metric"]["device_type"], s["metric"]["algorithm"]): float(s["value"][1])
                     for s in prom_query(prometheus_url, f'sum by (device_type, algorithm) '
                                                         f'(success_rate{{experiment="{experiment}"}})')}
            return len(rates) == len(truth) and all(
                math.isclose(rates[(device, algo)], row["success_rate"], rel_tol=1e-9)
                for (_, device, algo), row in truth.items())

        workload.wait_until(prometheus_agrees, 90, interval_s=1.0, what="Prometheus to match the store")
    finally:
        workload.stop_all(workers, bus, sink, dlq)
