"""Structured logging for every stgym process, configured in one place.

Every component logs through stdlib `logging` (`log = logging.getLogger(__name__)`); the
entry point of a process calls `configure_logging` once (the `stgym` CLI does it for every
subcommand from `--log-format` and `--log-level`). Each record becomes one document:

=============  ===============================================================
field          content
=============  ===============================================================
timestamp      RFC 3339 UTC with nanoseconds, e.g. ``2026-11-29T21:22:33.123456789Z``
level          DEBUG, INFO, WARNING, ERROR, CRITICAL
logger         the logger name (module path)
message        the formatted message
service        the process's service name (``stgym-train``, ``stgym-streams`` ...)
host, pid      where it ran
worker_id      bound once per worker process (``configure_logging(worker_id=...)``)
experiment_id  bound per run with `bind_context` (absent when unknown)
run_id         bound per run with `bind_context`
episode        bound per episode with `bind_context`, or passed as ``extra={"episode": n}``
exception      ``{"type", "message", "stacktrace"}`` when logged with ``exc_info``
<extra keys>   anything passed with ``extra={...}`` or bound with `bind_context`
=============  ===============================================================

Binding context (contextvars, so it follows the current thread or asyncio task)::

    from stgym.logsetup import bind_context, bound_context
    bind_context(experiment_id="exp-7", run_id="run-3")   # once per run
    with bound_context(episode=12):                       # temporarily, restored on exit
        log.info("episode finished")                      # carries all four fields

Outputs:

* stderr: ``console`` (one readable line, for people and the embedded demo) or ``json``
  (one JSON document a line, for services).
* the local JSON log file ``<data_dir>/logs/stgym.jsonl`` (always; `stgym logs search` reads it
  in embedded mode).
* the collector (Fluent forward protocol, fluent-logger's ``FluentHandler``, nanosecond event
  times, tag ``stgym.<service>``) at ``settings.host:settings.collector_forward_port`` when
  shipping is on (``settings.log_ship``: ``auto`` = when the format is json, ``on``, ``off``).

Shipping never blocks or crashes the caller: records go through a bounded in-memory queue to
one background thread. While the collector is down, fluent-logger buffers them; whatever it
cannot deliver (buffer overflow, a full queue, pending data at exit) is spooled to
``<data_dir>/logs/spool/*.msgpack`` — the exact bytes of the forward protocol — and replayed
to the collector as soon as it answers again, by this process or the next one.
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import itertools
import json
import logging
import logging.handlers
import os
import queue
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import msgpack
from fluent import handler as fluent_handler
from fluent.sender import EventTime

from stgym import settings as settings_module

CONTEXT_FIELDS = ("worker_id", "experiment_id", "run_id", "episode")
LOG_FILE_NAME = "stgym.jsonl"
SPOOL_SUFFIX = ".msgpack"
_QUEUE_MAX_RECORDS = 10_000
_FLUENT_BUFFER_BYTES = 1024 * 1024
_OVERFLOW_CHUNK_BYTES = 256 * 1024
_IDLE_SETTLE_S = 1.0
# Chatty libraries that log every request at INFO: only their warnings are kept.
_QUIET_LOGGERS = ("opensearch", "urllib3", "kafka", "aiokafka", "faust", "mode")
_CONNECT_TIMEOUT_S = 1.0

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "stgym_log_context", default={}
)
_process_context: dict[str, Any] = {}
_installed_handlers: list[logging.Handler] = []
_original_record_factory = logging.getLogRecordFactory()

_BASE_FIELDS = frozenset(
    {"timestamp", "level", "logger", "message", "service", "host", "pid", "exception"}
)
# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "created_ns", "service", "hostname"}


# --------------------------------------------------------------------------- context binding
def bind_context(**fields: Any) -> None:
    """Add fields to every record logged from now on in this thread / asyncio task.

    Typical: ``bind_context(experiment_id=..., run_id=...)`` at the start of a run. A value of
    None removes the field.
    """
    merged = {**_context.get(), **fields}
    _context.set({key: value for key, value in merged.items() if value is not None})


def unbind_context(*names: str) -> None:
    """Remove bound fields (all of them when no name is given)."""
    if not names:
        _context.set({})
        return
    _context.set({k: v for k, v in _context.get().items() if k not in names})


@contextlib.contextmanager
def bound_context(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a `with` block, then restore the previous context."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def get_context() -> dict[str, Any]:
    """The fields bound for this process and the current context (context wins)."""
    return {**_process_context, **_context.get()}


# --------------------------------------------------------------------------- documents
def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _original_record_factory(*args, **kwargs)
    record.created_ns = time.time_ns()
    return record


def rfc3339_ns(unix_ns: int) -> str:
    """``2026-11-29T21:22:33.123456789Z`` for a time in nanoseconds since the epoch (UTC)."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _record_ns(record: logging.LogRecord) -> int:
    return getattr(record, "created_ns", None) or int(record.created * 1e9)


class ContextFilter(logging.Filter):
    """Stamps service, host, pid and the bound context on a record, in the logging thread."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.hostname = socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "stgym_context"):
            record.service = self.service
            record.hostname = self.hostname
            record.stgym_context = get_context()
        return True


def to_document(record: logging.LogRecord) -> dict[str, Any]:
    """The structured document of a record (after `ContextFilter` ran), built once per record
    and shared by every handler."""
    cached = record.__dict__.get("_stgym_document")
    if cached is not None:
        return cached
    document: dict[str, Any] = {
        "timestamp": rfc3339_ns(_record_ns(record)),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "service": getattr(record, "service", None),
        "host": getattr(record, "hostname", None) or socket.gethostname(),
        "pid": record.process,
    }
    extras = dict(getattr(record, "stgym_context", {}))
    extras.update(
        (key, value) for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and key != "stgym_context" and not key.startswith("_")
    )
    for key, value in extras.items():
        # bound or extra fields never replace the record's own (timestamp, level, ...)
        document[f"extra_{key}" if key in _BASE_FIELDS else key] = value
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc_value, exc_tb = record.exc_info
        document["exception"] = {
            "type": exc_type.__name__,
            "message": str(exc_value),
            "stacktrace": "".join(traceback.format_exception(exc_type, exc_value, exc_tb)),
        }
    elif record.exc_text:
        document["exception"] = {"type": None, "message": None, "stacktrace": record.exc_text}
    document = _jsonable(document)
    record._stgym_document = document
    return document


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON document a line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(to_document(record), ensure_ascii=False, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """``21:22:33.123 INFO  stgym.x: message  experiment_id=e run_id=r`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        context = getattr(record, "stgym_context", {})
        suffix = " ".join(f"{k}={context[k]}" for k in CONTEXT_FIELDS if k in context)
        line = f"{stamp} {record.levelname:<7s} {record.name}: {record.getMessage()}"
        if suffix:
            line = f"{line}  [{suffix}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


# --------------------------------------------------------------------------- spooling
class Spool:
    """A directory of msgpack files holding forward-protocol bytes not yet delivered."""

    def __init__(self, directory: Path, service: str) -> None:
        self.directory = directory
        self.service = service
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def write(self, packed: bytes) -> None:
        """Append undelivered bytes as a new spool file (atomic rename, never partial)."""
        if not packed:
            return
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{self.service}-{os.getpid()}-{time.time_ns()}-{next(self._sequence)}"
            temporary = self.directory / f".{name}.tmp"
            temporary.write_bytes(bytes(packed))
            temporary.rename(self.directory / f"{name}{SPOOL_SUFFIX}")

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{SPOOL_SUFFIX}"))

    def replay(self, host: str, port: int) -> int:
        """Send every spool file to the collector; return the number of files delivered.

        Each file is claimed by an atomic rename first, so two processes never replay the
        same file; a file that cannot be sent is put back for a later attempt.
        """
        delivered = 0
        for path in self.files():
            claimed = path.with_name(f"{path.name}.replaying-{os.getpid()}")
            try:
                path.rename(claimed)
            except OSError:
                continue  # another process took it
            try:
                payload = claimed.read_bytes()
                with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S) as sock:
                    sock.sendall(payload)
            except OSError:
                claimed.rename(path)
                break
            claimed.unlink()
            delivered += 1
        return delivered


def pack_forward(tag: str, unix_ns: int, document: dict[str, Any]) -> bytes:
    """A forward-protocol Message-mode entry with a nanosecond EventTime."""
    return msgpack.packb((tag, EventTime.from_unix_nano(unix_ns), document))


def read_spool_file(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """Decode a spool file into (tag, unix_ns, document) entries (for tests and inspection)."""
    entries = []
    with open(path, "rb") as stream:
        for tag, stamp, document in msgpack.Unpacker(stream, raw=False):
            seconds, nanos = struct.unpack(">II", stamp.data)
            entries.append((tag, seconds * 1_000_000_000 + nanos, document))
    return entries


# --------------------------------------------------------------------------- shipping
class FluentShippingHandler(fluent_handler.FluentHandler):
    """fluent-logger's handler with nanosecond event times, our documents and a disk spool."""

    def __init__(self, tag: str, host: str, port: int, spool: Spool) -> None:
        self.spool = spool
        super().__init__(
            tag, host=host, port=port, timeout=_CONNECT_TIMEOUT_S, nanosecond_precision=True,
            buffer_overflow_handler=spool.write, bufmax=_FLUENT_BUFFER_BYTES,
        )

    def emit(self, record: logging.LogRecord) -> None:
        document = getattr(record, "stgym_document", None) or to_document(record)
        self.sender.emit_with_time(None, EventTime.from_unix_nano(_record_ns(record)), document)

    def settle(self) -> None:
        """Deliver what fluent-logger still holds, or spool it; then replay the spool."""
        sender = self._sender
        if sender is not None and sender.pendings:
            # FluentSender.close() sends the pendings once more and hands them to
            # buffer_overflow_handler (our spool) when that fails; a new sender is made lazily.
            sender.close()
            self._sender = None
        if self.spool.files():
            self.spool.replay(self._host, self._port)

    def handleError(self, record: logging.LogRecord) -> None:
        """Never print tracebacks into the training output for a shipping problem."""


class ShippingQueueHandler(logging.Handler):
    """Non-blocking front: builds the document in the caller's thread, queues it for shipping.

    A full queue (collector down for long, or a flood) spools the record to disk right away
    instead of waiting.
    """

    def __init__(self, service: str, host: str, port: int, spool_dir: Path) -> None:
        super().__init__()
        self.tag = f"stgym.{service}"
        self._destination = (service, host, port, spool_dir)
        self._closed = False
        self._start()

    def _start(self) -> None:
        """Fresh queue, sender and shipper thread (at creation, and in a forked child, which
        inherits neither the thread nor a usable connection)."""
        service, host, port, spool_dir = self._destination
        self.spool = Spool(spool_dir, service)
        self.fluent = FluentShippingHandler(self.tag, host, port, self.spool)
        self.queue: queue.Queue[logging.LogRecord | None] = queue.Queue(_QUEUE_MAX_RECORDS)
        self._overflow_bytes = bytearray()
        self._overflow_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="stgym-log-shipper", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            document = to_document(record)
            shipped = logging.makeLogRecord({
                "created": record.created, "created_ns": _record_ns(record),
                "levelno": record.levelno, "levelname": record.levelname,
                "stgym_document": document,
            })
            try:
                self.queue.put_nowait(shipped)
            except queue.Full:
                self._overflow(pack_forward(self.tag, _record_ns(record), document))
        except Exception:  # a logging failure must never reach the caller
            pass

    def _overflow(self, packed: bytes, final: bool = False) -> None:
        """Collect records the queue had no room for; spool them in chunks (and at close)."""
        with self._overflow_lock:
            self._overflow_bytes += packed
            if final or len(self._overflow_bytes) >= _OVERFLOW_CHUNK_BYTES:
                self.spool.write(bytes(self._overflow_bytes))
                self._overflow_bytes.clear()

    def _run(self) -> None:
        """Ship queued records; at least every `_IDLE_SETTLE_S`, retry what fluent-logger holds
        and replay the spool (also while records keep coming)."""
        last_settle = time.monotonic()
        while True:
            try:
                record = self.queue.get(timeout=_IDLE_SETTLE_S)
            except queue.Empty:
                record = False
            if record is None:
                break
            if record is not False:
                self._safely(lambda: self.fluent.emit(record))
            if time.monotonic() - last_settle >= _IDLE_SETTLE_S:
                self._safely(self.fluent.settle)
                last_settle = time.monotonic()
        self._safely(self.fluent.settle)

    @staticmethod
    def _safely(action) -> None:
        try:
            action()
        except Exception:
            pass

    def flush(self, timeout_s: float = 3.0) -> None:
        """Wait (bounded) until the queue is empty and fluent-logger holds nothing pending."""
        deadline = time.monotonic() + timeout_s
        while not self._closed and time.monotonic() < deadline:
            sender = self.fluent._sender
            if self.queue.empty() and not (sender is not None and sender.pendings):
                return
            time.sleep(0.05)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the shipper: pending records are delivered or spooled, never dropped."""
        if not self._closed:
            self._closed = True
            try:
                self.queue.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout_s)
            with contextlib.suppress(Exception):
                sender = self.fluent._sender
                if sender is not None and sender.pendings:
                    sender.close()
                self.fluent.close()
            while True:  # anything left in the queue (a stuck thread) goes to disk
                try:
                    record = self.queue.get_nowait()
                except queue.Empty:
                    break
                if record is not None:
                    self._overflow(pack_forward(self.tag, _record_ns(record), record.stgym_document))
            self._overflow(b"", final=True)
        super().close()


# --------------------------------------------------------------------------- configuration
def log_dir(settings: settings_module.Settings | None = None) -> Path:
    """Where the local JSON log file and the spool live: ``<data_dir>/logs``."""
    settings = settings or settings_module.load()
    return Path(settings.data_dir) / "logs"


def log_file_path(settings: settings_module.Settings | None = None) -> Path:
    return log_dir(settings) / LOG_FILE_NAME


def spool_dir(settings: settings_module.Settings | None = None) -> Path:
    return log_dir(settings) / "spool"


def spool_files(settings: settings_module.Settings | None = None) -> list[Path]:
    """Spool files waiting to be replayed to the collector, oldest first."""
    directory = spool_dir(settings)
    return sorted(directory.glob(f"*{SPOOL_SUFFIX}")) if directory.is_dir() else []


def configure_logging(
    service: str,
    log_format: str | None = None,
    level: str | None = None,
    *,
    ship: bool | None = None,
    log_file: bool = True,
    worker_id: str | None = None,
    stream=None,
) -> None:
    """Set up logging for this process (idempotent: a second call replaces the first).

    service:    name of the process (``stgym-streams``); the collector tag is ``stgym.<service>``.
    log_format: ``console`` or ``json`` on stderr (default ``settings.log_format``).
    level:      DEBUG/INFO/WARNING/ERROR (default ``settings.log_level``).
    ship:       send records to the collector (default from ``settings.log_ship``).
    log_file:   also append JSON lines to ``<data_dir>/logs/stgym.jsonl``.
    worker_id:  bound for the whole process (every thread), e.g. ``"w0"``.
    """
    settings = settings_module.load()
    log_format = (log_format or settings.log_format).lower()
    if log_format not in ("console", "json"):
        raise ValueError(f"log format must be 'console' or 'json', got {log_format!r}")
    level_name = (level or settings.log_level).upper()
    if not isinstance(logging.getLevelName(level_name), int):
        raise ValueError(f"log level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    if ship is None:
        ship = settings.log_ship == "on" or (settings.log_ship == "auto" and log_format == "json")

    shutdown()
    logging.setLogRecordFactory(_record_factory)
    _process_context.clear()
    if worker_id is not None:
        _process_context["worker_id"] = worker_id

    context_filter = ContextFilter(service)
    console = logging.StreamHandler(stream or sys.stderr)
    console.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    handlers: list[logging.Handler] = [console]
    unavailable = []
    if log_file:
        path = log_file_path(settings)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=64 * 1024 * 1024, backupCount=3, encoding="utf-8"
            )
        except OSError as error:  # a read-only data dir must not stop the process
            unavailable.append(f"local log file {path}: {error.strerror}")
        else:
            file_handler.setFormatter(JsonFormatter())
            handlers.append(file_handler)
    if ship:
        handlers.append(ShippingQueueHandler(
            service, settings.host, settings.collector_forward_port, spool_dir(settings)
        ))
    root = logging.getLogger()
    root.setLevel(level_name)
    if logging.getLevelName(level_name) > logging.DEBUG:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    for handler in handlers:
        handler.addFilter(context_filter)
        root.addHandler(handler)
        _installed_handlers.append(handler)
    for problem in unavailable:
        logging.getLogger(__name__).warning("logging without the %s", problem)


def shipping_handler() -> ShippingQueueHandler | None:
    """The installed shipping handler, if shipping is on."""
    for handler in _installed_handlers:
        if isinstance(handler, ShippingQueueHandler):
            return handler
    return None


def _restart_shipping_in_child() -> None:
    for handler in _installed_handlers:
        if isinstance(handler, ShippingQueueHandler) and not handler._closed:
            handler._start()


os.register_at_fork(after_in_child=_restart_shipping_in_child)


def shutdown() -> None:
    """Flush and remove what `configure_logging` installed (also runs at exit)."""
    root = logging.getLogger()
    while _installed_handlers:
        handler = _installed_handlers.pop()
        root.removeHandler(handler)
        with contextlib.suppress(Exception):
            handler.flush()
            handler.close()


atexit.register(shutdown)
