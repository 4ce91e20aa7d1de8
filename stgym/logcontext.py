"""The context every log record carries: fields bound per process (worker_id), per run or per
episode (contextvars, so they follow the current thread or asyncio task), and the filter that
stamps them, with service, host and pid, on each record."""
from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
from typing import Any, Iterator

from stgym import tracing

CONTEXT_FIELDS = ("worker_id", "experiment_id", "run_id", "episode")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "stgym_log_context", default={}
)
_process_context: dict[str, Any] = {}


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


def set_process_context(**fields: Any) -> None:
    """Replace the fields bound for the whole process (every thread), e.g. ``worker_id``;
    None values are left out."""
    _process_context.clear()
    _process_context.update((k, v) for k, v in fields.items() if v is not None)


class ContextFilter(logging.Filter):
    """Stamps service, host, pid, the bound context and the current trace/span ids on a
    record, in the logging thread."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.hostname = socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "stgym_context"):
            record.service = self.service
            record.hostname = self.hostname
            # inside a sampled span: its trace_id and span_id (stgym.tracing), so a record
            # found by `stgym logs search` leads to its trace in Jaeger
            record.stgym_context = {**get_context(), **tracing.log_fields()}
        return True
