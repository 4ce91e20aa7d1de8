"""`stgym plot kpi`: the KPI history of the database as a PNG, for users without Grafana.

Reads the windowed KPI rows through the sinks' own query (`Sink.query_kpis(window_s=...)`,
the same rows as `stgym kpi --window`) and draws four panels over time, one line per
(experiment, device_type, algorithm): episodes per window, success rate with its exact 95 %
interval, mean energy per successful switch (pJ) and switching time p50/p95 (ns). Readable at
any number of windows: one window is drawn as grouped bars with their values, several as lines
on an axis spanning just the windows; every series keeps its own colour, marker, dash and width
(later ones thinner, on top), so equal series never hide one another.
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


# Per key: marker, line style and a width that shrinks with the key's index, drawn later keys
# on top, so two equal series still show both (the thinner line inside the thicker one).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLES = ("-", "--", "-.", ":")
PANELS = (
    ("Episodes per window", (("episodes_total", 1.0, ""),)),
    ("Success rate (95 % exact interval)", (("success_rate", 1.0, ""),)),
    ("Energy per switch [pJ]", (("energy_per_switch_j_mean", 1e12, ""),)),
    ("Switching time [ns]: p50, p95 dotted", (("switching_time_s_p50", 1e9, "p50"),
                             ("switching_time_s_p95", 1e9, "p95"))),
)


def _success_interval(row: dict[str, Any]) -> tuple[float, float]:
    """(below, above) the success rate: the write error rate's exact interval, flipped."""
    rate, lower, upper = (row.get(k) for k in ("success_rate", "write_error_rate_lower95",
                                                "write_error_rate_upper95"))
    if rate is None or lower is None or upper is None:
        return 0.0, 0.0
    return max(rate - (1.0 - upper), 0.0), max((1.0 - lower) - rate, 0.0)


def draw(rows: list[dict[str, Any]], output: Path, title: str) -> Path:
    """Write the four-panel PNG of windowed KPI rows to `output`: lines over time when there
    are several windows, grouped bars when there is one (a single point on a date axis says
    nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 7), constrained_layout=True)
    series = series_by_key(rows)
    windows = sorted({r["window_start"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (name, columns) in zip(axes.flat, PANELS):
        if len(windows) == 1:
            _bars(axis, series, columns, colors, name.startswith("Success"))
        else:
            _lines(axis, series, columns, colors, windows, name.startswith("Success"))
        axis.set_title(name)
        axis.grid(alpha=0.3)
    success_axis = axes.flat[1]
    success_axis.set_ylim(-0.02, 1.02)
    success_axis.axhline(0.8, color="red", linestyle="--", linewidth=1, label="alert threshold")
    axes.flat[0].legend(fontsize="small", loc="best")
    if len(windows) == 1:
        when = dt.datetime.fromtimestamp(windows[0], tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        title = f"{title} — one window, starting {when} UTC"
    figure.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def _style(index: int) -> dict[str, Any]:
    return {"marker": MARKERS[index % len(MARKERS)], "linestyle": STYLES[index % len(STYLES)],
            "linewidth": max(4.5 - 2.0 * index, 1.2), "markersize": max(11.0 - 4.0 * index, 4.0),
            "zorder": 2 + index}


def _lines(axis, series, columns, colors, windows, with_interval: bool) -> None:
    import matplotlib.dates as mdates

    for index, (key, key_rows) in enumerate(series.items()):
        times = [dt.datetime.fromtimestamp(r["window_start"], tz=dt.timezone.utc) for r in key_rows]
        style = _style(index)
        for column_index, (column, scale, suffix) in enumerate(columns):
            values = [r[column] * scale if r.get(column) is not None else float("nan")
                      for r in key_rows]
            label = "/".join(key) + (f" {suffix}" if suffix else "")
            line_style = style if column_index == 0 else {**style, "linestyle": ":", "marker": "x"}
            axis.plot(times, values, color=colors[index % len(colors)], label=label, **line_style)
            if with_interval:
                below, above = zip(*(_success_interval(r) for r in key_rows))
                axis.fill_between(times, [v - b for v, b in zip(values, below)],
                                  [v + a for v, a in zip(values, above)],
                                  color=colors[index % len(colors)], alpha=0.12, linewidth=0)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8, tz=dt.timezone.utc)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
    step = min(b - a for a, b in zip(windows, windows[1:]))
    axis.set_xlim(dt.datetime.fromtimestamp(windows[0] - step / 2, tz=dt.timezone.utc),
                  dt.datetime.fromtimestamp(windows[-1] + step / 2, tz=dt.timezone.utc))
    axis.set_xlabel("window start (UTC)")


def _bars(axis, series, columns, colors, with_interval: bool) -> None:
    """One group of bars per column, one bar per key side by side, each with its value."""
    keys = list(series)
    width = 0.8 / max(len(keys), 1)
    for index, key in enumerate(keys):
        row = series[key][0]
        xs, values, errors = [], [], []
        for column_index, (column, scale, _) in enumerate(columns):
            xs.append(column_index - 0.4 + width * (index + 0.5))
            values.append(row[column] * scale if row.get(column) is not None else 0.0)
            errors.append(_success_interval(row) if with_interval else (0.0, 0.0))
        bars = axis.bar(xs, values, width=width * 0.95, color=colors[index % len(colors)],
                        label="/".join(key), yerr=list(zip(*errors)) if with_interval else None,
                        capsize=4)
        axis.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    axis.set_xticks(range(len(columns)), [suffix or "" for _, _, suffix in columns])
    if len(columns) == 1:
        axis.set_xticks([])
