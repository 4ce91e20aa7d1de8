"""Records the collector has not received yet, on disk: forward-protocol bytes in
``<data_dir>/logs/spool/*.msgpack``, replayed once the collector answers again.

The spool is bounded (``settings.log_spool_max_bytes``): when a new file would not fit, the
oldest files go first, counted by ``stgym_log_records_dropped_total`` and reported by a
WARNING (at most one a minute). A write that fails (a full disk) drops its records the same
way and leaves no partial file; nothing here ever raises into the process."""
from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import EventTime
from prometheus_client import Counter

SPOOL_SUFFIX = ".msgpack"
CONNECT_TIMEOUT_S = 1.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
WARN_EVERY_S = 60.0
RECORDS_DROPPED = Counter(
    "stgym_log_records_dropped",
    "Log records never shipped: the spool was full (oldest dropped) or the disk refused them")
log = logging.getLogger(__name__)


def count_records(packed: bytes) -> int:
    """Forward-protocol entries in `packed` (those readable)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(packed)
    count = 0
    try:
        for _ in unpacker:
            count += 1
    except Exception:  # a damaged tail: count what was readable
        pass
    return count


class Spool:
    """A directory of msgpack files holding forward-protocol bytes not yet delivered."""

    def __init__(self, directory: Path, service: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"log spool size must be > 0 bytes, got {max_bytes}")
        self.directory = directory
        self.service = service
        self.max_bytes = max_bytes
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._last_warning = 0.0

    def write(self, packed: bytes) -> bool:
        """Append undelivered bytes as a new spool file (atomic rename, never partial),
        dropping the oldest files if the spool would outgrow max_bytes; False if these
        bytes themselves were dropped (larger than the spool, or the disk refused them)."""
        if not packed:
            return True
        packed = bytes(packed)
        with self._lock:
            if len(packed) > self.max_bytes:
                self._dropped(count_records(packed), "larger than the whole spool")
                return False
            temporary = None
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._make_room(len(packed))
                name = f"{self.service}-{os.getpid()}-{time.time_ns()}-{next(self._sequence)}"
                temporary = self.directory / f".{name}.tmp"
                temporary.write_bytes(packed)
                temporary.rename(self.directory / f"{name}{SPOOL_SUFFIX}")
                return True
            except OSError as error:  # a full or read-only disk
                if temporary is not None:
                    try:
                        temporary.unlink(missing_ok=True)
                    except OSError:
                        pass
                self._dropped(count_records(packed), f"the disk refused them ({error.strerror})")
                return False

    def _make_room(self, incoming: int) -> None:
        files = []
        for path in self.files():
            try:
                stat = path.stat()
            except OSError:
                continue  # just claimed by a replay
            files.append((stat.st_mtime_ns, path, stat.st_size))
        total = sum(size for _, _, size in files)
        for _, path, size in sorted(files):  # oldest first
            if total + incoming <= self.max_bytes:
                return
            try:
                records = count_records(path.read_bytes())
                path.unlink()
            except OSError:
                continue  # being replayed by another process
            total -= size
            self._dropped(records, f"the spool reached {self.max_bytes} bytes (oldest dropped)")

    def _dropped(self, records: int, why: str) -> None:
        RECORDS_DROPPED.inc(records)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning("dropped %d undelivered log record(s): %s; %s so far", records, why,
                        int(RECORDS_DROPPED._value.get()))

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
                with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
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
