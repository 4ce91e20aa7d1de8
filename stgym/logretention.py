"""Retention of the log indices (settings.log_retention_days; docs/operations.md).

The collector writes one index a day, ``<logs_index>-YYYY.MM.DD``. `stgym retention apply`
deletes the days older than the retention period. (OpenSearch's Index State Management plugin
would do this on its own, but the integ-test distribution the bare machine runs has no plugins
and opensearch-index-management is not published on Maven Central; deleting by the day in the
index name works the same on OpenSearch and Elasticsearch.)
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Iterable

from stgym import logsearch


def expired_indices(names: Iterable[str], prefix: str, days: int, today: dt.date) -> list[str]:
    """The daily indices `<prefix>-YYYY.MM.DD` among `names` older than `days` days."""
    if days < 1:
        raise ValueError(f"log retention must be >= 1 day, got {days}")
    # `stgym backup restore` brings a day back as <prefix>-YYYY.MM.DD-restored.
    pattern = re.compile(rf"{re.escape(prefix)}-(\d{{4}})\.(\d{{2}})\.(\d{{2}})(?:-restored)?")
    oldest_kept = today - dt.timedelta(days=days - 1)
    expired = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and dt.date(*map(int, match.groups())) < oldest_kept:
            expired.append(name)
    return sorted(expired)


def delete_expired(url: str, prefix: str, days: int, today: dt.date | None = None) -> list[str]:
    """Delete the expired daily log indices in OpenSearch at `url`; their names."""
    client = logsearch.client(url)
    names = [row["index"] for row in client.cat.indices(index=f"{prefix}-*", format="json")]
    expired = expired_indices(names, prefix, days, today or dt.datetime.now(dt.timezone.utc).date())
    for name in expired:
        client.indices.delete(index=name)
    return expired
