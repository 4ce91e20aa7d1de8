"""The embedded pipeline (memory bus -> aggregation -> SQLite), DLQ envelopes, /metrics /health /ready."""
import json
import math
import os
import re

import pytest

from sinks.factory import open_sink
from stgym import events as ev
from stgym import httpserver
from stgym.bus import open_bus
from streams import workload
import streamkit
from streams.metrics import KpiCollector, ProcessMetrics, gpu_reader
from streams.pipeline import EmbeddedPipeline, Processor, read_dlq_envelope


@pytest.fixture
def sink(tmp_path):
    s = open_sink(f"sqlite:///{tmp_path / 'kpi.sqlite3'}")
    s.setup()
    yield s
    s.close()


def scrape(port):
    status, body = workload.http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_embedded_pipeline_exact_kpis_dlq_and_metrics(sink, unique_id):
    bus = open_bus(f"memory://pipeline-{unique_id}")
    metrics = ProcessMetrics("stgym-test")
    metrics.registry.register(KpiCollector(sink, cache_s=0.0))
    pipeline = EmbeddedPipeline(bus, Processor(sink, metrics), group=f"g-{unique_id}").start()
    episodes = workload.make_episodes(1500, f"exp-{unique_id}", seed=21)
    bad = streamkit.malformed_records(120, seed=2)
    for i, e in enumerate(episodes):
        bus.publish(e)
        if i % 10 == 0 and i // 10 < len(bad):
            bus.publish_raw(ev.TOPIC_EPISODES, b"k", bad[i // 10][0])
    for e in episodes[:300]:  # duplicates, as after a producer retry
        bus.publish(e)
    pipeline.drain()

    streamkit.assert_matches_truth(sink.query_kpis(experiment=f"exp-{unique_id}"),
                                 streamkit.ground_truth(episodes))
    dlq = [read_dlq_envelope(r.value) for r in bus.records(ev.TOPIC_EPISODES_DLQ)]
    assert [d["original"] for d in dlq] == [raw for raw, _ in bad]
    assert [d["reason"] for d in dlq] == [reason for _, reason in bad]
    assert all(d["source_topic"] == ev.TOPIC_EPISODES and d["detail"] for d in dlq)

    server = httpserver.serve(0, metrics.registry, lambda: (sink.ping(), {"database": sink.ping()}))
    port = server.server_address[1]
    try:
        samples = scrape(port)
        truth = streamkit.ground_truth(episodes)
        for (exp, device, algo), row in truth.items():
            labels = f'algorithm="{algo}",device_type="{device}",experiment="{exp}"'
            assert samples[f'success_rate{{{labels}}}'] == pytest.approx(row["success_rate"], rel=1e-12)
            success = samples[f'training_episodes_total{{{labels},outcome="success"}}']
            failure = samples[f'training_episodes_total{{{labels},outcome="failure"}}']
            assert (success, failure) == (row["successes"], row["episodes_total"] - row["successes"])
            assert samples[f'energy_per_switch_joules_count{{{labels}}}'] == row["successes"]
            assert samples[f'energy_per_switch_joules_bucket{{{labels},le="+Inf"}}'] == row["successes"]
        by_reason = {}
        for _, reason in bad:
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, n in by_reason.items():
            assert samples[f'stgym_events_rejected_total{{reason="{reason}"}}'] == n
        assert samples[f'stgym_events_processed_total{{topic="{ev.TOPIC_EPISODES}"}}'] == 1500 + 300 + 120
        assert samples['stgym_events_duplicate_total'] == 300
        assert samples['memory_usage_bytes{service="stgym-test"}'] > 10e6
        has_gpu = any(name.startswith("gpu_utilization_percent") for name in samples)
        assert has_gpu == (gpu_reader() is not None)  # a real reading or absent, never a fake 0
        assert not any(re.search(r"event_id|run_id", name) for name in samples)
        status, body = workload.http_get(f"http://127.0.0.1:{port}/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = workload.http_get(f"http://127.0.0.1:{port}/ready")
        assert status == 200 and json.loads(body)["database"] is True
        assert workload.http_get(f"http://127.0.0.1:{port}/nope")[0] == 404
    finally:
        server.shutdown()


def test_ready_is_503_with_reasons_when_the_database_is_gone(sink):
    metrics = ProcessMetrics("stgym-test-2")
    server = httpserver.serve(0, metrics.registry, lambda: (sink.ping(), {"database": sink.ping()}))
    port = server.server_address[1]
    try:
        sink.close()
        status, body = workload.http_get(f"http://127.0.0.1:{port}/ready")
        assert status == 503
        assert json.loads(body) == {"status": "not ready", "service": "stgym-stream",
                                    "pid": os.getpid(), "database": False}
    finally:
        server.shutdown()


def test_kpi_collector_exports_nothing_rather_than_zeros_when_the_store_fails(sink):
    collector = KpiCollector(sink, cache_s=0.0)
    sink.close()
    assert list(collector.collect()) == [] and collector.errors == 1


def test_last_event_age_and_process_metrics():
    metrics = ProcessMetrics("stgym-test-3")
    value = metrics.registry.get_sample_value("stgym_last_event_age_seconds")
    assert math.isnan(value)
    assert metrics.registry.get_sample_value("memory_usage_bytes", {"service": "stgym-test-3"}) > 0
