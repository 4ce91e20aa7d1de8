"""Every log document carries a log_id unique across records, threads and (forked) processes:
the fault campaign counts records in OpenSearch by it, and the collector's exporter makes it
the document's _id (a batch sent twice is stored once)."""
from __future__ import annotations

import logging
import os
import threading

from stgym import logformat


def document(message: str) -> dict:
    return logformat.to_document(logging.makeLogRecord({"msg": message}))


def test_log_ids_are_unique_across_threads_and_cached_per_record():
    record = logging.makeLogRecord({"msg": "once"})
    assert logformat.to_document(record)["log_id"] == logformat.to_document(record)["log_id"]
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.extend(
        document("x")["log_id"] for _ in range(500))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 2000
    process, _, sequence = ids[0].rpartition("-")
    assert len(process) == 32 and sequence.isdigit()


def test_a_forked_child_numbers_its_records_under_a_new_process_id():
    parent = document("parent")["log_id"].rpartition("-")[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its first id and leaves at once
        os.write(write, document("child")["log_id"].encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child.rpartition("-")[0] != parent and child.endswith("-0")
