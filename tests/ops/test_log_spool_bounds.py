"""Logs never hurt the process: the disk spool is bounded in bytes (oldest dropped, counted,
one WARNING), a refusing disk leaves no partial file and raises nothing, and the caller's
thread never writes the spool, even with the collector down and the queue full."""
import logging
import threading

from stgym import logship, logspool
from stgym.logspool import Spool, pack_forward, read_spool_file


def chunk(i: int, records: int = 10) -> bytes:
    return b"".join(pack_forward("stgym.test", 10**18 + i * 1000 + k, {"message": f"r{i}-{k}",
                                                                     "pad": "x" * 100})
                    for k in range(records))


def dropped() -> float:
    return logspool.RECORDS_DROPPED._value.get()


def test_spool_is_bounded_and_drops_the_oldest_with_a_counter_and_a_warning(tmp_path, caplog):
    chunks = [chunk(i) for i in range(12)]
    limit = 5 * max(map(len, chunks))
    spool = Spool(tmp_path / "spool", "svc", max_bytes=limit)
    before = dropped()
    with caplog.at_level(logging.WARNING, logger="stgym.logspool"):
        for packed in chunks:
            assert spool.write(packed)
    assert sum(p.stat().st_size for p in spool.files()) <= limit
    kept = {doc["message"] for f in spool.files() for _, _, doc in read_spool_file(f)}
    first_kept = 12 - len(kept) // 10
    assert first_kept >= 7 and kept == {f"r{i}-{k}" for i in range(first_kept, 12)
                                        for k in range(10)}  # the newest are kept
    assert dropped() - before == 120 - len(kept)
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "oldest dropped" in warnings[0].getMessage()


def test_a_chunk_larger_than_the_spool_is_dropped_not_written(tmp_path):
    spool = Spool(tmp_path / "spool", "svc", max_bytes=100)
    before = dropped()
    assert spool.write(chunk(0)) is False
    assert spool.files() == [] and dropped() - before == 10


def test_a_refusing_disk_leaves_no_partial_file_and_raises_nothing(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool", "svc")
    real_write = type(tmp_path).write_bytes

    def disk_full(self, data):
        real_write(self, data[: len(data) // 2])  # a partial temporary file, then ENOSPC
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_bytes", disk_full)
    before = dropped()
    assert spool.write(chunk(1)) is False
    monkeypatch.undo()
    assert list((tmp_path / "spool").iterdir()) == []
    assert dropped() - before == 10


def test_the_callers_thread_never_writes_the_spool(tmp_path, monkeypatch):
    writers = set()
    real = Spool.write

    def recording(self, packed):
        writers.add(threading.current_thread().name)
        return real(self, packed)

    monkeypatch.setattr(Spool, "write", recording)
    monkeypatch.setattr(logship, "_QUEUE_MAX_RECORDS", 10)
    # a collector port nobody listens on: everything ends in the spool
    handler = logship.ShippingQueueHandler("svc", "127.0.0.1", 9, tmp_path / "spool")
    logger = logging.getLogger("test-spool-threads")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(5000):
            logger.warning("record %d", i)
        handler.flush()
        while handler.queue.qsize() or handler._overflow_bytes:  # the shipper drains it all
            threading.Event().wait(0.05)
        during = set(writers)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert during == {"stgym-log-shipper"}
    shipped = sum(len(read_spool_file(f)) for f in handler.spool.files())
    assert shipped == 5000  # nothing lost: all of it waits on disk for the collector
