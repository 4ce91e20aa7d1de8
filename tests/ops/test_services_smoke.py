"""One smoke test per real service, each through the client the project itself uses."""
from __future__ import annotations

import time
import urllib.parse

import pytest
import requests

pytestmark = pytest.mark.services


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def test_kafka_produce_and_consume(kafka_bootstrap, unique_id):
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"smoke-{unique_id}"
    payloads = [f"message {i} {unique_id}".encode() for i in range(5)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, key=str(i).encode(), value=payload).get(timeout=60)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                             group_id=f"smoke-{unique_id}", auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    received: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(payloads) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                received.extend((record.key, record.value) for record in batch)
    finally:
        consumer.close()
    # the broker auto-creates the topic with its 4 partitions (num.partitions): keys spread
    # over them, so only each partition's order is Kafka's promise, not the send order
    assert sorted(received) == [(str(i).encode(), p) for i, p in enumerate(payloads)]


def test_postgres_write_and_read_row(postgres_url, unique_id):
    import psycopg2

    with psycopg2.connect(postgres_url) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE smoke (id serial PRIMARY KEY, name text NOT NULL, value double precision)")
            cur.execute("INSERT INTO smoke (name, value) VALUES (%s, %s) RETURNING id",
                        (unique_id, 2.5e-13))
            row_id = cur.fetchone()[0]
    conn.close()
    with psycopg2.connect(postgres_url) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT name, value FROM smoke WHERE id = %s", (row_id,))
            assert cur.fetchone() == (unique_id, 2.5e-13)
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == f"test_{unique_id}"
    conn.close()


def test_prometheus_scrapes_a_test_endpoint(prometheus_url, stgym_settings, unique_id):
    """Prometheus's `smoke` job scrapes 127.0.0.1:<smoke_metrics_port> every second."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauge = Gauge("stgym_smoke_value", "value set by the services smoke test", ["probe"],
                  registry=registry)
    gauge.labels(probe=unique_id).set(42.5)
    server, thread = start_http_server(stgym_settings.smoke_metrics_port,
                                       addr=stgym_settings.host, registry=registry)
    try:
        query = f'stgym_smoke_value{{probe="{unique_id}"}}'

        def sample():
            resp = requests.get(f"{prometheus_url}/api/v1/query?"
                                + urllib.parse.urlencode({"query": query}), timeout=5)
            resp.raise_for_status()
            return resp.json()["data"]["result"]

        result = wait_for(sample, 60, f"Prometheus to scrape {query}")
        assert len(result) == 1
        assert result[0]["metric"]["job"] == "smoke"
        assert float(result[0]["value"][1]) == 42.5
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_opensearch_index_and_search(opensearch_url, unique_id):
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    index = f"smoke-{unique_id}"
    try:
        client.index(index=index, id="1", body={"probe": unique_id, "energy_j": 2.5e-13},
                     refresh="true")
        found = client.search(index=index, body={"query": {"term": {"probe.keyword": unique_id}}})
        hits = found["hits"]["hits"]
        assert [hit["_source"] for hit in hits] == [{"probe": unique_id, "energy_j": 2.5e-13}]
    finally:
        client.indices.delete(index=index, params={"ignore_unavailable": "true"})


def test_fluent_record_reaches_opensearch_through_the_collector(
        collector_address, opensearch_url, stgym_settings, unique_id):
    from fluent import sender
    from opensearchpy import OpenSearch

    host, port = collector_address
    fluent = sender.FluentSender("stgym.smoke", host=host, port=port, nanosecond_precision=True)
    try:
        assert fluent.emit("record", {"message": f"smoke record {unique_id}", "run_id": unique_id,
                                      "episode": 7}), fluent.last_error
    finally:
        fluent.close()
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    pattern = f"{stgym_settings.logs_index}*"

    def search():
        client.indices.refresh(index=pattern, params={"ignore_unavailable": "true"})
        found = client.search(
            index=pattern,
            body={"query": {"match_phrase": {"body": f"smoke record {unique_id}"}}},
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )
        return found["hits"]["hits"]

    hits = wait_for(search, 60, f"the record of run {unique_id} in {pattern}", interval_s=1.0)
    assert len(hits) == 1
    document = hits[0]["_source"]
    assert document["body"] == f"smoke record {unique_id}"
    assert document["attributes"]["run_id"] == unique_id
    assert document["attributes"]["episode"] == 7
    assert document["attributes"]["fluent.tag"] == "stgym.smoke.record"
