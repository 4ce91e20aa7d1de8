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
log_id         ``<process uuid>-<sequence>``: unique, so a store shows a record lost or doubled
worker_id      bound once per worker process (``configure_logging(worker_id=...)``)
experiment_id  bound per run with `bind_context` (absent when unknown)
run_id         bound per run with `bind_context`
episode        bound per episode with `bind_context`, or passed as ``extra={"episode": n}``
exception      ``{"type", "message", "stacktrace"}`` when logged with ``exc_info``
<extra keys>   anything passed with ``extra={...}`` or bound with `bind_context`
=============  ===============================================================

Binding context (stgym/logcontext.py; contextvars, so it follows the current thread or
asyncio task)::

    from stgym.logcontext import bind_context, bound_context
    bind_context(experiment_id="exp-7", run_id="run-3")   # once per run
    with bound_context(episode=12):                       # temporarily, restored on exit
        log.info("episode finished")                      # carries all four fields

Outputs:

* stderr: ``console`` (one readable line, for people and the embedded demo) or ``json``
  (one JSON document a line, for services).
* the local JSON log file ``<data_dir>/logs/stgym.jsonl`` (always; `stgym logs search` reads it
  in embedded mode).
* the collector (Fluent forward protocol, fluent-logger's ``FluentHandler``, nanosecond event
  times, tag ``stgym.<service>``) at ``settings.collector_forward_address`` (loopback) when
  shipping is on (``settings.log_ship``: ``auto`` = for the services in SERVICES, whatever
  their terminal format, and for any command logging json; ``on``; ``off``).

Shipping never blocks or crashes the caller: records go through a bounded in-memory queue to
one background thread. While the collector is down, fluent-logger buffers them; whatever it
cannot deliver (buffer overflow, a full queue, pending data at exit) is spooled to
``<data_dir>/logs/spool/*.msgpack`` — the exact bytes of the forward protocol — and replayed
to the collector as soon as it answers again, by this process or the next one.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path

from stgym import settings as settings_module
from stgym.logcontext import ContextFilter, set_process_context
from stgym.logformat import ConsoleFormatter, JsonFormatter, record_factory
from stgym.logship import ShippingQueueHandler
from stgym.logspool import SPOOL_SUFFIX

LOG_FILE_NAME = "stgym.jsonl"
# Chatty libraries that log every request at INFO: only their warnings are kept.
_QUIET_LOGGERS = ("opensearch", "urllib3", "kafka", "aiokafka", "faust", "mode")

_installed_handlers: list[logging.Handler] = []


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


# Long-running processes whose records must reach the collector by default (log_ship=auto).
SERVICES = frozenset({"stgym-stream", "stgym-train", "stgym-alerts", "stgym-serve"})


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
    if ship is None:  # services ship whatever their terminal format; other commands if json
        ship = settings.log_ship == "on" or (
            settings.log_ship == "auto" and (log_format == "json" or service in SERVICES))

    shutdown()
    logging.setLogRecordFactory(record_factory)
    set_process_context(worker_id=worker_id)

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
            service, *settings.collector_forward_address, spool_dir(settings),
            settings.log_spool_max_bytes,
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
