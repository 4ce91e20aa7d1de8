"""Structured logging: documents, context binding, shipping, buffering and spooling.

The forward-protocol receiver here is a small msgpack TCP server in the test, so that the
collector can be "down" (port closed) and "up" again at will; the same path against the real
collector and OpenSearch is covered by tests/ops/test_ops_logs_live.py.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import struct
import threading
import time

import msgpack
import pytest

from stgym import logcontext, logformat, logsetup, logspool

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


class ForwardReceiver:
    """Accepts Fluent forward Message-mode entries on a port and keeps them."""

    def __init__(self, port: int = 0) -> None:
        self.entries: list[tuple] = []
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        connections = []
        while not self._stop:
            try:
                conn, _ = self.server.accept()
                conn.setblocking(False)
                connections.append((conn, msgpack.Unpacker(raw=False)))
            except (socket.timeout, OSError):
                pass
            for conn, unpacker in connections:
                try:
                    chunk = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    continue
                unpacker.feed(chunk)
                self.entries.extend(unpacker)
        for conn, _ in connections:
            conn.close()

    def messages(self) -> list[str]:
        return [entry[2]["message"] for entry in self.entries]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.entries) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def log_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STGYM_DATA_DIR", str(tmp_path))
    yield tmp_path
    logsetup.shutdown()
    logcontext.unbind_context()


def test_json_document_has_every_field_and_bound_context(log_env):
    stream = io.StringIO()
    logsetup.configure_logging("stgym-test", "json", "INFO", ship=False, worker_id="w3",
                               stream=stream)
    log = logging.getLogger("stgym.test")
    logcontext.bind_context(experiment_id="exp-1", run_id="run-9")
    with logcontext.bound_context(episode=12):
        log.info("episode %d done", 12, extra={"energy_j": 2.5e-13})
    log.debug("not at INFO")
    try:
        raise ValueError("bad pulse")
    except ValueError:
        log.exception("training failed")

    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert RFC3339_NS.match(first["timestamp"])
    assert first["level"] == "INFO" and first["logger"] == "stgym.test"
    assert first["message"] == "episode 12 done"
    assert first["service"] == "stgym-test" and first["host"] == socket.gethostname()
    assert first["pid"] > 0 and first["worker_id"] == "w3"
    assert (first["experiment_id"], first["run_id"], first["episode"]) == ("exp-1", "run-9", 12)
    assert first["energy_j"] == 2.5e-13
    assert "episode" not in second  # the with-block restored the context
    assert second["level"] == "ERROR" and second["run_id"] == "run-9"
    assert second["exception"]["type"] == "ValueError"
    assert second["exception"]["message"] == "bad pulse"
    assert "raise ValueError" in second["exception"]["stacktrace"]


def test_bound_or_extra_fields_never_replace_the_record_fields(log_env):
    stream = io.StringIO()
    logsetup.configure_logging("stgym-test", "json", "INFO", ship=False, stream=stream)
    with logcontext.bound_context(service="other", run_id="r"):
        logging.getLogger("t").info("m", extra={"timestamp": "yesterday", "level": 3})
    document = json.loads(stream.getvalue())
    assert document["service"] == "stgym-test" and RFC3339_NS.match(document["timestamp"])
    assert document["level"] == "INFO" and document["run_id"] == "r"
    assert (document["extra_service"], document["extra_timestamp"], document["extra_level"]) == (
        "other", "yesterday", 3)


def test_local_json_file_and_console_format(log_env):
    stream = io.StringIO()
    logsetup.configure_logging("stgym-demo", "console", "DEBUG", ship=False, stream=stream)
    logcontext.bind_context(experiment_id="exp-2")
    logging.getLogger("stgym.demo").warning("slow step")
    logsetup.shutdown()
    line = stream.getvalue().strip()
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} WARNING stgym\.demo: slow step  \[experiment_id=exp-2\]$",
                    line)
    records = [json.loads(l) for l in logsetup.log_file_path().read_text().splitlines()]
    assert [(r["message"], r["experiment_id"]) for r in records] == [("slow step", "exp-2")]


def test_context_is_per_thread_and_task(log_env):
    stream = io.StringIO()
    logsetup.configure_logging("stgym-test", "json", "INFO", ship=False, stream=stream)
    logcontext.bind_context(run_id="main-run")

    def worker():
        logcontext.bind_context(run_id="thread-run")
        logging.getLogger("t").info("in thread")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    logging.getLogger("t").info("in main")
    runs = {json.loads(l)["message"]: json.loads(l)["run_id"] for l in stream.getvalue().splitlines()}
    assert runs == {"in thread": "thread-run", "in main": "main-run"}


def test_ships_with_nanosecond_event_time_and_service_tag(log_env, monkeypatch):
    receiver = ForwardReceiver()
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(receiver.port))
    try:
        logsetup.configure_logging("stgym-streams", "json", "INFO", ship=True, stream=io.StringIO())
        logcontext.bind_context(experiment_id="exp-3")
        logging.getLogger("stgym.streams").info("shipped")
        receiver.wait_for(1)
        tag, event_time, document = receiver.entries[0]
        assert tag == "stgym.stgym-streams"
        assert isinstance(event_time, msgpack.ExtType) and event_time.code == 0
        seconds, nanos = struct.unpack(">II", event_time.data)
        assert logformat.rfc3339_ns(seconds * 10**9 + nanos) == document["timestamp"]
        assert document["message"] == "shipped" and document["experiment_id"] == "exp-3"
    finally:
        receiver.close()


@pytest.fixture
def collector_down(log_env, monkeypatch) -> int:
    """Shipping configured towards a port where no collector listens (yet); the port."""
    port = free_port()
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(port))
    logsetup.configure_logging("stgym-test", "json", "INFO", ship=True, stream=io.StringIO(),
                               log_file=False)
    return port


def test_collector_down_then_up_delivers_every_record_exactly_once(collector_down):
    port = collector_down
    log = logging.getLogger("stgym.test")
    started = time.monotonic()
    for i in range(1000):
        log.info("record %d", i)
    assert time.monotonic() - started < 5.0  # a down collector never blocks the caller
    time.sleep(2.5)  # the shipper settles at least once while the collector is down
    receiver = ForwardReceiver(port)
    try:
        receiver.wait_for(1000, timeout_s=30)
        time.sleep(1.5)  # anything extra would arrive now
        assert sorted(receiver.messages()) == sorted(f"record {i}" for i in range(1000))
        assert logsetup.spool_files() == []
    finally:
        receiver.close()


def test_exit_while_down_spools_to_disk_and_next_process_replays(collector_down):
    port = collector_down
    for i in range(300):
        logging.getLogger("stgym.test").info("spooled %d", i)
    logsetup.shutdown()  # what runs at exit
    files = logsetup.spool_files()
    spooled = [e for path in files for e in logspool.read_spool_file(path)]
    assert sorted(e[2]["message"] for e in spooled) == sorted(f"spooled {i}" for i in range(300))
    assert all(tag == "stgym.stgym-test" for tag, _, _ in spooled)

    receiver = ForwardReceiver(port)
    try:
        logsetup.configure_logging("stgym-test", "json", "INFO", ship=True, stream=io.StringIO(),
                                   log_file=False)
        receiver.wait_for(300, timeout_s=30)
        time.sleep(1.5)
        assert sorted(receiver.messages()) == sorted(f"spooled {i}" for i in range(300))
        assert logsetup.spool_files() == []
    finally:
        receiver.close()


def test_a_collector_that_never_reads_does_not_block_logging(log_env, monkeypatch):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never reads: sends stall
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(silent.getsockname()[1]))
    try:
        logsetup.configure_logging("stgym-test", "json", "INFO", ship=True, stream=io.StringIO(),
                                   log_file=False)
        started = time.monotonic()
        for i in range(30_000):
            logging.getLogger("stgym.test").info("flood %d with some padding to fill buffers", i)
        assert time.monotonic() - started < 20.0
    finally:
        logsetup.shutdown()
        silent.close()


def test_a_forked_child_ships_through_its_own_connection(log_env, monkeypatch):
    receiver = ForwardReceiver()
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(receiver.port))
    try:
        logsetup.configure_logging("stgym-test", "json", "INFO", ship=True, stream=io.StringIO(),
                                   log_file=False)
        logging.getLogger("stgym.test").info("from parent")
        receiver.wait_for(1)
        pid = os.fork()
        if pid == 0:  # child: log, flush at exit, leave without running pytest's teardown
            logging.getLogger("stgym.test").info("from child")
            logsetup.shutdown()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        logging.getLogger("stgym.test").info("parent again")
        receiver.wait_for(3)
        assert sorted(receiver.messages()) == ["from child", "from parent", "parent again"]
        pids = {entry[2]["message"]: entry[2]["pid"] for entry in receiver.entries}
        assert pids["from child"] == pid and pids["from parent"] == os.getpid()
    finally:
        receiver.close()


def test_spool_is_replayed_while_records_keep_coming(collector_down):
    port = collector_down
    log = logging.getLogger("stgym.test")
    for i in range(200):
        log.info("before %d", i)
    deadline = time.monotonic() + 30
    while not logsetup.spool_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logsetup.spool_files(), "records were not spooled while the collector was down"
    receiver = ForwardReceiver(port)
    try:
        for i in range(40):  # never idle for a whole second
            log.info("during %d", i)
            time.sleep(0.1)
        replayed = [m for m in receiver.messages() if m.startswith("before")]
        assert len(replayed) == 200  # replayed within the 4 s of steady logging
        receiver.wait_for(240, timeout_s=30)
        time.sleep(1.5)
        expected = [f"before {i}" for i in range(200)] + [f"during {i}" for i in range(40)]
        assert sorted(receiver.messages()) == sorted(expected)
    finally:
        receiver.close()


def test_an_unwritable_data_dir_does_not_stop_the_process(log_env, monkeypatch):
    blocker = log_env / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    monkeypatch.setenv("STGYM_DATA_DIR", str(blocker))  # no log file, no spool possible
    monkeypatch.setenv("STGYM_COLLECTOR_FORWARD_PORT", str(free_port()))  # and no collector
    stream = io.StringIO()
    logsetup.configure_logging("stgym-test", "json", "INFO", ship=True, stream=stream)
    logging.getLogger("stgym.test").info("still logging")
    logsetup.shutdown()
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages[0].startswith("logging without the local log file")
    assert messages[1] == "still logging"
