"""SQLite store: the embedded default (`stgym demo`), one file in the user's data directory."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from collections.abc import Sequence

from sinks.base import SqlSink, UnstorableError, WriteResult, migrations, split_statements
from stgym.errors import UserError
from stgym import kpi

log = logging.getLogger(__name__)
# Refusals of the data itself (a CHECK or trigger: IntegrityError; an int beyond 64 bits:
# OverflowError; text that is not UTF-8: UnicodeEncodeError, a ValueError).
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, ValueError)


def sqlite_path(url: str) -> str:
    """sqlite:///abs/path, sqlite:///rel/path or sqlite:// (in memory) -> a path for sqlite3."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise UserError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.sqlite3")
    return url[len("sqlite:///"):]


class SQLiteSink(SqlSink):
    ph = "?"

    def __init__(self, url: str, readonly: bool = False) -> None:
        super().__init__(url, readonly)
        self.path = sqlite_path(url)
        self._lock = threading.RLock()  # one connection shared by the writer and /metrics

    def setup(self) -> None:
        if self.readonly:
            self._open_readonly()
            return
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def _open_readonly(self) -> None:
        if self.path == ":memory:":
            raise UserError("a read-only SQLite store needs a file, not sqlite:// (in memory)")
        uri = Path(self.path).expanduser().resolve().as_uri() + "?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("SELECT 1 FROM schema_migrations LIMIT 1")
        except sqlite3.Error as error:
            raise UserError(f"cannot read the KPI store {self.path}: {error} "
                            "(run `stgym demo` or `stgym db migrate` first)") from None

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; returns the versions applied."""
        applied = []
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            for migration in migrations():
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    done = self.conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                    ).fetchone()
                    if not done:
                        for statement in split_statements(migration.sql):
                            self.conn.execute(statement)
                        self.conn.execute(
                            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                            (migration.version, migration.name, time.time()),
                        )
                        applied.append(migration.version)
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
        if applied:
            log.info("sqlite %s: applied migrations %s", self.path, applied)
        return applied

    def _write_transaction(self, batch: kpi.ParsedBatch) -> WriteResult:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = self._apply(self.conn.cursor(), batch)
                self.conn.execute("COMMIT")
            except DATA_ERRORS as error:
                self.conn.execute("ROLLBACK")
                raise UnstorableError(str(error) or type(error).__name__) from None
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return result

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def ping(self) -> bool:
        try:
            with self._lock:
                self.conn.execute("SELECT 1").fetchone()
            return True
        except Exception:
            return False

    def _insert_new(self, cur, table: str, columns: Sequence[str], rows: list[tuple]) -> set[str]:
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
               f" ({', '.join('?' * len(columns))}) ON CONFLICT (event_id) DO NOTHING")
        new = set()
        for row in rows:
            cur.execute(sql, row)
            if cur.rowcount == 1:
                new.add(row[0])
        return new

    def _upsert(self, cur, table, columns, conflict, update_sql, rows) -> None:
        cur.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {update_sql}",
            rows,
        )

    def _floor_window(self, column: str, window_s: int) -> str:
        w = int(window_s)
        return f"(CAST({column} / {w} AS INTEGER) * {w})"  # event times are positive

    def _fetch(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, list(params)).fetchall()

    def _switch_times(self, where: str, params: list, group_window: int | None) -> dict:
        wexpr = self._floor_window("ts", group_window) if group_window else "NULL"
        sql = (f"SELECT {wexpr}, experiment_id, device_type, algorithm, switching_time_s"
               " FROM episodes WHERE success = 1 AND switching_time_s IS NOT NULL"
               + (f" AND {where}" if where else ""))
        out: dict = {}
        for ws, *key, t in self._fetch(sql, params):
            out.setdefault((float(ws) if ws is not None else None, *key), []).append(t)
        return {key: kpi.percentiles_of(times) for key, times in out.items()}
