"""`stgym logs search` on the local JSON log file (embedded mode) and the OpenSearch query."""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys

import pytest

from stgym import logcontext, logsearch, logsetup


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """A local log file with records of two services, two experiments and several levels."""
    monkeypatch.setenv("STGYM_DATA_DIR", str(tmp_path))
    logsetup.configure_logging("stgym-train", "json", "DEBUG", ship=False, stream=io.StringIO())
    log = logging.getLogger("stgym.train")
    with logcontext.bound_context(experiment_id="exp-a", run_id="run-1"):
        log.debug("pulse shaped")
        log.info("episode finished with switch")
        log.warning("slow simulation step")
        try:
            raise RuntimeError("integrator diverged")
        except RuntimeError:
            log.exception("episode failed")
    with logcontext.bound_context(experiment_id="exp-b", run_id="run-2"):
        log.info("episode finished without switch")
    logsetup.configure_logging("stgym-streams", "json", "INFO", ship=False, stream=io.StringIO())
    logging.getLogger("stgym.streams").error("database unavailable")
    logsetup.shutdown()
    yield logsetup.log_file_path()
    logcontext.unbind_context()


def messages(records):
    return [record["message"] for record in records]


def test_filters_on_local_file(logged):
    search = lambda **kw: messages(logsearch.search_file(logged, logsearch.LogQuery(**kw)))
    assert search() == [
        "pulse shaped", "episode finished with switch", "slow simulation step", "episode failed",
        "episode finished without switch", "database unavailable",
    ]
    assert search(text="episode finished") == [
        "episode finished with switch", "episode finished without switch"]
    assert search(text="DIVERGED") == ["episode failed"]  # exception text, any case
    assert search(level="WARNING") == ["slow simulation step", "episode failed", "database unavailable"]
    assert search(service="stgym-streams") == ["database unavailable"]
    assert search(experiment="exp-b") == ["episode finished without switch"]
    assert search(experiment="exp-a", level="ERROR") == ["episode failed"]
    assert search(limit=2) == ["episode finished without switch", "database unavailable"]
    assert search(since=dt.timedelta(hours=1)) == search()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    assert logsearch.search_file(logged, logsearch.LogQuery(since=dt.timedelta(hours=1)), now=later) == []


def test_cli_searches_the_local_file_with_json_output(logged):
    env = dict(os.environ, STGYM_DATA_DIR=str(logged.parent.parent))
    result = subprocess.run(
        [sys.executable, "-m", "stgym.cli", "logs", "search", "episode", "--store", "local",
         "--experiment", "exp-a", "--level", "INFO", "--since", "1h", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert messages(records) == ["episode finished with switch", "episode failed"]
    assert records[1]["exception"]["type"] == "RuntimeError"
    assert {r["run_id"] for r in records} == {"run-1"}


def test_cli_rejects_bad_arguments_in_one_line(logged):
    for argv, expected in (
        (["--since", "yesterday"], "argument --since: expected a duration"),
        (["--level", "LOUD"], "--level expects one of"),
        (["--limit", "0"], "--limit must be at least 1"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "logs", "search", "--store", "local", *argv],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_opensearch_query_has_the_same_semantics():
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    body = logsearch.opensearch_query(logsearch.LogQuery(
        text="diverged step", level="ERROR", service="stgym-train", experiment="exp-a",
        since=dt.timedelta(minutes=15), limit=7), now=now)
    filters = body["query"]["bool"]["filter"]
    assert filters[0]["bool"]["should"][0] == {"terms": {"attributes.level": ["ERROR", "CRITICAL"]}}
    assert filters[1]["bool"]["should"][0] == {"terms": {"attributes.service": ["stgym-train"]}}
    assert filters[2]["bool"]["should"][0] == {"terms": {"attributes.experiment_id": ["exp-a"]}}
    assert filters[3] == {"range": {"@timestamp": {"gte": "2026-01-02T02:49:05+00:00"}}}
    text = body["query"]["bool"]["must"][0]["simple_query_string"]
    assert text["query"] == "diverged step" and text["default_operator"] == "and"
    assert body["size"] == 7 and body["sort"] == [{"@timestamp": {"order": "desc"}}]


def test_documents_map_back_to_records():
    document = {"@timestamp": "2026-01-02T03:04:05.123456789Z", "body": "hello",
                "attributes": {"level": "INFO", "service": "s", "fluent.tag": "stgym.s",
                               "timestamp": "2026-01-02T03:04:05.123456789Z"}}
    assert logsearch.to_record(document) == {
        "level": "INFO", "service": "s", "timestamp": "2026-01-02T03:04:05.123456789Z",
        "message": "hello"}
