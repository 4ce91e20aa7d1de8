"""PostgreSQL store for the services: batched writes in one transaction, reconnect with backoff.

While the database is down (a restart, a network cut) `write_batch` keeps the batch in memory
and retries with exponential backoff until it commits; the caller acknowledges its Kafka
offsets only after that, so nothing is lost and nothing double-counts (event_id upserts).
Rows the database refuses for what they hold (DATA_ERRORS) are isolated by SqlSink's bisection
instead, and come back as `unstorable`.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extras

from sinks import pgcopy
from sinks.base import SqlSink, UnstorableError, WriteResult, migrations, split_statements
from stgym.errors import ServiceUnavailable
from stgym import kpi

log = logging.getLogger(__name__)

RETRYABLE = (psycopg2.OperationalError, psycopg2.InterfaceError,
             psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure,
             psycopg2.errors.AdminShutdown)
# Refusals of the data itself: retrying the same rows cannot succeed (write_batch bisects).
# psycopg2 refuses text with NUL characters (ValueError) before sending it.
DATA_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.RaiseException,
               ValueError)
MIGRATION_LOCK_ID = 0x57_67_79_6D  # pg_advisory_xact_lock key for migrations


class PostgresSink(SqlSink):
    ph = "%s"

    def __init__(self, url: str, connect_timeout_s: float = 30.0,
                 max_backoff_s: float = 5.0, max_outage_s: float | None = None,
                 readonly: bool = False) -> None:
        super().__init__(url, readonly)
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.max_outage_s = max_outage_s  # None: retry a failing write forever
        self._read_conn = None
        self._read_lock = threading.Lock()
        self._closed = False
        self._interrupted = threading.Event()
        self._encoders: dict = {}  # (table, columns) -> binary COPY row encoder
        self.reconnects = 0

    # -- connections ---------------------------------------------------------------------
    def _connect(self):
        conn = psycopg2.connect(self.url, connect_timeout=5, application_name="stgym-sink")
        conn.autocommit = False
        return conn

    def _connect_with_retry(self, deadline: float | None):
        delay = 0.1
        while True:
            try:
                return self._connect()
            except psycopg2.OperationalError as error:
                if self._closed or self._interrupted.is_set() or (
                        deadline is not None and time.monotonic() > deadline):
                    raise ServiceUnavailable(
                        f"PostgreSQL at {redact(self.url)} does not answer: {str(error).strip()}"
                    ) from None
                log.warning("PostgreSQL unavailable (%s); retrying in %.1f s",
                            str(error).strip().splitlines()[0], delay)
                self._interrupted.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def setup(self) -> None:
        if self.readonly:  # reads connect lazily (and again after an outage) in _fetch
            return
        self.conn = self._connect_with_retry(time.monotonic() + self.connect_timeout_s)
        try:
            self.migrate()
        except RETRYABLE as error:  # the server went away mid-migration: try again later
            self._rollback_quietly()
            self._drop_conn()
            raise ServiceUnavailable(f"PostgreSQL at {redact(self.url)} was lost while "
                                     f"migrating: {str(error).strip()}") from None

    def migrate(self) -> list[int]:
        """Apply pending migrations; concurrent workers serialise on an advisory lock."""
        applied = []
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                self.conn.commit()
                for migration in migrations():
                    cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                                (migration.version,))
                    if cur.fetchone():
                        continue
                    for statement in split_statements(migration.sql):
                        cur.execute(statement)
                    cur.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                                (migration.version, migration.name, time.time()))
                    self.conn.commit()
                    applied.append(migration.version)
            except BaseException:
                self.conn.rollback()
                raise
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
                self.conn.commit()
        if applied:
            log.info("postgres: applied migrations %s", applied)
        return applied

    # -- write side ----------------------------------------------------------------------
    def _write_transaction(self, batch: kpi.ParsedBatch) -> WriteResult:
        delay = 0.1
        first_failure = None
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect()
                    self.reconnects += 1
                    log.info("PostgreSQL reconnected; writing the held batch of %d events", len(batch))
                with self.conn.cursor() as cur:
                    result = self._apply(cur, batch)
                self.conn.commit()
                self.outage = None
                return result
            except DATA_ERRORS as error:
                if isinstance(error, psycopg2.Error):
                    self._rollback_quietly()
                else:  # refused client-side, maybe in mid-COPY: the connection is unusable
                    self._drop_conn()
                raise UnstorableError(str(error).strip() or type(error).__name__) from None
            except RETRYABLE as error:
                first_failure = first_failure or time.monotonic()
                self._rollback_quietly()
                if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not isinstance(
                        error, (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)):
                    self._drop_conn()
                self.outage = (str(error).strip() or type(error).__name__).splitlines()[0]
                if self._closed or self._interrupted.is_set() or (
                        self.max_outage_s is not None
                        and time.monotonic() - first_failure > self.max_outage_s):
                    raise ServiceUnavailable(
                        f"PostgreSQL write failed for too long: {str(error).strip()}") from None
                log.warning("PostgreSQL write failed (%s); holding %d events, retry in %.1f s",
                            self.outage, len(batch), delay)
                self._interrupted.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def interrupt(self) -> None:
        self._interrupted.set()

    def _rollback_quietly(self) -> None:
        try:
            if self.conn is not None and not self.conn.closed:
                self.conn.rollback()
        except Exception:  # a broken connection is dropped and reopened by the caller
            pass

    def _drop_conn(self) -> None:
        _close_quietly(self.conn)
        self.conn = None

    def close(self) -> None:
        self._closed = True
        self._drop_conn()
        with self._read_lock:
            _close_quietly(self._read_conn)
            self._read_conn = None

    def ping(self) -> bool:
        try:
            self._fetch("SELECT 1")
            return True
        except Exception:
            return False

    COPY_MIN_ROWS = 64

    def _copy_encoder(self, cur, table: str, columns: Sequence[str]):
        """The binary COPY row encoder of `columns` of `table` (built once per sink)."""
        key = (table, tuple(columns))
        if key not in self._encoders:
            cur.execute(pgcopy.COLUMNS_SQL, (table,))
            catalog = {name: (oid, not_null) for name, oid, not_null in cur.fetchall()}
            self._encoders[key] = pgcopy.row_encoder([(c, *catalog[c]) for c in columns])
        return self._encoders[key]

    def _insert_new(self, cur, table: str, columns: Sequence[str], rows: list[tuple]) -> set[str]:
        """Big batches: binary COPY into a per-transaction staging table, then one INSERT …
        SELECT ON CONFLICT DO NOTHING RETURNING (COPY is several times faster than VALUES
        lists, and its binary form does not print and parse every float)."""
        if len(rows) >= self.COPY_MIN_ROWS:
            cols = ", ".join(columns)
            stage = f"stage_{table}"
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DELETE ROWS")
            # encoded here, so text PostgreSQL cannot hold fails as a ValueError (data), not
            # as a COPY aborted mid-stream (which psycopg2 reports like a lost connection)
            data = io.BytesIO(pgcopy.copy_data(self._copy_encoder(cur, table, columns), rows))
            cur.copy_expert(f"COPY {stage} ({cols}) FROM STDIN (FORMAT binary)", data)
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"
                        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
            return {r[0] for r in cur.fetchall()}
        new = psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            rows, page_size=max(len(rows), 1), fetch=True,
        )
        return {r[0] for r in new}

    def _upsert(self, cur, table, columns, conflict, update_sql, rows) -> None:
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s"
            f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {update_sql}",
            rows, page_size=max(len(rows), 1),
        )

    # -- read side (own autocommit connection: /metrics and queries run in other threads) --
    def _fetch(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._read_lock:
            for attempt in (1, 2):
                try:
                    if self._read_conn is None or self._read_conn.closed:
                        self._read_conn = psycopg2.connect(self.url, connect_timeout=5,
                                                           application_name="stgym-sink-read")
                        self._read_conn.set_session(readonly=True, autocommit=True)
                    with self._read_conn.cursor() as cur:
                        cur.execute(sql, list(params))
                        return cur.fetchall()
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    _close_quietly(self._read_conn)
                    self._read_conn = None
                    if attempt == 2:
                        raise
        return []

    def _switch_times(self, where: str, params: list, group_window: int | None) -> dict:
        wexpr = self._floor_window("ts", group_window) if group_window else "NULL::double precision"
        sql = (f"SELECT {wexpr} AS ws, experiment_id, device_type, algorithm,"
               " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY switching_time_s)"
               " FROM episodes WHERE success = 1 AND switching_time_s IS NOT NULL"
               + (f" AND {where}" if where else "")
               + " GROUP BY 1, experiment_id, device_type, algorithm")
        return {
            (float(ws) if ws is not None else None, e, d, a): tuple(p)
            for ws, e, d, a, p in self._fetch(sql, params)
        }


def _close_quietly(conn) -> None:
    """Close a connection that may already be broken or None; errors do not matter here."""
    try:
        if conn is not None:
            conn.close()
    except Exception:
        pass


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
