"""PostgreSQL-specific behaviour: reconnecting without loss when connections are killed."""
import threading
import time

import psycopg2
import pytest

from sinks.factory import open_sink
from stgym import events as ev
from stgym.errors import ServiceUnavailable
from stgym import kpi
from streams import workload
import streamkit

pytestmark = pytest.mark.services


def batch_of(episodes):
    return kpi.parse_records(
        [(ev.TOPIC_EPISODES, 0, i, None, ev.encode(e)) for i, e in enumerate(episodes)])


def test_killed_connections_reconnect_and_lose_nothing(postgres_url):
    episodes = workload.make_episodes(4000, "exp-kill", seed=11)
    sink = open_sink(postgres_url, max_backoff_s=0.5)
    sink.setup()
    done = threading.Event()
    kills = []

    def killer():
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        while not done.is_set():
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND application_name = 'stgym-sink'")
                kills.extend(row for row in cur.fetchall() if row[0])
            time.sleep(0.05)
        admin.close()

    thread = threading.Thread(target=killer)
    thread.start()
    deadline = time.monotonic() + 120
    try:
        while True:  # replaying everything is harmless; go on until the killer has struck 3 times
            for start in range(0, len(episodes), 100):
                sink.write_batch(batch_of(episodes[start:start + 100]))
            if sink.reconnects >= 3 or time.monotonic() > deadline:
                break
    finally:
        done.set()
        thread.join(30)
    assert len(kills) >= 3 and sink.reconnects >= 3
    streamkit.assert_matches_truth(sink.query_kpis(experiment="exp-kill"), streamkit.ground_truth(episodes))
    assert sink._fetch("SELECT COUNT(*) FROM episodes")[0][0] == 4000
    sink.close()


def test_unreachable_database_is_a_clear_error():
    sink = open_sink("postgresql://stgym:x@127.0.0.1:1/stgym", connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="does not answer"):
        sink.setup()
    assert time.monotonic() - started < 20
