"""`stgym alerts serve`: the Alertmanager webhook receiver that logs every alert.

Alertmanager (compose/alertmanager/alertmanager.yml) posts its webhook payload
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) to
``http://127.0.0.1:<alert_webhook_port>/alerts/<route>``, route = critical | warning. Each alert
in the payload becomes one structured log record of logger ``stgym.alerts``:

* level ERROR for a firing critical alert, WARNING for any other firing alert, INFO when resolved;
* message ``alert <status>: <alertname> — <summary>``;
* fields ``alertname, alert_status, severity, route, receiver, labels, annotations, starts_at,
  ends_at, fingerprint`` and ``experiment_id`` when the alert has an ``experiment`` label.

With ``--log-format json`` these records reach stderr, the local JSON log file and (when shipping
is on) OpenSearch, so ``stgym logs search "LowSuccessRate" --service stgym-alerts`` finds them.
`/health`, `/ready` and `/metrics` (the dead man's switch) are stgym.httpserver's probes.

Dead man's switch: the always-firing ``Watchdog`` alert (compose/prometheus/alert_rules.yml)
arrives on route ``watchdog`` every minute. A down Prometheus or Alertmanager cannot alert on
itself, so when no Watchdog has arrived for ``settings.watchdog_timeout_s`` (counted from start
too) the receiver logs one CRITICAL record and sets ``stgym_watchdog_missing`` to 1; the next
Watchdog logs the recovery and resets it.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Any, Callable

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge

from stgym import httpserver, tracing

log = logging.getLogger("stgym.alerts")

ROUTES = ("critical", "warning", "watchdog")
WATCHDOG = "Watchdog"

WATCHDOG_MISSING = Gauge(
    "stgym_watchdog_missing",
    "1 while no Watchdog alert arrived for settings.watchdog_timeout_s (alerting path broken)")
WATCHDOG_LAST_SEEN = Gauge(
    "stgym_watchdog_last_seen_timestamp_seconds", "Unix time of the last Watchdog alert received")
WATCHDOG_TRIPS = Counter(
    "stgym_watchdog_trips_total", "Times the dead man's switch fired (Watchdog overdue)")


class DeadMansSwitch:
    """Alarm when the Watchdog heartbeat stops: `beat()` on each Watchdog, `check()` often."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {timeout_s}")
        self.timeout_s = timeout_s
        self.clock = clock
        self.last_beat = clock()  # start-up counts as a beat: Prometheus gets one timeout
        self.tripped = False
        self.lock = threading.Lock()
        WATCHDOG_MISSING.set(0)

    def beat(self) -> None:
        with self.lock:
            self.last_beat = self.clock()
            WATCHDOG_LAST_SEEN.set(time.time())
            if self.tripped:
                self.tripped = False
                WATCHDOG_MISSING.set(0)
                log.warning("Watchdog alert received again: the alerting path is back",
                            extra={"alertname": WATCHDOG, "alert_status": "resolved"})

    def check(self) -> bool:
        """Trip (once per outage) when the last beat is older than the timeout; True if tripped."""
        with self.lock:
            silent_s = self.clock() - self.last_beat
            if not self.tripped and silent_s > self.timeout_s:
                self.tripped = True
                WATCHDOG_MISSING.set(1)
                WATCHDOG_TRIPS.inc()
                log.critical(
                    "no Watchdog alert for %.0f s (timeout %.0f s): Prometheus, Alertmanager or "
                    "the route to this receiver is down; no other alert can arrive",
                    silent_s, self.timeout_s,
                    extra={"alertname": WATCHDOG, "alert_status": "missing", "severity": "critical"})
            return self.tripped


def log_alert(alert: dict[str, Any], route: str, receiver: str) -> None:
    """Write one Alertmanager alert as a structured record."""
    labels = alert.get("labels", {})
    annotations = alert.get("annotations", {})
    status = alert.get("status", "firing")
    severity = labels.get("severity", "none")
    if status == "resolved":
        level = logging.INFO
    else:
        level = logging.ERROR if severity == "critical" else logging.WARNING
    name = labels.get("alertname", "unknown")
    fields = {
        "alertname": name,
        "alert_status": status,
        "severity": severity,
        "route": route,
        "receiver": receiver,
        "labels": labels,
        "annotations": annotations,
        "starts_at": alert.get("startsAt"),
        "ends_at": alert.get("endsAt"),
        "fingerprint": alert.get("fingerprint"),
    }
    if "experiment" in labels:  # searchable like any record: stgym logs search --experiment X
        fields["experiment_id"] = labels["experiment"]
    summary = annotations.get("summary", "")
    log.log(level, "alert %s: %s — %s", status, name, summary, extra=fields)


def handle_payload(payload: dict[str, Any], route: str,
                   switch: DeadMansSwitch | None = None) -> int:
    """Log every alert of a webhook payload (a Watchdog only beats `switch`); return how many."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("webhook payload has no 'alerts' list")
    receiver = str(payload.get("receiver", ""))
    for alert in alerts:
        if alert.get("labels", {}).get("alertname") == WATCHDOG:
            if switch is not None and alert.get("status", "firing") == "firing":
                switch.beat()
            continue
        log_alert(alert, route, receiver)
    return len(alerts)


def webhook_route(switch: DeadMansSwitch | None, received: list[int]) -> web.RouteDef:
    """POST /alerts/<route>: log the payload's alerts; `received[0]` counts them."""

    async def receive(request: web.Request) -> web.Response:
        route = request.match_info["route"]
        if route not in ROUTES:
            return httpserver.json_response(
                {"error": f"POST to /alerts/{{{'|'.join(ROUTES)}}}"}, 404)
        try:
            payload = json.loads(await request.read())
            with tracing.span("alert_webhook", route=route):  # its alert records carry the ids
                count = handle_payload(payload, route, switch)
        except (ValueError, TypeError, AttributeError) as error:
            log.warning("rejected webhook payload on %s: %s", request.path, error)
            return httpserver.json_response({"error": str(error)}, 400)
        received[0] += count
        return httpserver.json_response({"logged": count})

    return web.post("/alerts/{route}", receive)


def serve(host: str, port: int, watchdog_timeout_s: float) -> int:
    """Run the receiver and its dead man's switch until SIGTERM/SIGINT."""
    switch = DeadMansSwitch(watchdog_timeout_s)
    received = [0]
    try:
        server = httpserver.serve(port, REGISTRY, lambda: (True, {"received": received[0]}),
                                  host=host, service="stgym-alerts",
                                  health=lambda: {"received": received[0]},
                                  routes=[webhook_route(switch, received)])
    except OSError as error:
        from stgym.errors import UserError

        raise UserError(f"cannot listen on {host}:{port} for alerts: {error.strerror}") from error
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    log.info("alert webhook receiver listening on http://%s:%d/alerts/{critical,warning}",
             host, server.server_address[1])
    try:
        while not stopping.wait(min(1.0, watchdog_timeout_s / 10)):
            switch.check()
    finally:
        server.shutdown()
        log.info("alert webhook receiver stopped after %d alerts", received[0])
    return 0
