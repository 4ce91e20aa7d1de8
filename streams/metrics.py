"""Prometheus metrics of a stream processor: its own health, and the KPIs read from the store.

KPI metrics (training_episodes_total, success_rate, the histograms, …) are exported by a
collector that reads the committed KPI rows at scrape time. Every worker therefore exports
the same, exact, restart-proof values; nothing is counted in process memory that a SIGKILL could lose
or a replay double. In a group of stream workers only one exports them at a time (the owner
of partition 0 of the episodes topic, see streams.worker), so `sum by (...)` over instances is
the true value, and the export moves to another worker when that one dies.
Labels are bounded: experiment, device_type, algorithm, outcome, topic, reason, service.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
)

from stgym import kpi, logspool
from stgym.procmetrics import ProcessResourceCollector

log = logging.getLogger(__name__)
disable_created_metrics()  # no *_created series: they double the scrape size for nothing
KPI_LABELS = ["experiment", "device_type", "algorithm"]


class ProcessMetrics:
    """Per-process metrics in one registry (one registry per process, on its own port)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.service = service
        self.processed = Counter(
            "stgym_events_processed", "Records consumed by this processor", ["topic"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "stgym_events_rejected", "Records sent to the DLQ, by reason", ["reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "stgym_events_duplicate", "Episode events already stored (replays), skipped",
            registry=self.registry,
        )
        self.batch_seconds = Gauge(
            "stgym_sink_last_batch_seconds", "Duration of the last committed sink batch",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "stgym_consumer_lag_records",
            "Records of an assigned partition not yet committed (high watermark - position)",
            ["topic", "partition"], registry=self.registry,
        )
        self.dlq_records = Counter(
            "stgym_dlq_records", "Records the DLQ topic acknowledged, by reason", ["reason"],
            registry=self.registry,
        )
        self.last_commit_ts = time.time()  # a fresh worker has nothing to commit yet
        Gauge("stgym_last_commit_age_seconds",
              "Seconds since this worker last committed a batch (or started)",
              registry=self.registry).set_function(lambda: time.time() - self.last_commit_ts)
        self.last_event_ts = 0.0
        last_age = Gauge(
            "stgym_last_event_age_seconds",
            "Seconds since the newest event this processor committed was created",
            registry=self.registry,
        )
        last_age.set_function(
            lambda: (time.time() - self.last_event_ts) if self.last_event_ts else float("nan")
        )
        process = psutil.Process(os.getpid())
        memory = Gauge("memory_usage_bytes", "Resident memory of the process", ["service"],
                       registry=self.registry)
        memory.labels(service=service).set_function(lambda: process.memory_info().rss)
        self.registry.register(ProcessResourceCollector(service))
        gpu = gpu_reader()
        if gpu is not None:
            Gauge("gpu_utilization_percent", "GPU utilisation (NVML)",
                  registry=self.registry).set_function(gpu)
        self.registry.register(logspool.RECORDS_DROPPED)  # this process's log records lost
        for reason in kpi.REJECT_REASONS:  # export zeros so rate() works from the start
            self.rejected.labels(reason=reason)
            self.dlq_records.labels(reason=reason)

    def observe_batch(self, batch: kpi.ParsedBatch, result, seconds: float) -> None:
        for topic, n in batch.processed_by_topic.items():
            self.processed.labels(topic=topic).inc(n)
        for rejected in batch.rejected:
            self.rejected.labels(reason=rejected.reason).inc()
        if result is not None and result.unstorable:
            self.rejected.labels(reason="unstorable").inc(len(result.unstorable))
        duplicates = batch.duplicates + (result.duplicates if result is not None else 0)
        if duplicates:
            self.duplicates.inc(duplicates)
        if result is not None:
            newest = max((e.timestamp.timestamp() for e in batch.episodes), default=0.0)
            self.last_event_ts = max(self.last_event_ts, newest)
        self.batch_seconds.set(seconds)


def gpu_reader():
    """A function returning GPU utilisation % when NVML and a GPU exist, else None."""
    from streams.nvml import utilization_reader

    try:
        return utilization_reader()
    except Exception:  # a broken driver install: no metric rather than a crash
        return None


class KpiCollector:
    """Exports the store's committed KPI rows as Prometheus metrics at scrape time."""

    def __init__(self, sink, max_age_s: float = 86400.0, cache_s: float = 0.5,
                 enabled=None) -> None:
        self.sink = sink
        self.enabled = enabled  # callable: export now? (None: always)
        self.max_age_s = max_age_s
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached = None
        self._cached_at = 0.0
        self.errors = 0

    def snapshot(self):
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached_at > self.cache_s:
                self._cached = self.sink.metric_snapshot(self.max_age_s)
                self._cached_at = time.monotonic()
            return self._cached

    def describe(self):
        return []  # dynamic: never collected at registration time

    def collect(self):
        if self.enabled is not None and not self.enabled():
            return
        try:
            snap = self.snapshot()
        except Exception as error:  # the database is restarting: export nothing, not zeros
            self.errors += 1
            log.warning("KPI metrics unavailable: %s", str(error).strip().splitlines()[0])
            return
        episodes = CounterMetricFamily(
            "training_episodes", "Training episodes by outcome (committed to the KPI store)",
            labels=[*KPI_LABELS, "outcome"])
        rate = GaugeMetricFamily("success_rate", "Successful switches / episodes", labels=KPI_LABELS)
        steps = GaugeMetricFamily("simulation_steps_per_second",
                                  "Simulator steps per wall-clock second (aggregate)", labels=KPI_LABELS)
        accuracy = GaugeMetricFamily("model_accuracy", "Evaluation success rate of the policy",
                                     labels=KPI_LABELS)
        objective = GaugeMetricFamily("training_objective", "Latest training objective",
                                      labels=KPI_LABELS)
        lr = GaugeMetricFamily("training_learning_rate", "Latest learning rate", labels=KPI_LABELS)
        validation = GaugeMetricFamily(
            "training_validation_objective",
            "Latest objective of the policy on held-out episodes (training_objective: on the "
            "episodes it trained on)", labels=KPI_LABELS)
        wer = GaugeMetricFamily("write_error_rate", "Failed writes / episodes", labels=KPI_LABELS)
        wer_bounds = {
            side: GaugeMetricFamily(
                f"write_error_rate_{side}_bound",
                f"{side.capitalize()} end of the exact (Clopper-Pearson) two-sided 95 % interval "
                "of the write error rate", labels=KPI_LABELS)
            for side in ("lower", "upper")
        }
        for row in snap["kpis"]:
            labels = list(row["key"])
            total, succ = int(row["episodes_total"]), int(row["successes"])
            if total:
                episodes.add_metric([*labels, "success"], succ)
                episodes.add_metric([*labels, "failure"], total - succ)
                rate.add_metric(labels, succ / total)
                wer.add_metric(labels, (total - succ) / total)
                for family, bound in zip(wer_bounds.values(), kpi.clopper_pearson(total - succ, total)):
                    family.add_metric(labels, bound)
            if row["wall_time_s"]:
                steps.add_metric(labels, float(row["sim_steps"]) / float(row["wall_time_s"]))
            for family, name in ((accuracy, "model_accuracy"), (objective, "objective"),
                                 (lr, "learning_rate"), (validation, "validation_objective")):
                if row[name] is not None:
                    family.add_metric(labels, float(row[name]))
        yield from (episodes, rate, steps, accuracy, objective, lr, validation, wer,
                    *wer_bounds.values())
        runs = GaugeMetricFamily("training_runs", "Training runs that reported progress",
                                 labels=KPI_LABELS)
        converged = GaugeMetricFamily(
            "training_runs_converged", f"Runs whose policy reached model_accuracy >= "
            f"{kpi.CONVERGENCE_TARGET} for {kpi.CONVERGENCE_ITERATIONS} iterations in a row",
            labels=KPI_LABELS)
        to_convergence = GaugeMetricFamily(
            "training_episodes_to_convergence",
            "Mean episodes a converged run trained until its converging iteration (stgym.kpi)",
            labels=KPI_LABELS)
        for key, (n_runs, n_converged, episodes_mean) in snap.get("convergence", {}).items():
            runs.add_metric(list(key), n_runs)
            converged.add_metric(list(key), n_converged)
            if episodes_mean is not None:
                to_convergence.add_metric(list(key), episodes_mean)
        yield from (runs, converged, to_convergence)
        sums = {row["key"]: row for row in snap["kpis"]}
        for metric, bounds, sum_col in (
            ("energy_per_switch_joules", kpi.ENERGY_BUCKETS_J, "energy_success_sum"),
            ("switching_time_seconds", kpi.SWITCH_TIME_BUCKETS_S, "switch_time_sum"),
        ):
            family = HistogramMetricFamily(
                metric, "Energy per successful switch" if metric.startswith("energy")
                else "Switching time of successful episodes", labels=KPI_LABELS)
            for key, row in sums.items():
                counts = snap["histograms"].get((*key, metric))
                if not counts:
                    continue
                cumulative, buckets = 0, []
                for i, bound in enumerate(bounds):
                    cumulative += counts.get(i, 0)
                    buckets.append((repr(float(bound)), cumulative))
                cumulative += counts.get(len(bounds), 0)
                buckets.append(("+Inf", cumulative))
                family.add_metric(list(key), buckets, float(row[sum_col]))
            yield family
        experiments = GaugeMetricFamily("experiments_total", "Experiments by latest status",
                                        labels=["status"])
        for status in ("started", "finished", "failed"):
            experiments.add_metric([status], snap["experiments"].get(status, 0))
        yield experiments
