"""CPU time and storage I/O of this process, read with psutil at scrape time.

  stgym_process_cpu_seconds_total{service,mode}   CPU seconds spent by this process, mode
                                                  user or system
  stgym_process_disk_read_bytes_total{service}    bytes it made the storage layer read
  stgym_process_disk_written_bytes_total{service} bytes it made the storage layer write

CPU utilisation is `sum by (service, instance) (rate(stgym_process_cpu_seconds_total[1m]))`,
in cores (1 = one core busy all the time); disk I/O is the rate of the byte counters. Where the
platform does not count a process's I/O (psutil raises), the disk series are absent, never 0.
Registered by every process's own registry: stream workers (streams.metrics), trainer workers
(producers.worker_metrics) and `stgym serve` (streams.api).
"""
from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily


class ProcessResourceCollector:
    """A prometheus_client collector of this process's CPU seconds and disk bytes."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.process = psutil.Process()

    def describe(self):
        return []  # read at collect time only

    def collect(self):
        with self.process.oneshot():
            cpu = self.process.cpu_times()
            try:
                io = self.process.io_counters()
            except (psutil.AccessDenied, AttributeError, NotImplementedError):
                io = None
        family = CounterMetricFamily("stgym_process_cpu_seconds", "CPU seconds of this process",
                                     labels=["service", "mode"])
        family.add_metric([self.service, "user"], cpu.user)
        family.add_metric([self.service, "system"], cpu.system)
        yield family
        if io is None:
            return
        for name, value, text in (("read", io.read_bytes, "read from"), ("written", io.write_bytes, "written to")):
            family = CounterMetricFamily(f"stgym_process_disk_{name}_bytes",
                                         f"Bytes this process had {text} the storage layer",
                                         labels=["service"])
            family.add_metric([self.service], value)
            yield family
