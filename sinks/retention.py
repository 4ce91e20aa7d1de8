"""Retention of the per-event rows (settings.episodes_retention_months; docs/operations.md).

`stgym retention apply` deletes episode and training-progress rows older than the retention
period in batches, each batch its own short transaction, so the stream sinks keep writing
meanwhile. The KPI aggregates (kpi_cumulative, kpi_histograms) and the experiment and run rows
are kept: the totals stay exact after the raw rows are gone; only what is computed from the raw
rows (switching-time percentiles, the windows of `stgym kpi --window`) no longer covers the
deleted period.
"""
from __future__ import annotations

import calendar
import datetime as dt

from sinks.base import SqlSink

EVENT_TABLES = ("episodes", "training_progress")
BATCH_ROWS = 10_000


def months_before(now: dt.datetime, months: int) -> dt.datetime:
    """The same day and time `months` calendar months earlier (clipped to the month's end)."""
    if months < 0:
        raise ValueError(f"retention must be >= 0 months, got {months}")
    index = now.year * 12 + now.month - 1 - months
    year, month = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def purge_events(sink: SqlSink, before_ts: float, batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """Delete the rows of EVENT_TABLES with ts < before_ts (Unix s); rows deleted per table."""
    deleted = {}
    for table in EVENT_TABLES:
        total = 0
        while True:
            cur = sink.conn.cursor()
            cur.execute(f"DELETE FROM {table} WHERE event_id IN (SELECT event_id FROM {table}"
                        f" WHERE ts < {sink.ph} ORDER BY ts LIMIT {int(batch_rows)})", [before_ts])
            count = cur.rowcount
            cur.close()
            sink.conn.commit()
            total += count
            if count < batch_rows:
                break
        deleted[table] = total
    return deleted
