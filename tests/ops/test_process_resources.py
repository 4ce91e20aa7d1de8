"""stgym.procmetrics: this process's CPU seconds and disk bytes, and where they are exported."""
from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from stgym.procmetrics import ProcessResourceCollector


def samples(registry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def test_cpu_and_disk_counters_follow_the_work_done(tmp_path):
    registry = CollectorRegistry()
    registry.register(ProcessResourceCollector("stgym-test"))
    before = samples(registry)
    user = ("stgym_process_cpu_seconds_total", (("mode", "user"), ("service", "stgym-test")))
    written = ("stgym_process_disk_written_bytes_total", (("service", "stgym-test"),))
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # 0.3 s of CPU
        sum(i * i for i in range(1000))
    with open(tmp_path / "blob", "wb") as f:  # 4 MiB reaching the disk
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())
    after = samples(registry)
    assert after[user] - before[user] >= 0.2
    assert after[written] - before[written] >= 4 << 20


def test_stream_worker_trainer_and_api_registries_export_them():
    from streams.api import KpiApi
    from streams.metrics import ProcessMetrics

    for registry, service in ((ProcessMetrics("stgym-stream-0").registry, "stgym-stream-0"),
                              (KpiApi(sink=None).registry, "stgym-serve")):
        names = {name for name, labels in samples(registry) if ("service", service) in labels}
        assert {"stgym_process_cpu_seconds_total", "stgym_process_disk_read_bytes_total"} <= names
