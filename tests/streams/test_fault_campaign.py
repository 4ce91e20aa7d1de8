"""Fault campaign on a PRIVATE PostgreSQL + Kafka + OpenSearch + log collector (compose/bare
scripts, own run dir and ports; the shared stack is never touched), for both engines of
`stgym stream`. The workers ship their logs to the private collector.

* A corpus of bad records (corpus(): 21 kinds — unparseable, wrong types, unknown version,
  oversized up to near the broker's limit, empty, schema-shaped but unphysical, and valid
  but refused by the database) mixed into a steady stream of good episodes with duplicates,
  OpenSearch down for 60 s (Faust run) and, meanwhile, the collector stopped and restarted,
  PostgreSQL restarted mid-stream: KPIs equal the ground truth exactly, every bad record is in the DLQ exactly once
  (by its envelope id) with its reason, both workers alive and ready, and every log record
  the workers wrote (their local JSON log file) is in OpenSearch exactly once (by log_id).
* Kills: a worker SIGKILLed in its first rebalance and mid-stream, the broker SIGKILLed and
  restarted mid-stream, bad records among the episodes: KPIs exact (nothing lost, nothing
  counted twice), each bad record in the DLQ exactly once by dlq_id (a replay after the kill
  may send an envelope again: its copies share the id; `stgym dlq` shows it once).
* Shutdown: SIGTERM during a PostgreSQL outage (a batch held, retrying) and while Kafka is
  down ends the worker within 10 s with exit code 0, acknowledging nothing uncommitted; a
  worker started while PostgreSQL is down answers 503 naming why, then starts by itself.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaProducer
from opensearchpy import OpenSearch

import streamkit
from sinks.factory import open_sink
from stgym import events as ev
from stgym import settings as settings_module
from stgym import logformat
from stgym.bus import open_bus
from streams import workload
from streams.pipeline import read_dlq_envelope

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = ["bash", str(REPO / "compose" / "bare" / "services.sh")]
ENGINES = ["faust", "aiokafka"]
POISON = "poison"  # run ids the database refuses (a trigger the campaign installs)
STOP_LIMIT_S = 10.0
OPENSEARCH_OUTAGE_S = 60.0
# Every port of the private stack moved off the shared one's (the workers get them too).
PORTS = ("postgres_port", "kafka_port", "kafka_controller_port", "kafka_sasl_port",
         "opensearch_port", "opensearch_transport_port", "collector_forward_port",
         "collector_health_port", "collector_metrics_port", "collector_otlp_grpc_port",
         "collector_otlp_http_port", "collector_otlp_tls_port")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Env of a private PostgreSQL + Kafka + OpenSearch + collector; stopped and removed at
    the end."""
    run_dir = tmp_path_factory.mktemp("fault-run")
    env = dict(os.environ, STGYM_RUN_DIR=str(run_dir), STGYM_KAFKA_HEAP="256m")
    for name in PORTS:
        env[f"STGYM_{name.upper()}"] = str(workload.free_port())
    try:
        services(env, "up", "postgres", "kafka", "opensearch", "collector")
        yield env
    finally:
        subprocess.run([*SERVICES_SH, "clean"], env=env, capture_output=True, timeout=300)


def services(env: dict, *argv: str) -> None:
    result = subprocess.run([*SERVICES_SH, *argv], env=env, capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, f"services.sh {' '.join(argv)}:\n{result.stderr[-3000:]}"


def settings_of(env: dict) -> settings_module.Settings:
    fields = {f.name for f in dataclasses.fields(settings_module.Settings)}
    values = {k[len("STGYM_"):].lower(): v for k, v in env.items() if k.startswith("STGYM_")}
    return settings_module.Settings(**{k: (int(v) if k.endswith("_port") else v)
                                       for k, v in values.items() if k in fields})


@dataclasses.dataclass
class Private:
    env: dict
    bus_url: str
    db_url: str
    bootstrap: str
    opensearch_url: str
    log_file: Path  # the local JSON log file of every worker this test starts


@pytest.fixture
def private(stack, unique_id, tmp_path, monkeypatch):
    """The private stack with a fresh database for this test, holding the poison trigger;
    the workers started from here ship their logs to the private collector and keep their
    local log file in a data dir of this test."""
    for name in PORTS:
        monkeypatch.setenv(f"STGYM_{name.upper()}", stack[f"STGYM_{name.upper()}"])
    data_dir = tmp_path / "data"
    monkeypatch.setenv("STGYM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STGYM_LOG_SHIP", "on")
    s = settings_of(stack)
    db = f"fault_{unique_id}".replace("-", "_")
    admin = psycopg2.connect(s.postgres_url, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    admin.close()
    url = s.postgres_url_for(db)
    sink = open_sink(url)
    sink.setup()
    with sink.conn.cursor() as cur:
        cur.execute("CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
                    " BEGIN IF NEW.run_id LIKE 'poison%' THEN RAISE EXCEPTION"
                    " 'run id % is refused by the campaign trigger', NEW.run_id; END IF;"
                    " RETURN NEW; END $$")
        cur.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON episodes FOR EACH ROW"
                    " EXECUTE FUNCTION refuse_poison()")
    sink.conn.commit()
    sink.close()
    return Private(stack, f"kafka://{s.kafka_bootstrap}", url, s.kafka_bootstrap,
                   s.opensearch_url, data_dir / "logs" / "stgym.jsonl")


def corpus(tag: str) -> list[tuple[str, bytes, str]]:
    """(kind, raw value, DLQ reason) of every kind of bad record; each carries `tag` near its
    start (so a truncated DLQ original still shows it)."""
    good = json.loads(ev.encode(workload.make_episodes(1, f"bad-{tag}", seed=1)[0]))
    good["run_id"] = f"{tag}-bad"

    def variant(**fields):
        record = dict(good, event_id=ev.new_event_id())
        for name, value in fields.items():
            if value is None:
                record.pop(name)
            else:
                record[name] = value
        return json.dumps(record).encode()

    def padded(size: int) -> bytes:  # valid JSON up to `size` bytes, tag first
        head = f'{{"run_id": "{tag}-big", "pad": "'.encode()
        return head + b"x" * (size - len(head) - 2) + b'"}'

    valid = variant()
    return [
        ("empty value", b"", "empty"),
        ("garbage bytes", f"{tag} \x00\xff not json".encode("latin-1"), "bad_json"),
        ("truncated json", valid[:len(valid) // 2], "bad_json"),
        ("NaN literal", variant(energy_j=float("nan")), "bad_json"),
        ("missing field", variant(energy_j=None), "invalid_field"),
        ("wrong type", variant(episode="seven"), "invalid_field"),
        ("unknown field", variant(colour="blue"), "invalid_field"),
        ("bad event id", variant(event_id="not-a-uuid"), "invalid_field"),
        ("json array", json.dumps([tag, 1, 2]).encode(), "invalid_field"),
        ("unknown version", variant(schema_version=2), "schema_version"),
        ("oversized 64 KiB", padded(ev.MAX_EVENT_BYTES + 1), "oversized"),
        ("oversized near broker limit", padded(900 * 1024), "oversized"),
        ("episode 2**64", variant(episode=2**64), "out_of_range"),
        ("energy 1e308", variant(energy_j=1e308), "out_of_range"),
        ("negative sim steps", variant(sim_steps=-5), "out_of_range"),
        ("week-long wall time", variant(wall_time_s=1e7), "out_of_range"),
        ("NUL in a name", variant(run_id=f"{tag}-\x00"), "bad_name"),
        ("escape code in a name", variant(algorithm="cem\x1b[2J"), "bad_name"),
        ("timestamp 1970", variant(timestamp="1970-01-01T00:00:00Z"), "bad_timestamp"),
        ("timestamp 2100", variant(timestamp="2100-01-01T00:00:00Z"), "bad_timestamp"),
        ("refused by the database", variant(run_id=f"{POISON}-{tag}"), "unstorable"),
    ]


def dlq_by_key(bootstrap: str, prefix: bytes, expected: int, timeout_s: float = 120.0):
    """{DLQ key: [envelopes]} of the DLQ records whose key starts with `prefix`."""
    reader = streamkit.TopicReader(bootstrap)
    found: dict[bytes, list[dict]] = collections.defaultdict(list)
    try:
        reader.seek_to({tp: 0 for tp in reader.end_offsets()})
        deadline = time.monotonic() + timeout_s
        quiet_until = None
        while time.monotonic() < deadline:
            got = False
            for records in reader.poll(timeout_ms=1000, max_records=2000).values():
                for record in records:
                    if record.key and record.key.startswith(prefix):
                        found[record.key].append(read_dlq_envelope(record.value))
                        got = True
            if len(found) >= expected:  # then keep reading a little: duplicates would show
                quiet_until = quiet_until or time.monotonic() + 3
                if not got and time.monotonic() > quiet_until:
                    break
    finally:
        reader.close()
    return found


def dlq_exactly_once(bootstrap: str, tag: str, keys: dict) -> dict[bytes, dict]:
    """{key: envelope} of the bad records `keys` (key -> (kind, raw, reason)) published under
    `tag`: each is in the DLQ exactly once by dlq_id (copies of one envelope, sent again by a
    worker killed before its commit, share the id) with its reason."""
    found = dlq_by_key(bootstrap, f"{tag}-bad-".encode(), len(keys))
    assert set(found) == set(keys), sorted(set(keys) - set(found))
    for key, envelopes in found.items():
        kind, _, reason = keys[key]
        assert len({e["dlq_id"] for e in envelopes}) == 1, (kind, envelopes)
        assert envelopes[0]["reason"] == reason, (kind, reason, envelopes[0])
    return {key: envelopes[0] for key, envelopes in found.items()}


def logs_exactly_once(p: Private, timeout_s: float = 120.0) -> list[str]:
    """Every record in the workers' local JSON log file (written at once, in the caller's
    thread) is in OpenSearch exactly once, by its log_id; returns their timestamps."""
    complete = [line for line in p.log_file.read_text().splitlines(keepends=True)
                if line.endswith("\n")]  # a line still being written is left for later
    lines = {json.loads(line)["log_id"]: line for line in complete}
    truth = list(lines)
    assert truth and len(truth) == len(complete), "log ids must be unique in the log file"
    client = OpenSearch(p.opensearch_url, timeout=30)
    index = f"{settings_module.load().logs_index}*"
    query = {"size": 0, "track_total_hits": True,
             "query": {"terms": {"attributes.log_id": truth}},
             "aggs": {"twice": {"terms": {"field": "attributes.log_id", "min_doc_count": 2,
                                          "size": 100}}}}
    answer = {}

    def all_there():
        nonlocal answer
        client.indices.refresh(index=index)
        answer = client.search(index=index, body=query)
        return answer["hits"]["total"]["value"] >= len(truth)

    try:
        workload.wait_until(all_there, timeout_s, interval_s=2, what="every log record indexed")
    except TimeoutError:
        stored = {hit["_source"]["attributes"]["log_id"] for hit in client.search(
            index=index, body={"size": min(len(truth), 10_000),
                               "query": query["query"]})["hits"]["hits"]}
        missing = [line for log_id, line in lines.items() if log_id not in stored]
        raise AssertionError(f"{len(missing)} of {len(truth)} log records not in OpenSearch,"
                             f" e.g. {missing[:3]}") from None
    twice = answer["aggregations"]["twice"]["buckets"]
    assert not twice, f"log records stored more than once: {twice[:5]}"
    assert answer["hits"]["total"]["value"] == len(truth)
    return [json.loads(line)["timestamp"] for line in complete]


def now_rfc3339() -> str:
    """The time now as the log documents write it (comparable as strings)."""
    return logformat.rfc3339_ns(time.time_ns())


def start(p: Private, engine: str, port: int, worker: int, app_id: str, log: Path):
    return workload.start_worker(p.bus_url, p.db_url, port, worker, app_id, str(log),
                                 extra=["--engine", engine, "--batch-size", "300"])


def two_workers(p: Private, engine: str, tag: str, tmp_path: Path):
    """(experiment, ports, workers, bus) of a test: two workers of group fault-<tag>."""
    ports = [workload.free_port(), workload.free_port()]
    workers = [start(p, engine, ports[i], i, f"fault-{tag}", tmp_path / f"w{i}.log")
               for i in range(2)]
    return f"fault-{tag}", ports, workers, open_bus(p.bus_url)


def stop_timed(proc) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_LIMIT_S + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        code = None
    return code, time.monotonic() - t0


def probe(port: int) -> tuple[int, dict]:
    status, body = workload.http_get(f"http://127.0.0.1:{port}/ready", timeout=3)
    return status, (json.loads(body) if body else {})


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_record_corpus_and_postgres_restart(private, engine, unique_id, tmp_path):
    tag = f"{engine}-{unique_id}"
    experiment, ports, workers, bus = two_workers(private, engine, tag, tmp_path)
    big = KafkaProducer(bootstrap_servers=private.bootstrap, max_request_size=1024 * 1024,
                        acks="all")
    sink = open_sink(private.db_url)
    try:
        for port, proc in zip(ports, workers):
            workload.wait_ready(port, 180, proc)
        sink.setup()
        episodes = workload.make_episodes(3000, experiment, seed=9)
        bad = corpus(tag)
        keys = {f"{tag}-bad-{i:02d}".encode(): (kind, raw, reason)
                for i, (kind, raw, reason) in enumerate(bad)}
        items = list(keys.items())
        outages: dict[str, list[str]] = {}  # service -> [down, up] as log timestamps
        for chunk in range(11):
            for event in episodes[chunk * 300:(chunk + 1) * 300]:
                bus.publish(event)
            for event in episodes[max(0, chunk * 300 - 100):chunk * 300 - 70]:
                bus.publish(event)  # a producer's retry: duplicates of earlier episodes
            for key, (_, raw, _) in items[chunk * 2:chunk * 2 + 2]:
                big.send(ev.TOPIC_EPISODES, key=key, value=raw)
            bus.flush(60)
            big.flush(60)
            # OpenSearch down for OPENSEARCH_OUTAGE_S, the rest running meanwhile (once: the
            # log path is the same for both engines, and the outage is mostly waiting)
            if chunk == 0 and engine == ENGINES[0]:
                services(private.env, "down", "opensearch")
                opensearch_down = time.monotonic()
                outages["opensearch"] = [now_rfc3339()]
            if chunk == 1:  # the collector down while bad records are logged: their records
                services(private.env, "down", "collector")  # wait in the worker (or spool)
                outages["collector"] = [now_rfc3339()]
            if chunk == 3:  # back with its disk queue of batches OpenSearch has not taken
                time.sleep(3)
                outages["collector"].append(now_rfc3339())
                services(private.env, "up", "collector")
            if chunk == 4:  # PostgreSQL restarted mid-stream
                services(private.env, "down", "postgres")
                time.sleep(3)
                services(private.env, "up", "postgres")
            time.sleep(0.3)

        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= len(episodes),
                            240, what="every good episode stored")
        streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment),
                                       streamkit.ground_truth(episodes))
        found = dlq_exactly_once(private.bootstrap, tag, keys)
        for key, envelope in found.items():
            kind, raw, reason = keys[key]
            assert envelope["reason"] == reason, (kind, envelope["reason"], envelope["detail"])
            assert envelope["original_length"] == len(raw)
            if envelope["original"] is not None:
                assert envelope["original"] == raw, kind
            else:  # a large original: prefix + sha256
                assert raw.startswith(envelope["original_prefix"]), kind
        assert "refused by the campaign trigger" in found[
            next(k for k, v in keys.items() if v[2] == "unstorable")]["detail"]
        for port, proc in zip(ports, workers):
            assert proc.poll() is None, f"a worker exited with {proc.returncode}"
            workload.wait_ready(port, 60, proc)
        metrics = workload.http_get(f"http://127.0.0.1:{ports[0]}/metrics")[1].decode()
        metrics += workload.http_get(f"http://127.0.0.1:{ports[1]}/metrics")[1].decode()
        # >= 1: a group reading from the start also meets the other engine's poison record
        unstorable = re.findall(r'^stgym_dlq_records_total\{reason="unstorable"\} (\S+)$',
                                metrics, re.MULTILINE)
        assert len(unstorable) == 2 and sum(map(float, unstorable)) >= 1, unstorable

        if "opensearch" in outages:
            time.sleep(max(0.0, OPENSEARCH_OUTAGE_S - (time.monotonic() - opensearch_down)))
            outages["opensearch"].append(now_rfc3339())
            services(private.env, "up", "opensearch")
        stamps = logs_exactly_once(private)
        for service, (down, up) in outages.items():  # the outages did meet log records
            assert any(down <= stamp <= up for stamp in stamps), (service, down, up)
        for port, proc in zip(ports, workers):
            assert proc.poll() is None, f"a worker exited with {proc.returncode}"
    finally:
        workload.stop_all(workers, bus, sink)
        big.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_shutdown_and_start_in_every_state(private, engine, unique_id, tmp_path):
    tag = f"stop-{engine}-{unique_id}"
    app_id = f"fault-{tag}"
    experiment = f"fault-{tag}"
    port = workload.free_port()
    bus = open_bus(private.bus_url)
    sink = open_sink(private.db_url)
    episodes = workload.make_episodes(1200, experiment, seed=10)
    try:
        worker = start(private, engine, port, 0, app_id, tmp_path / "w.log")
        workload.wait_ready(port, 180, worker)
        sink.setup()
        for event in episodes[:400]:
            bus.publish(event)
        bus.flush(60)
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= 400, 120,
                            what="first part stored")

        # 1. SIGTERM while PostgreSQL is down and a batch is held, retrying
        sink.close()
        services(private.env, "down", "postgres")
        for event in episodes[400:800]:
            bus.publish(event)
        bus.flush(60)
        workload.wait_until(lambda: probe(port)[0] == 503, 60, what="503 during the outage")
        code, seconds = stop_timed(worker)
        assert code == 0 and seconds < STOP_LIMIT_S, (code, seconds)

        # 2. started while PostgreSQL is down: waits, 503 naming why, then starts by itself
        worker = start(private, engine, port, 0, app_id, tmp_path / "w.log")
        status, body = workload.wait_until(
            lambda: (lambda r: r if r[0] == 503 and r[1].get("blocked") else None)(probe(port)),
            60, what="503 with a reason while PostgreSQL is down")
        assert "starting" in body["blocked"], body
        services(private.env, "up", "postgres")
        workload.wait_ready(port, 120, worker)
        sink = open_sink(private.db_url)
        sink.setup()
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= 800, 120,
                            what="the held part stored after the outage")

        # 3. SIGTERM while Kafka is down
        services(private.env, "down", "kafka")
        code, seconds = stop_timed(worker)
        assert code == 0 and seconds < STOP_LIMIT_S, (code, seconds)
        services(private.env, "up", "kafka")

        # 4. SIGTERM with a batch in flight
        bus.close()
        bus = open_bus(private.bus_url)
        worker = start(private, engine, port, 0, app_id, tmp_path / "w.log")
        workload.wait_ready(port, 180, worker)
        for event in episodes[800:]:
            bus.publish(event)
        bus.flush(60)
        workload.wait_until(lambda: workload.stored_count(sink, experiment) > 800, 120,
                            what="the last part flowing")
        code, seconds = stop_timed(worker)
        assert code == 0 and seconds < STOP_LIMIT_S, (code, seconds)

        # whatever was acknowledged was committed: a restarted worker completes the count
        worker = start(private, engine, port, 0, app_id, tmp_path / "w.log")
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= len(episodes),
                            180, what="everything stored")
        streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment),
                                       streamkit.ground_truth(episodes))
        workload.wait_ready(port, 60, worker)
        code, seconds = stop_timed(worker)
        assert code == 0 and seconds < STOP_LIMIT_S, (code, seconds)
    finally:
        if worker.poll() is None:
            worker.kill()
        bus.close()
        sink.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_kills_lose_nothing_and_count_nothing_twice(private, engine, unique_id, tmp_path):
    """A worker SIGKILLed during its first rebalance and again mid-stream, the Kafka broker
    SIGKILLed and restarted mid-stream: KPIs still equal the ground truth exactly, and every
    bad record among the episodes is in the DLQ exactly once by dlq_id."""
    tag = f"kill-{engine}-{unique_id}"
    experiment, ports, workers, bus = two_workers(private, engine, tag, tmp_path)
    app_id = f"fault-{tag}"
    sink = open_sink(private.db_url)
    episodes = workload.make_episodes(4000, experiment, seed=11)
    bad = {f"{tag}-bad-{i:02d}".encode(): item for i, item in enumerate(
        item for item in corpus(tag) if len(item[1]) < 100_000)}  # what the bus can send
    items = list(bad.items())
    try:
        # killed during its very first rebalance (joined, not yet ready), then restarted
        workload.wait_until(lambda: "consuming" in (tmp_path / "w1.log").read_text()
                            or probe(ports[1])[0] == 503, 120, what="worker 1 joining")
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(30)
        workers[1] = start(private, engine, ports[1], 1, app_id, tmp_path / "w1.log")
        for port, proc in zip(ports, workers):
            workload.wait_ready(port, 180, proc)
        sink.setup()
        for part in range(4):
            for event in episodes[part * 1000:(part + 1) * 1000]:
                bus.publish(event)
            for key, (_, raw, _) in items[part::4]:  # bad records among them, re-DLQed by
                bus.publish_raw(ev.TOPIC_EPISODES, key, raw)  # a killed worker's replay
            bus.flush(60)
            if part == 1:  # the broker SIGKILLed mid-stream and restarted
                pid_file = Path(private.env["STGYM_RUN_DIR"]) / "pids" / "kafka.pid"
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                time.sleep(2)
                services(private.env, "up", "kafka")
                bus.close()
                bus = open_bus(private.bus_url)
            if part == 2:  # a worker SIGKILLed mid-stream and restarted
                workload.wait_until(lambda: workload.stored_count(sink, experiment) > 2000,
                                    180, what="flowing after the broker restart")
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait(30)
                workers[0] = start(private, engine, ports[0], 0, app_id, tmp_path / "w0.log")
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= len(episodes),
                            300, what="every episode stored")
        streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment),
                                       streamkit.ground_truth(episodes))
        dlq_exactly_once(private.bootstrap, tag, bad)
        for port, proc in zip(ports, workers):
            assert proc.poll() is None, f"a worker exited with {proc.returncode}"
            workload.wait_ready(port, 120, proc)
    finally:
        workload.stop_all(workers, bus, sink)
