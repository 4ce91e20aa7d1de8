"""Monitoring the monitoring, live: a PRIVATE Prometheus and Alertmanager (own ports and data
directories, the committed configs rendered by compose/bare/render.py) deliver the Watchdog to a
private `stgym alerts serve`; stopping that Prometheus trips the dead man's switch (one CRITICAL
record, stgym_watchdog_missing 1) and starting it again resets the switch.

Only the timings are shortened: rule evaluation every second, the alert resend delay 1 s (so an
alert of a dead Prometheus expires in Alertmanager after 4 s instead of 4 minutes), the
Watchdog route's repeat interval 1 s and the switch's timeout 6 s. The shared stack is not
touched (its services are not even scraped)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import composekit
from stgym import settings as settings_module
from streams import workload

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 6
pytestmark = pytest.mark.services  # the Prometheus and Alertmanager that services.sh installs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric(url: str, name: str) -> float | None:
    code, body = workload.http_get(f"{url}/metrics")
    if code != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def start(argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env,
                            start_new_session=True)


def test_stopping_prometheus_trips_the_dead_mans_switch(tmp_path):
    ports = {"prometheus": free_port(), "alertmanager": free_port(), "alert_webhook": free_port()}
    env = dict(os.environ, STGYM_DATA_DIR=str(tmp_path / "data"), STGYM_LOG_SHIP="off",
               STGYM_WATCHDOG_TIMEOUT_S=str(TIMEOUT_S),
               **{f"STGYM_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    render = composekit.bare_module("render")
    settings = settings_module.Settings(**{f"{name}_port": port for name, port in ports.items()})

    prom = yaml.safe_load(render.render(REPO / "compose" / "prometheus" / "prometheus.yml", settings))
    prom["global"].update(scrape_interval="1s", evaluation_interval="1s")
    prom["scrape_configs"] = [job for job in prom["scrape_configs"]
                              if job["job_name"] in ("prometheus", "alertmanager")]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{ports['alertmanager']}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    am = yaml.safe_load(render.render(REPO / "compose" / "alertmanager" / "alertmanager.yml", settings))
    [route] = [r for r in am["route"]["routes"] if r["matchers"] == ['alertname="Watchdog"']]
    route.update(group_interval="1s", repeat_interval="1s")
    [receiver] = [r for r in am["receivers"] if r["name"] == route["receiver"]]
    assert receiver["webhook_configs"][0]["url"] == f"http://127.0.0.1:{ports['alert_webhook']}/alerts/watchdog"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am))

    hook_url = f"http://127.0.0.1:{ports['alert_webhook']}"
    prometheus_argv = [
        "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--rules.alert.resend-delay=1s",
        f"--web.listen-address=127.0.0.1:{ports['prometheus']}"]
    alertmanager = start(
        ["prometheus-alertmanager", f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
         "--cluster.listen-address="], tmp_path / "alertmanager.log", env)
    prometheus = start(prometheus_argv, tmp_path / "prometheus.log", env)
    webhook = None
    try:
        # The switch counts its start as a beat: start it once the others answer (Alertmanager
        # retries the notifications it could not deliver meanwhile).
        for name in ("prometheus", "alertmanager"):
            workload.wait_until(lambda: workload.http_get(f"http://127.0.0.1:{ports[name]}/-/ready")[0] == 200,
                               60, 0.5, what=f"private {name} ready (logs under {tmp_path})")
        webhook = start([sys.executable, "-m", "stgym.cli", "--log-format", "json", "alerts", "serve"],
                        tmp_path / "webhook.log", env)
        workload.wait_until(lambda: (metric(hook_url, "stgym_watchdog_last_seen_timestamp_seconds") or 0) > 0,
                           60, 0.5, what=f"first Watchdog at the webhook (logs under {tmp_path})")
        first = metric(hook_url, "stgym_watchdog_last_seen_timestamp_seconds")
        workload.wait_until(lambda: metric(hook_url, "stgym_watchdog_last_seen_timestamp_seconds") > first + TIMEOUT_S,
                           30, 0.5, what="Watchdog repeated for longer than the timeout")
        assert metric(hook_url, "stgym_watchdog_missing") == 0
        # A loaded machine may delay the very first Watchdog past the timeout (Alertmanager
        # backs off the notifications the webhook was not up for): the switch then trips and
        # resets once before this point, as it should. The trip under test is the next one.
        trips_before = metric(hook_url, "stgym_watchdog_trips_total")

        workload.stop_worker(prometheus)
        workload.wait_until(lambda: metric(hook_url, "stgym_watchdog_missing") == 1, 60, 0.5,
                           what="dead man's switch tripped after Prometheus stopped")
        trips = metric(hook_url, "stgym_watchdog_trips_total")
        assert trips == trips_before + 1

        prometheus = start(prometheus_argv, tmp_path / "prometheus-2.log", env)
        workload.wait_until(lambda: metric(hook_url, "stgym_watchdog_missing") == 0, 60, 0.5,
                           what="switch reset by the Watchdog of the restarted Prometheus")
    finally:
        for proc in (prometheus, alertmanager, webhook):
            if proc is not None:
                workload.stop_worker(proc)
    records = [json.loads(line) for line in (tmp_path / "webhook.log").read_text().splitlines()
               if line.startswith("{")]
    critical = [r for r in records if r["level"] == "CRITICAL"]
    assert len(critical) == trips, critical  # one CRITICAL line per trip
    assert all(r["alertname"] == "Watchdog" and r["alert_status"] == "missing" for r in critical)
    assert any("alerting path is back" in r["message"] for r in records)
