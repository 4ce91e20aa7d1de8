"""Shipping records to the collector (Fluent forward protocol, fluent-logger) without ever
blocking or crashing the caller: a bounded queue, one background thread, and the disk spool
for whatever cannot be delivered (see stgym/logsetup.py)."""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from pathlib import Path

from fluent import handler as fluent_handler
from fluent.sender import EventTime

from stgym.logformat import record_ns, to_document
from stgym.logspool import (CONNECT_TIMEOUT_S, DEFAULT_MAX_BYTES, RECORDS_DROPPED, Spool,
                            pack_forward)

_QUEUE_MAX_RECORDS = 10_000
_FLUENT_BUFFER_BYTES = 1024 * 1024
_OVERFLOW_CHUNK_BYTES = 256 * 1024
_OVERFLOW_MAX_BYTES = 8 * 1024 * 1024  # records waiting in memory for the shipper to spool
_IDLE_SETTLE_S = 1.0
_live: weakref.WeakSet = weakref.WeakSet()  # shipping handlers not yet closed


class FluentShippingHandler(fluent_handler.FluentHandler):
    """fluent-logger's handler with nanosecond event times, our documents and a disk spool."""

    def __init__(self, tag: str, host: str, port: int, spool: Spool) -> None:
        self.spool = spool
        super().__init__(
            tag, host=host, port=port, timeout=CONNECT_TIMEOUT_S, nanosecond_precision=True,
            buffer_overflow_handler=spool.write, bufmax=_FLUENT_BUFFER_BYTES,
        )

    def emit(self, record: logging.LogRecord) -> None:
        document = getattr(record, "stgym_document", None) or to_document(record)
        self.sender.emit_with_time(None, EventTime.from_unix_nano(record_ns(record)), document)

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

    A full queue (collector down for long, or a flood) packs the record into a bounded memory
    buffer that the shipper thread moves to the disk spool: the caller's thread never touches
    the disk and never waits. Beyond _OVERFLOW_MAX_BYTES records are dropped (counted).
    """

    def __init__(self, service: str, host: str, port: int, spool_dir: Path,
                 spool_max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.tag = f"stgym.{service}"
        self._destination = (service, host, port, spool_dir, spool_max_bytes)
        self._closed = False
        self._start()
        _live.add(self)

    def _start(self) -> None:
        """Fresh queue, sender and shipper thread (at creation, and in a forked child, which
        inherits neither the thread nor a usable connection)."""
        service, host, port, spool_dir, spool_max_bytes = self._destination
        self.spool = Spool(spool_dir, service, spool_max_bytes)
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
                "created": record.created, "created_ns": record_ns(record),
                "levelno": record.levelno, "levelname": record.levelname,
                "stgym_document": document,
            })
            try:
                self.queue.put_nowait(shipped)
            except queue.Full:
                self._overflow(pack_forward(self.tag, record_ns(record), document))
        except Exception:  # a logging failure must never reach the caller
            pass

    def _overflow(self, packed: bytes) -> None:
        """Keep a record the queue had no room for, in memory, for the shipper to spool."""
        with self._overflow_lock:
            if len(self._overflow_bytes) + len(packed) > _OVERFLOW_MAX_BYTES:
                RECORDS_DROPPED.inc()  # the shipper cannot keep up even with the disk
                return
            self._overflow_bytes += packed

    def _spool_overflow(self, final: bool = False) -> None:
        """(Shipper thread, or close) what _overflow kept, to the spool in chunks."""
        with self._overflow_lock:
            if not self._overflow_bytes or (
                    not final and len(self._overflow_bytes) < _OVERFLOW_CHUNK_BYTES
                    and not self.queue.empty()):
                return
            chunk = bytes(self._overflow_bytes)
            self._overflow_bytes.clear()
        self.spool.write(chunk)

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
            self._safely(self._spool_overflow)
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
                    self._overflow(pack_forward(self.tag, record_ns(record), record.stgym_document))
            self._safely(lambda: self._spool_overflow(final=True))
        super().close()


def _restart_shipping_in_child() -> None:
    for handler in list(_live):
        if not handler._closed:
            handler._start()


os.register_at_fork(after_in_child=_restart_shipping_in_child)
