"""Log retention: daily indices older than log_retention_days are deleted, others stay."""
from __future__ import annotations

import datetime as dt

import pytest

from stgym import logretention, logsearch

TODAY = dt.date(2026, 12, 1)


def test_expired_are_the_days_before_the_retention_window():
    names = ["stgym-logs-2026.12.01", "stgym-logs-2026.11.18", "stgym-logs-2026.11.17",
             "stgym-logs-2025.01.01", "stgym-logs-2025.01.01-restored", "stgym-logs",
             "stgym-logs-archive", "other-2020.01.01"]
    assert logretention.expired_indices(names, "stgym-logs", 14, TODAY) == [
        "stgym-logs-2025.01.01", "stgym-logs-2025.01.01-restored", "stgym-logs-2026.11.17"]
    with pytest.raises(ValueError, match="log retention must be >= 1 day, got 0"):
        logretention.expired_indices(names, "stgym-logs", 0, TODAY)


@pytest.mark.services
def test_delete_expired_on_the_real_store(opensearch_url, unique_id):
    prefix = f"stgym-retention-test-{unique_id}"  # never the shared log indices
    client = logsearch.client(opensearch_url)
    days = ["2026.12.01", "2026.11.20", "2026.10.01"]
    for day in days:
        client.indices.create(index=f"{prefix}-{day}")
    try:
        assert logretention.delete_expired(opensearch_url, prefix, 14, TODAY) == [f"{prefix}-2026.10.01"]
        left = {row["index"] for row in client.cat.indices(index=f"{prefix}-*", format="json")}
        assert left == {f"{prefix}-2026.12.01", f"{prefix}-2026.11.20"}
    finally:
        client.indices.delete(index=f"{prefix}-*")
