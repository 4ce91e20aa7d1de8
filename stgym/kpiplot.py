"""`stgym plot kpi`: the KPI history of the database as a PNG, for users without Grafana.

Reads the windowed KPI rows through the sinks' own query (`Sink.query_kpis(window_s=...)`,
the same rows as `stgym kpi --window`) and draws four panels over time, one line per
(experiment, device_type, algorithm): episodes per window, success rate, mean energy per
successful switch (pJ) and switching time p50/p95 (ns).
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

WINDOW_S = 60


def series_by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Windowed KPI rows grouped per key, oldest window first."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["experiment_id"], row["device_type"], row["algorithm"])].append(row)
    for key_rows in grouped.values():
        key_rows.sort(key=lambda r: r["window_start"])
    return dict(grouped)


def draw(rows: list[dict[str, Any]], output: Path, title: str) -> Path:
    """Write the four-panel PNG of windowed KPI rows to `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True, constrained_layout=True)
    panels = [
        (axes[0][0], "Episodes per window", [("episodes_total", 1.0, "-")]),
        (axes[0][1], "Success rate", [("success_rate", 1.0, "-")]),
        (axes[1][0], "Energy per switch [pJ]", [("energy_per_switch_j_mean", 1e12, "-")]),
        (axes[1][1], "Switching time [ns]: p50 solid, p95 dashed",
         [("switching_time_s_p50", 1e9, "-"), ("switching_time_s_p95", 1e9, "--")]),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (key, key_rows) in enumerate(series_by_key(rows).items()):
        times = [dt.datetime.fromtimestamp(r["window_start"], tz=dt.timezone.utc) for r in key_rows]
        color = colors[index % len(colors)]
        for axis, _, columns in panels:
            for column, scale, style in columns:
                values = [r[column] * scale if r.get(column) is not None else float("nan")
                          for r in key_rows]
                axis.plot(times, values, style or "-", color=color, marker="o", markersize=3,
                          label="/".join(key) if style in ("", "-") else None)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8, tz=dt.timezone.utc)
    for axis, name, _ in panels:
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
    axes[0][1].set_ylim(-0.02, 1.02)
    axes[0][1].axhline(0.8, color="red", linestyle="--", linewidth=1, label="alert threshold")
    axes[0][0].legend(fontsize="small", loc="best")
    axes[1][1].set_xlabel("window start (UTC)")
    axes[1][0].set_xlabel("window start (UTC)")
    figure.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output

