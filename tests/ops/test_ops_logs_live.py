"""Log shipping through the real collector into OpenSearch, and `stgym logs search` on it.

The outage test stops the real collector (compose/bare/collector.sh down), logs 1,000
records, starts it again (collector.sh up) and finds every record in OpenSearch exactly once.
"""
from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stgym import logcontext, logsearch, logsetup, logspool
from streams import workload

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "compose" / "bare" / "collector.sh"


def collector(action: str) -> None:
    subprocess.run(["bash", str(COLLECTOR), action], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


def port_open(address: tuple[str, int]) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(address) == 0


def stored(opensearch_url: str, field: str, value: str) -> list[dict]:
    """Every stored document with attributes.<field> == value (after a refresh)."""
    client = logsearch.client(opensearch_url)
    client.indices.refresh(index="stgym-logs*", params={"ignore_unavailable": "true"})
    response = client.search(
        index="stgym-logs*", body={"query": logsearch._exact(f"attributes.{field}", [value]),
                                   "size": 5000},
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
    )
    return [hit["_source"] for hit in response["hits"]["hits"]]


@pytest.fixture
def shipping(tmp_path, monkeypatch, opensearch_url, collector_address):
    host, port = collector_address
    monkeypatch.setenv("STGYM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STGYM_HOST", host)
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(port))
    logsearch.install_templates(opensearch_url)
    yield
    logsetup.shutdown()
    logcontext.unbind_context()


def test_collector_outage_loses_nothing_and_duplicates_nothing(
        shipping, opensearch_url, collector_address, unique_id):
    logsetup.configure_logging("stgym-outage-test", "json", "INFO", ship=True,
                               stream=io.StringIO(), log_file=False)
    logcontext.bind_context(run_id=f"outage-{unique_id}")
    log = logging.getLogger("stgym.test.outage")
    expected = [f"outage record {i}" for i in range(1000)]
    try:
        collector("down")
        assert not port_open(collector_address)
        started = time.monotonic()
        for i in range(1000):
            log.info("outage record %d", i, extra={"seq": i})
        assert time.monotonic() - started < 5.0  # a down collector never blocks the caller
        # While it is down the shipper gives up on its buffer: the records go to the disk spool.
        workload.wait_until(
            lambda: sum(len(logspool.read_spool_file(p)) for p in logsetup.spool_files()) == 1000,
            30, what="1,000 records spooled to disk")
    finally:
        collector("up")
    documents = workload.wait_until(
        lambda: (docs := stored(opensearch_url, "run_id", f"outage-{unique_id}")) and len(docs) >= 1000 and docs,
        180, 1.0, what="1,000 records in OpenSearch")
    time.sleep(5)  # a duplicate would arrive by now
    documents = stored(opensearch_url, "run_id", f"outage-{unique_id}")
    counts = Counter(document["body"] for document in documents)
    assert sorted(counts) == sorted(expected)
    assert set(counts.values()) == {1}, [m for m, n in counts.items() if n > 1][:5]
    assert logsetup.spool_files() == []
    sample = next(d for d in documents if d["body"] == "outage record 7")
    assert sample["attributes"]["seq"] == 7 and sample["attributes"]["level"] == "INFO"
    assert sample["attributes"]["service"] == "stgym-outage-test"
    assert sample["attributes"]["fluent.tag"] == "stgym.stgym-outage-test"
    # nanosecond event time survives the trip: @timestamp is the record's own timestamp
    assert sample["@timestamp"].rstrip("Z").split(".")[1].rstrip("0") == \
        sample["attributes"]["timestamp"].rstrip("Z").split(".")[1].rstrip("0")


def test_logs_search_cli_against_opensearch(shipping, opensearch_url, unique_id):
    service = f"stgym-search-{unique_id}"
    logsetup.configure_logging(service, "json", "DEBUG", ship=True, stream=io.StringIO(),
                               log_file=False)
    log = logging.getLogger("stgym.test.search")
    pause = lambda: time.sleep(0.01)  # distinct milliseconds: any @timestamp mapping sorts them
    with logcontext.bound_context(experiment_id=f"exp-a-{unique_id}", run_id="r1"):
        log.info("calibration pulse accepted")
        pause()
        log.warning("calibration drift detected")
        pause()
        try:
            raise ValueError("tmr out of range")
        except ValueError:
            log.exception("calibration failed")
        pause()
    with logcontext.bound_context(experiment_id=f"exp-b-{unique_id}", run_id="r2"):
        log.error("calibration failed on second device")
    workload.wait_until(lambda: len(stored(opensearch_url, "service", service)) == 4, 120, 1.0,
                       what="4 records in OpenSearch")

    def search(*argv: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "logs", "search", *argv, "--service", service,
             "--store", "opensearch", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return [record["message"] for record in json.loads(result.stdout)]

    assert search("calibration") == [
        "calibration pulse accepted", "calibration drift detected", "calibration failed",
        "calibration failed on second device"]
    assert search("calibration", "--level", "ERROR") == [
        "calibration failed", "calibration failed on second device"]
    assert search("", "--experiment", f"exp-b-{unique_id}") == ["calibration failed on second device"]
    assert search("tmr range", "--since", "30m") == ["calibration failed"]  # exception text
    assert search("drift", "--level", "WARNING", "--experiment", f"exp-a-{unique_id}") == [
        "calibration drift detected"]
    assert search("calibration", "--limit", "2") == [
        "calibration failed", "calibration failed on second device"]
    assert search("nothing-like-this") == []
    result = subprocess.run(
        [sys.executable, "-m", "stgym.cli", "logs", "search", "drift", "--service", service,
         "--store", "opensearch"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert f"WARNING  {service} stgym.test.search: calibration drift detected" in result.stdout
    assert f"[experiment_id=exp-a-{unique_id} run_id=r1]" in result.stdout
