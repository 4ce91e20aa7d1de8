"""Records the collector has not received yet, on disk: forward-protocol bytes in
``<data_dir>/logs/spool/*.msgpack``, replayed once the collector answers again."""
from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import EventTime

SPOOL_SUFFIX = ".msgpack"
CONNECT_TIMEOUT_S = 1.0


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
