"""A PostgreSQL sink whose server goes away during its start-up migrations says the database
is unavailable (the stream worker's start loop waits and retries), it does not crash."""
from __future__ import annotations

import psycopg2
import pytest

from sinks.postgres import PostgresSink
from stgym.errors import ServiceUnavailable


class _Conn:
    closed = False

    def rollback(self):
        raise psycopg2.InterfaceError("connection already closed")

    def close(self):
        self.closed = True


def test_connection_lost_while_migrating_is_service_unavailable(monkeypatch):
    conn = _Conn()
    sink = PostgresSink("postgresql://stgym@127.0.0.1:1/stgym")
    monkeypatch.setattr(sink, "_connect", lambda: conn)

    def lost():
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sink, "migrate", lost)
    with pytest.raises(ServiceUnavailable, match="lost while migrating: server closed"):
        sink.setup()
    assert sink.conn is None and conn.closed
