"""Episode retention (`stgym retention apply`): rows older than the cutoff go, in batches; the
KPI aggregates stay. SQLite here, PostgreSQL against the real server."""
from __future__ import annotations

import datetime as dt

import pytest

from sinks import retention
from sinks.factory import open_sink

NOW = 1_780_000_000.0  # 2026-05-28
DAY = 86400.0


def add_rows(sink, timestamps: list[float]) -> None:
    cur = sink.conn.cursor()
    ph = sink.ph
    for i, ts in enumerate(timestamps):
        cur.execute(
            "INSERT INTO episodes (event_id, ts, experiment_id, run_id, worker_id, device_type,"
            " algorithm, episode, seed, success, energy_j, switching_time_s, steps, total_reward,"
            " sim_steps, wall_time_s, sim_steps_per_s, ingested_at) VALUES"
            f" ({', '.join([ph] * 18)})",
            [f"ep-{i}", ts, "exp", "run", "w0", "stt-pma", "cem", i, i, 1, 1e-13, 1e-9, 10, 1.0,
             100, 0.01, 1e4, ts])
        cur.execute(
            "INSERT INTO training_progress (event_id, ts, experiment_id, run_id, worker_id,"
            " device_type, algorithm, iteration, objective, learning_rate, model_accuracy,"
            f" ingested_at) VALUES ({', '.join([ph] * 12)})",
            [f"tp-{i}", ts, "exp", "run", "w0", "stt-pma", "cem", i, 1.0, 0.1, 0.5, ts])
    cur.execute("INSERT INTO kpi_cumulative (experiment_id, device_type, algorithm, episodes_total,"
                f" updated_at) VALUES ({ph}, {ph}, {ph}, {ph}, {ph})",
                ["exp", "stt-pma", "cem", len(timestamps), NOW])
    cur.close()
    sink.conn.commit()


def count(sink, table: str) -> int:
    return sink._fetch(f"SELECT COUNT(*) FROM {table}")[0][0]


def check_purge(sink) -> None:
    sink.setup()
    old = [NOW - 400 * DAY + i for i in range(25)]
    add_rows(sink, old + [NOW - DAY, NOW])
    deleted = retention.purge_events(sink, NOW - 365 * DAY, batch_rows=10)
    assert deleted == {"episodes": 25, "training_progress": 25}
    assert count(sink, "episodes") == 2 and count(sink, "training_progress") == 2
    assert sink._fetch("SELECT episodes_total FROM kpi_cumulative")[0][0] == 27
    assert retention.purge_events(sink, NOW - 365 * DAY) == {"episodes": 0, "training_progress": 0}


def test_purge_in_batches_keeps_aggregates_sqlite(tmp_path):
    sink = open_sink(f"sqlite:///{tmp_path / 'kpi.sqlite3'}")
    try:
        check_purge(sink)
    finally:
        sink.close()


@pytest.mark.services
def test_purge_in_batches_keeps_aggregates_postgres(postgres_url):
    sink = open_sink(postgres_url)
    try:
        check_purge(sink)
    finally:
        sink.close()


@pytest.mark.parametrize("now, months, expected", [
    (dt.datetime(2026, 3, 31, 12), 1, dt.datetime(2026, 2, 28, 12)),
    (dt.datetime(2026, 1, 15), 12, dt.datetime(2025, 1, 15)),
    (dt.datetime(2026, 1, 15), 13, dt.datetime(2024, 12, 15)),
    (dt.datetime(2026, 1, 15), 0, dt.datetime(2026, 1, 15)),
])
def test_months_before_is_calendar_months(now, months, expected):
    assert retention.months_before(now, months) == expected


def test_negative_retention_is_refused():
    with pytest.raises(ValueError, match="retention must be >= 0 months, got -1"):
        retention.months_before(dt.datetime(2026, 1, 1), -1)
