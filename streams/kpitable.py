"""The KPI table printed by `stgym kpi` and `stgym demo`."""
from __future__ import annotations

KPI_COLUMNS = (
    ("episodes_total", "episodes", "{:d}"),
    ("success_rate", "success", "{:.1%}"),
    ("energy_per_switch_j_mean", "E/switch [J]", "{:.3e}"),
    ("switching_time_s_p50", "t_sw p50 [s]", "{:.3e}"),
    ("switching_time_s_p95", "p95 [s]", "{:.3e}"),
    ("switching_time_s_p99", "p99 [s]", "{:.3e}"),
    ("sim_steps_per_s", "sim steps/s", "{:,.0f}"),
)


def print_kpi_table(rows: list[dict], title: str = "KPIs") -> None:
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    import sys

    console = Console(width=None if sys.stdout.isatty() else 160)
    if not rows:
        console.print(f"{title}: no episodes stored yet (train with `stgym train` or `stgym demo`).")
        return
    table = Table(title=title)
    windowed = "window_start" in rows[0]
    if windowed:
        table.add_column("window (UTC)")
    for name in ("experiment", "device", "algorithm"):
        table.add_column(name)
    for _, header, _ in KPI_COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        cells = []
        if windowed:
            cells.append(dt.datetime.fromtimestamp(row["window_start"], dt.timezone.utc).strftime("%H:%M:%S"))
        cells += [row["experiment_id"], row["device_type"], row["algorithm"]]
        for key, _, fmt in KPI_COLUMNS:
            value = row.get(key)
            cells.append("—" if value is None else fmt.format(value))
        table.add_row(*cells)
    console.print(table)
