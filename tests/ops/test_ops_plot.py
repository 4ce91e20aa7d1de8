"""`stgym plot kpi`: the KPI history of a database as a PNG."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import matplotlib.image

from sinks.factory import open_sink
from stgym import events as ev
from stgym import kpiplot
from stgym import kpi
from streams import testing


def store_episodes(url: str, experiment: str) -> list[ev.EpisodeEvent]:
    """Three minutes of episodes (3 one-minute windows) written through the real sink."""
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    episodes = []
    for minute in range(3):
        episodes += testing.make_episodes(200, experiment, seed=minute,
                                          start=start + dt.timedelta(minutes=minute))
    records = [(ev.TOPIC_EPISODES, 0, i, None, ev.encode(e)) for i, e in enumerate(episodes)]
    sink = open_sink(url)
    sink.setup()
    try:
        sink.write_batch(kpi.parse_records(records))
    finally:
        sink.close()
    return episodes


def test_plot_kpi_draws_every_series_and_window(tmp_path):
    url = f"sqlite:///{tmp_path / 'kpi.sqlite3'}"
    store_episodes(url, "exp-plot")
    output = tmp_path / "kpi.png"
    result = subprocess.run(
        [sys.executable, "-m", "stgym.cli", "plot", "kpi", "--db", url, "--experiment", "exp-plot",
         "-o", str(output)],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, STGYM_DATA_DIR=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    # 2 device types x 2 algorithms, each present in all 3 one-minute windows
    assert result.stdout.strip() == f"wrote {output} (12 windows, 4 series)"
    image = matplotlib.image.imread(output)
    assert image.shape[:2] == (700, 1200)


def test_series_are_grouped_per_key_in_time_order():
    rows = [
        {"experiment_id": "e", "device_type": "d", "algorithm": "a", "window_start": 120.0},
        {"experiment_id": "e", "device_type": "d", "algorithm": "a", "window_start": 60.0},
        {"experiment_id": "e", "device_type": "d", "algorithm": "b", "window_start": 60.0},
    ]
    grouped = kpiplot.series_by_key(rows)
    assert [r["window_start"] for r in grouped[("e", "d", "a")]] == [60.0, 120.0]
    assert len(grouped[("e", "d", "b")]) == 1


def test_empty_database_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stgym.cli", "plot", "kpi", "--db", f"sqlite:///{tmp_path / 'e.db'}",
         "-o", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, STGYM_DATA_DIR=str(tmp_path)),
    )
    assert result.returncode == 2 and "no KPI windows" in result.stderr
    assert "Traceback" not in result.stderr
