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
from streams import workload


def store_episodes(url: str, experiment: str) -> list[ev.EpisodeEvent]:
    """Three minutes of episodes (3 one-minute windows) written through the real sink."""
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    episodes = []
    for minute in range(3):
        episodes += workload.make_episodes(200, experiment, seed=minute,
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


def _row(window_start: float, device: str, episodes: int, successes: int) -> dict:
    row = {"experiment_id": "e", "device_type": device, "algorithm": "cem",
           "window_start": window_start, "window_s": 60,
           **kpi.summarize({"episodes_total": episodes, "successes": successes,
                            "energy_success_sum": successes * 1e-13})}
    row.update(switching_time_s_p50=1e-9, switching_time_s_p95=2e-9)
    return row


def _colour_pixels(path, hex_colour: str) -> int:
    import numpy as np

    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(int)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=2) <= 30).sum())


BLUE, ORANGE = "#1f77b4", "#ff7f0e"  # matplotlib's first two cycle colours = the two keys


def test_one_window_is_drawn_as_bars_of_both_series(tmp_path):
    """One window: no date axis spanning years, side-by-side bars; two EQUAL series both show."""
    rows = [_row(1.7e9, "stt-pma", 100, 95), _row(1.7e9, "sot-pma", 100, 95)]
    output = kpiplot.draw(rows, tmp_path / "one.png", "t")
    blue, orange = _colour_pixels(output, BLUE), _colour_pixels(output, ORANGE)
    assert blue > 20_000 and orange > 20_000  # whole bars, not a dot each
    assert abs(blue - orange) / blue < 0.1  # equal values: equal bars, neither covers the other


def test_equal_series_over_several_windows_stay_visible(tmp_path):
    rows = [_row(1.7e9 + 60 * i, device, 100, 95 - i) for i in range(5)
            for device in ("stt-pma", "sot-pma")]  # identical values for both keys
    output = kpiplot.draw(rows, tmp_path / "five.png", "t")
    blue, orange = _colour_pixels(output, BLUE), _colour_pixels(output, ORANGE)
    assert orange > 2_000 and blue > 0.3 * orange  # the first key shows around the second
