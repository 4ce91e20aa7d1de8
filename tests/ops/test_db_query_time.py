"""Database query time: pg_stat_statements (preloaded by compose/bare/postgres.sh) exported by
postgres-exporter (compose/prometheus/postgres-exporter-queries.yaml), on the shared services."""
from __future__ import annotations

import re
import time

import psycopg2
import pytest
import requests


def scrape(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^(pg_stat_statements_\w+)\{role="stgym",[^}]*\} (\S+)$', text, re.M)}


def test_statements_of_the_application_role_are_timed(postgres_url, stgym_settings):
    s = stgym_settings
    url = f"http://{s.shared_host}:{s.postgres_exporter_port}/metrics"
    try:
        before = scrape(url)
    except requests.RequestException as error:
        pytest.fail(f"postgres-exporter does not answer at {url} ({error}); start it with "
                    "`bash compose/bare/services.sh up postgres-exporter`", pytrace=False)
    assert {"pg_stat_statements_calls", "pg_stat_statements_exec_seconds"} <= set(before), (
        "no pg_stat_statements series: is the extension preloaded (compose/bare/postgres.sh)?")
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            for _ in range(50):  # ~50 x 20 ms of server time
                cur.execute("SELECT pg_sleep(0.02)")
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while True:
        after = scrape(url)
        calls = after["pg_stat_statements_calls"] - before["pg_stat_statements_calls"]
        seconds = after["pg_stat_statements_exec_seconds"] - before["pg_stat_statements_exec_seconds"]
        if calls >= 50 and seconds >= 1.0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert calls >= 50
    assert seconds == pytest.approx(1.0, rel=0.5) or seconds > 1.0  # 50 x 20 ms, plus the rest of the load
