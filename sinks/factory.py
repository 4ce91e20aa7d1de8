"""`open_sink(url)`: the store for a database URL (kept apart from sinks.base, which the
concrete stores import, so that no module imports its own importer)."""
from __future__ import annotations

from sinks.base import Sink
from sinks.postgres import PostgresSink
from sinks.sqlite import SQLiteSink
from stgym.errors import UserError


def open_sink(url: str, **kwargs) -> Sink:
    """A sink for postgresql://… or sqlite:///path (sqlite:// alone = in memory)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSink(url, **kwargs)
    if url.startswith("sqlite:"):
        return SQLiteSink(url, **kwargs)
    raise UserError(f"unsupported database URL {url!r}: expected postgresql://… or sqlite:///path")
