"""Alerts and dashboards on the real pipeline: Kafka -> Faust stream worker -> PostgreSQL ->
/metrics, scraped by a Prometheus of this test that runs the project's own rules.

The rules come from the single source compose/prometheus/{recording,alert}_rules.yml; only
the alerts' `for:` is shortened (LowSuccessRate waits 10 m in production) and the evaluation
interval set to 1 s. That Prometheus sends to the real Alertmanager (alertmanager_url), whose
committed configuration routes by severity to `stgym alerts serve`, started here on the
configured webhook port; the receiver logs each alert as a structured record, which also
reaches OpenSearch through the collector.

Episodes with a 25 % success rate -> LowSuccessRate fires -> Alertmanager -> webhook record.
Meanwhile every panel query of the committed dashboards (variables substituted) runs against
that Prometheus and must return data without errors.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from stgym import dashboards
from stgym import events as ev
from stgym import settings as settings_module
from sinks.factory import open_sink
from stgym.bus import open_bus
from streams import workload
import streamkit

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "compose" / "prometheus"
SUCCESS_PROBABILITY = 0.25
FAST_FOR = "5s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def fast_alert_rules() -> dict:
    """alert_rules.yml with every `for:` shortened: the same expressions, labels, annotations."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alert_rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = FAST_FOR
    return rules


def start_prometheus(tmp_path: Path, targets: list[str], alertmanager: str, experiment: str):
    """A private Prometheus scraping `targets` every second with the project's rules."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "alert_rules.yml").write_text(yaml.safe_dump(fast_alert_rules()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "recording_rules.yml"), str(tmp_path / "alert_rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{
            "job_name": "stream-processors",
            "static_configs": [{"targets": targets}],
            # The worker reads the whole topic: keep this test's experiment (and unlabelled
            # process series) so older tests' experiments raise no alerts here.
            "metric_relabel_configs": [{"source_labels": ["experiment"], "regex": f"{experiment}|",
                                        "action": "keep"}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    workload.wait_until(lambda: proc.poll() is None and workload.http_get(f"{url}/-/ready")[0] == 200,
                       60, what=f"test Prometheus ready (log {tmp_path / 'prometheus.log'})")
    return proc, url


def start_webhook(tmp_path: Path, port: int) -> subprocess.Popen | None:
    """`stgym alerts serve` on the configured port, unless the service scripts already run it
    there (then None: its records are found through OpenSearch only)."""
    if port_open(port):
        code, body = workload.http_get(f"http://127.0.0.1:{port}/health")
        assert code == 200 and "received" in json.loads(body), (
            f"port {port} (settings.alert_webhook_port) is taken by something other than "
            "`stgym alerts serve`")
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "stgym.cli", "--log-format", "json", "alerts", "serve"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "webhook.log", "wb"),
        env=dict(os.environ, STGYM_DATA_DIR=str(tmp_path / "webhook-data")),
        start_new_session=True,
    )
    workload.wait_until(
        lambda: proc.poll() is None and workload.http_get(f"http://127.0.0.1:{port}/health")[0] == 200,
        60, what="stgym alerts serve")
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Publisher(threading.Thread):
    """Publishes, every 0.5 s, 20 episodes (25 % successes) and one training event per
    (device type, algorithm) of the experiment, until stopped; the model accuracy climbs by
    0.1 per iteration from 0.6, so each run converges (stgym.kpi) at iteration 4."""

    def __init__(self, bus_url: str, experiment: str) -> None:
        super().__init__(daemon=True)
        self.bus = open_bus(bus_url)
        self.experiment = experiment
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.rng = random.Random(5)

    def keys(self):
        for device in workload.DEVICE_TYPES:
            for algorithm in workload.ALGORITHMS:
                yield device, algorithm

    def base(self, device: str, algorithm: str) -> dict:
        return dict(experiment_id=self.experiment, run_id=f"{self.experiment}-{device}-{algorithm}",
                    worker_id="w0", device_type=device, algorithm=algorithm)

    def run(self) -> None:
        try:
            for device, algorithm in self.keys():
                self.bus.publish(ev.ExperimentEvent(
                    event_id=ev.new_event_id(), timestamp=ev.utc_now(), status="started",
                    **self.base(device, algorithm)))
            iteration = 0
            while not self.stopping.is_set():
                now = ev.utc_now()
                for i in range(20):
                    device, algorithm = list(self.keys())[i % 4]
                    success = self.rng.random() < SUCCESS_PROBABILITY
                    self.bus.publish(ev.EpisodeEvent(
                        event_id=ev.new_event_id(), timestamp=now + dt.timedelta(microseconds=i),
                        episode=iteration * 20 + i, seed=i, success=success,
                        energy_j=self.rng.uniform(1e-13, 2e-12),
                        switching_time_s=self.rng.uniform(2e-10, 3e-9) if success else None,
                        steps=10, total_reward=-1.0, sim_steps=2000, wall_time_s=0.01,
                        sim_steps_per_s=2e5, **self.base(device, algorithm)))
                for device, algorithm in self.keys():
                    self.bus.publish(ev.TrainingEvent(
                        event_id=ev.new_event_id(), timestamp=now, iteration=iteration,
                        objective=-1.0 / (iteration + 1), learning_rate=0.01,
                        validation_objective=-1.2 / (iteration + 1),
                        model_accuracy=min(1.0, 0.6 + 0.1 * iteration),  # converges at 4
                        **self.base(device, algorithm)))
                self.bus.flush(30)
                iteration += 1
                self.stopping.wait(0.5)
        except BaseException as error:  # reported by the test
            self.errors.append(error)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(60)
        self.bus.close()


def query_range(url: str, expr: str, seconds: int = 60) -> tuple[str, list]:
    """(status, result) of a Grafana-like range query over the last `seconds`."""
    end = time.time()
    params = urllib.parse.urlencode({"query": expr, "start": end - seconds, "end": end, "step": "2"})
    code, body = workload.http_get(f"{url}/api/v1/query_range?{params}", timeout=10)
    if code != 200:
        return f"HTTP {code}: {body[:300]!r}", []
    answer = json.loads(body)
    return answer["status"], answer["data"]["result"]


def has_finite_value(result: list) -> bool:
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def webhook_records(tmp_path: Path) -> list[dict]:
    path = tmp_path / "webhook.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_low_success_rate_alert_reaches_the_webhook_and_every_panel_has_data(
        kafka_bootstrap, postgres_url, alertmanager_url, opensearch_url, collector_address,
        unique_id, tmp_path):
    settings = settings_module.load()
    experiment = f"obs-{unique_id}"
    bus_url = f"kafka://{kafka_bootstrap}"
    web_port = free_port()
    am = urllib.parse.urlsplit(alertmanager_url)
    webhook = worker = prometheus = None
    publisher = Publisher(bus_url, experiment)
    sink = open_sink(postgres_url)
    try:
        webhook = start_webhook(tmp_path, settings.alert_webhook_port)
        # Start at the end of the shared topics (whatever benchmarks left there is not read);
        # warm_up() fixes every partition's position before the experiment's events flow.
        worker = workload.start_worker(bus_url, postgres_url, web_port, 0, f"obs-{unique_id}",
                                      str(tmp_path / "worker.log"),
                                      extra=["--offset-reset", "latest"])
        workload.wait_ready(web_port, 120, worker)
        streamkit.warm_up(publisher.bus, sink, unique_id)
        prometheus, prom_url = start_prometheus(
            tmp_path / "prometheus", [f"127.0.0.1:{web_port}"], am.netloc, experiment)
        publisher.start()

        # 1. LowSuccessRate reaches Alertmanager ...
        filters = urllib.parse.urlencode(
            [("filter", 'alertname="LowSuccessRate"'), ("filter", f'experiment="{experiment}"')])

        def in_alertmanager():  # one alert per (device type, algorithm): all four below 0.8
            code, body = workload.http_get(f"{alertmanager_url}/api/v2/alerts?{filters}", timeout=5)
            alerts = json.loads(body) if code == 200 else []
            keys = {(a["labels"]["device_type"], a["labels"]["algorithm"]) for a in alerts}
            return alerts if len(keys) == 4 else None

        alerts = workload.wait_until(in_alertmanager, 240, 1.0, what="LowSuccessRate in Alertmanager")
        assert {a["labels"]["device_type"] for a in alerts} == set(workload.DEVICE_TYPES)
        assert {a["labels"]["algorithm"] for a in alerts} == set(workload.ALGORITHMS)
        assert all(a["labels"]["severity"] == "warning" for a in alerts)

        # 2. ... and, routed by severity, the webhook receiver, which logs structured records
        # (shipped through the collector to OpenSearch, where `stgym logs search` finds them).
        def searched():
            result = subprocess.run(
                [sys.executable, "-m", "stgym.cli", "logs", "search", "LowSuccessRate",
                 "--service", "stgym-alerts", "--experiment", experiment, "--since", "1h",
                 "--store", "opensearch", "--json"],
                capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, result.stderr
            return [r for r in json.loads(result.stdout) if r.get("alert_status") == "firing"]

        records = workload.wait_until(searched, 180, 2.0, what="LowSuccessRate record in OpenSearch")
        if webhook is not None:  # our own receiver: its stderr has the same records
            local = [r for r in webhook_records(tmp_path)
                     if r.get("alertname") == "LowSuccessRate" and r.get("experiment_id") == experiment]
            assert local and local[0]["alert_status"] == "firing"
        record = records[0]
        assert (record["level"], record["severity"], record["route"], record["receiver"]) == (
            "WARNING", "warning", "warning", "stgym-warning")
        assert record["service"] == "stgym-alerts" and record["logger"] == "stgym.alerts"
        assert record["alertname"] == "LowSuccessRate"
        assert record["message"].startswith(f"alert firing: LowSuccessRate — Low switching success "
                                            f"rate in {experiment}")
        assert record["annotations"]["runbook_url"] == "docs/runbooks.md#lowsuccessrate"
        value = float(record["annotations"]["description"].split(" is ")[1].split("%")[0]) / 100
        assert value < 0.8

        # 3. Every panel of every dashboard returns data for this experiment, without errors.
        values = {"experiment": experiment, "device_type": "stt-pma", "algorithm": ".*",
                  "datasource": "prometheus"}
        code, metrics = workload.http_get(f"http://127.0.0.1:{web_port}/metrics")
        gpu_present = b"\ngpu_utilization_percent" in metrics
        queries = [
            (name, title, dashboards.substitute(expr, values))
            for name in dashboards.DASHBOARDS
            for title, expr in dashboards.panel_queries(
                json.loads((dashboards.OUTPUT_DIR / name).read_text()))
        ]

        def panel_problems():
            problems = []
            for name, title, expr in queries:
                status, result = query_range(prom_url, expr)
                if status != "success":
                    problems.append((name, title, expr, status))
                elif title in dashboards.HARDWARE_DEPENDENT and not gpu_present:
                    if result:
                        problems.append((name, title, expr, "data without a GPU"))
                elif not has_finite_value(result):
                    problems.append((name, title, expr, "no data"))
            return problems

        deadline = time.monotonic() + 120
        while (problems := panel_problems()) and time.monotonic() < deadline:
            time.sleep(2)
        assert problems == [], problems
        assert len(queries) >= 20

        # The template variables' own queries list this experiment's values.
        def label_values(label: str, match: str) -> set[str]:
            params = urllib.parse.urlencode({"match[]": match})
            code, body = workload.http_get(f"{prom_url}/api/v1/label/{label}/values?{params}")
            assert code == 200, body
            return set(json.loads(body)["data"])

        assert experiment in label_values("experiment", "training_episodes_total")
        scoped = f'training_episodes_total{{experiment=~"{experiment}"}}'
        assert label_values("device_type", scoped) == set(workload.DEVICE_TYPES)
        assert label_values("algorithm", scoped) == set(workload.ALGORITHMS)

        assert not publisher.errors, publisher.errors
    finally:  # every process is stopped even if stopping another one fails
        try:
            publisher.stop()
            sink.close()
        finally:
            for proc in (prometheus, worker, webhook):
                try:
                    stop(proc)
                except Exception:  # noqa: BLE001 (keep stopping the others)
                    proc.kill()
