"""What a log record becomes: one structured document (the fields are listed in
stgym/logsetup.py), as a JSON line or a readable console line."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import socket
import time
import traceback
import uuid
from typing import Any

from stgym.logcontext import CONTEXT_FIELDS

_original_record_factory = logging.getLogRecordFactory()

_BASE_FIELDS = frozenset(
    {"timestamp", "level", "logger", "message", "service", "host", "pid", "log_id", "exception"}
)
# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "created_ns", "service", "hostname"}


class _LogIds:
    """``log_id`` of each document: ``<process uuid>-<sequence>``, unique across processes and
    hosts (a fresh uuid in a forked child), so a store can be checked for records lost (a gap
    in a process's sequence) or stored twice (one id, two documents); the collector's exporter
    also makes it the document's ``_id``, so a retried bulk never indexes a record twice."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.process = uuid.uuid4().hex
        self._sequence = itertools.count()

    def next(self) -> str:  # itertools.count is atomic under the GIL: no lock (none to fork)
        return f"{self.process}-{next(self._sequence)}"


LOG_IDS = _LogIds()
os.register_at_fork(after_in_child=LOG_IDS.reset)


def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """The default factory, plus the creation time in nanoseconds."""
    record = _original_record_factory(*args, **kwargs)
    record.created_ns = time.time_ns()
    return record


def rfc3339_ns(unix_ns: int) -> str:
    """``2026-11-29T21:22:33.123456789Z`` for a time in nanoseconds since the epoch (UTC)."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def record_ns(record: logging.LogRecord) -> int:
    return getattr(record, "created_ns", None) or int(record.created * 1e9)


def to_document(record: logging.LogRecord) -> dict[str, Any]:
    """The structured document of a record (after `ContextFilter` ran), built once per record
    and shared by every handler."""
    cached = record.__dict__.get("_stgym_document")
    if cached is not None:
        return cached
    document: dict[str, Any] = {
        "timestamp": rfc3339_ns(record_ns(record)),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "service": getattr(record, "service", None),
        "host": getattr(record, "hostname", None) or socket.gethostname(),
        "pid": record.process,
        "log_id": LOG_IDS.next(),
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
