"""Traces on the real stack: a 2-worker `stgym train` into Kafka and a stream worker aggregating
it, exported through the collector's OTLP receiver to Jaeger (stored in OpenSearch); a log
record's trace id leads to its trace; an unreachable trace endpoint blocks nothing; a private
Jaeger keeps its traces across a restart."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sinks.factory import open_sink
from stgym import logsearch, tracequery
from stgym.bus import open_bus
from streams import workload
import streamkit
from streams.workload import stored_count

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
TRAINER_SPANS = {"train_model", "iteration", "physics_simulation", "reward_calculation", "publish"}
EPISODES = 256


def train(bus_url: str, experiment: str, tmp_path, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """`stgym train` with 2 worker processes (the environment decides the trace endpoint)."""
    return subprocess.run(
        [sys.executable, "-m", "stgym.cli", "--log-format", "json", "train", "--algo", "cem",
         "--episodes", str(EPISODES), "--workers", "2", "--batch-size", "64", "--bus", bus_url,
         "--experiment", experiment, "--run-dir", str(tmp_path / "train"), "--mlflow", "off"],
        capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
    )


def run_pipeline(kafka_bootstrap, postgres_url, unique_id, tmp_path, engine: str) -> tuple:
    """A stream worker, then a training into it; returns (experiment, worker's /metrics text)
    once every episode is committed and the worker has stopped (flushing its spans)."""
    bus_url = f"kafka://{kafka_bootstrap}"
    experiment = f"trace-{engine}-{unique_id}"
    port = workload.free_port()
    worker = workload.start_worker(bus_url, postgres_url, port, 0, f"stgym-trace-{unique_id}",
                                  str(tmp_path / "worker.log"),
                                  extra=["--engine", engine, "--offset-reset", "latest"])
    bus = open_bus(bus_url)
    sink = open_sink(postgres_url)
    try:
        workload.wait_workers_ready([worker], [port], sink)
        streamkit.warm_up(bus, sink, unique_id)
        result = train(bus_url, experiment, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        workload.wait_until(lambda: stored_count(sink, experiment) >= EPISODES, 180,
                           what="the training's episodes committed")
        assert stored_count(sink, experiment) == EPISODES
        assert worker.poll() is None
        metrics = workload.http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    finally:
        workload.stop_all([worker], bus, sink)
    return experiment, metrics


def wait_for(fetch, timeout_s: float = 60.0, what: str = "traces"):
    """fetch() until it returns something truthy (spans reach Jaeger in about a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = fetch()
        if found or time.monotonic() > deadline:
            assert found, f"no {what} in Jaeger after {timeout_s} s"
            return found
        time.sleep(1.0)


@pytest.mark.parametrize("engine", ["aiokafka", "faust"])
def test_training_and_stream_batches_are_traced_and_linked(
        kafka_bootstrap, postgres_url, jaeger_url, otlp_endpoint, opensearch_url, collector_address,
        unique_id, tmp_path, monkeypatch, engine):
    monkeypatch.setenv("STGYM_TRACE_ENDPOINT", otlp_endpoint)
    monkeypatch.setenv("STGYM_TRACE_SAMPLE_RATIO", "1.0")
    monkeypatch.setenv("STGYM_LOG_FORMAT", "json")
    experiment, _ = run_pipeline(kafka_bootstrap, postgres_url, unique_id, tmp_path, engine)

    # The trainer: one trace per worker run, every span name, service and worker id.
    def trainer_traces():
        traces = tracequery.get_traces(jaeger_url, service="stgym-train",
                                       tags={"experiment": experiment}, lookback="1h", limit=10)
        return traces if len(traces) == 2 else None

    trainer = wait_for(trainer_traces, what="trainer traces")
    publish_ids = set()
    for trace in trainer:
        names = {span["operationName"] for span in trace["spans"]}
        assert TRAINER_SPANS <= names
        process = next(iter(trace["processes"].values()))
        assert process["serviceName"] == "stgym-train"
        publish_ids |= {span["spanID"] for span in trace["spans"] if span["operationName"] == "publish"}
    worker_ids = {tag["value"] for trace in trainer for process in trace["processes"].values()
                  for tag in process["tags"] if tag["key"] == "stgym.worker_id"}
    assert worker_ids == {"w0", "w1"}
    assert publish_ids

    # The stream worker: process_batch spans (children validate, db_commit) linking to the
    # publish spans of their records.
    def linked_batches():
        found = tracequery.experiment_traces(jaeger_url, experiment, 3600, 10)
        return [t for t in found if t.service == "stgym-stream"] or None

    def links_of(batches) -> set:
        linked = set()
        for batch in batches:
            full = requests.get(f"{jaeger_url}/api/traces/{batch.trace_id}", timeout=10).json()["data"][0]
            linked |= {ref["spanID"] for span in full["spans"] for ref in span["references"]
                       if ref["refType"] == "FOLLOWS_FROM"}
        return linked

    # Jaeger's OpenSearch storage makes spans searchable a refresh after they arrive, so the
    # first answer may hold only some of the batches: ask again until every publish is linked.
    deadline = time.monotonic() + 60
    while True:
        batches = wait_for(linked_batches, what="stream batch traces linked to the training")
        linked_spans = links_of(batches)
        if publish_ids <= linked_spans or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert all(b.root == "process_batch" and {"validate", "db_commit"} <= set(b.spans)
               for b in batches)
    assert publish_ids & linked_spans, "no process_batch span links to a publish span"
    assert publish_ids <= linked_spans, "some published batch is linked by no stream batch"

    # A log record of the training carries the trace id and span id of its span.
    def traced_records():
        records = logsearch.search_opensearch(logsearch.LogQuery(
            service="stgym-train", experiment=experiment, limit=200))
        return [r for r in records if r.get("trace_id")] or None

    record = wait_for(traced_records, what="log records with a trace id")[0]
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"])
    trace = requests.get(f"{jaeger_url}/api/traces/{record['trace_id']}", timeout=10).json()["data"]
    assert trace and record["span_id"] in {span["spanID"] for span in trace[0]["spans"]}

    # `stgym traces` lists both services with span durations.
    out = subprocess.run([sys.executable, "-m", "stgym.cli", "traces", "--experiment", experiment],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "stgym-train" in out and "stgym-stream" in out and "physics_simulation" in out


def test_unreachable_trace_endpoint_blocks_nothing(kafka_bootstrap, postgres_url, unique_id,
                                                   tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{workload.free_port()}"  # nobody listens there
    monkeypatch.setenv("STGYM_TRACE_ENDPOINT", dead)
    _, metrics = run_pipeline(kafka_bootstrap, postgres_url, unique_id, tmp_path, "aiokafka")
    # every episode arrived (run_pipeline checks); the worker counted the spans it could not send
    failed = re.search(r'^stgym_trace_spans_dropped_total\{reason="export_failed"\} (\S+)$',
                       metrics, re.M)
    assert failed is not None, "the stream worker does not export stgym_trace_spans_dropped_total"


def test_traces_survive_a_jaeger_restart(opensearch_url, tmp_path):
    """A PRIVATE Jaeger (own run dir and ports, the shared OpenSearch as its storage): a trace
    sent to it is still there after `jaeger.sh down` and `up`."""
    ports = {name: str(workload.free_port()) for name in (
        "QUERY_PORT", "QUERY_GRPC_PORT", "OTLP_GRPC_PORT", "OTLP_HTTP_PORT", "HEALTH_PORT",
        "METRICS_PORT")}
    env = {**os.environ, "STGYM_RUN_DIR": str(tmp_path / "run"),
           **{f"STGYM_JAEGER_{name}": port for name, port in ports.items()}}
    script = [str(REPO / "compose" / "bare" / "jaeger.sh")]

    def jaeger(action: str) -> None:
        result = subprocess.run(["bash", *script, action], env=env, capture_output=True,
                                text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr[-2000:]

    url = f"http://127.0.0.1:{ports['QUERY_PORT']}"
    send = ("from stgym import tracing; "
            f"tracing.configure('stgym-restart-test', endpoint='http://127.0.0.1:{ports['OTLP_HTTP_PORT']}'); "
            "s = tracing.span('restart_check'); span = s.__enter__(); "
            "print(format(span.get_span_context().trace_id, '032x')); s.__exit__(None, None, None); "
            "tracing.shutdown()")
    jaeger("up")
    try:
        trace_id = subprocess.run([sys.executable, "-c", send], capture_output=True, text=True,
                                  timeout=60, check=True).stdout.strip()

        def stored():
            response = requests.get(f"{url}/api/traces/{trace_id}", timeout=10)
            return response.status_code == 200 and response.json().get("data")

        wait_for(stored, what="the private Jaeger's trace")
        jaeger("down")
        jaeger("up")
        assert wait_for(stored, what="the trace after the restart")[0]["traceID"] == trace_id
    finally:
        jaeger("down")
