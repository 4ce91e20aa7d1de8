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

Hardened against what is not Alertmanager: a body above MAX_BODY_BYTES (413) or not sent within
READ_TIMEOUT_S (408), more than MAX_ALERTS alerts, JSON that is malformed, nested deeper than
MAX_JSON_DEPTH or not shaped like a webhook payload (400), and — when a bearer token is
configured (settings.alert_webhook_token or the generated secrets_dir/alert-webhook.token,
which the rendered alertmanager.yml sends as http_config.authorization) — a missing or wrong
`Authorization: Bearer` header (401). Each refusal is one WARNING record; none ends the server.

Dead man's switch: the always-firing ``Watchdog`` alert (compose/prometheus/alert_rules.yml)
arrives on route ``watchdog`` every minute. A down Prometheus or Alertmanager cannot alert on
itself, so when no Watchdog has arrived for ``settings.watchdog_timeout_s`` (counted from start
too) the receiver logs one CRITICAL record and sets ``stgym_watchdog_missing`` to 1; the next
Watchdog logs the recovery and resets it.
"""
from __future__ import annotations

import asyncio
import hmac
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
MAX_BODY_BYTES = 1024 * 1024  # Alertmanager's payload of MAX_ALERTS alerts is ~1 KiB each
MAX_ALERTS = 1000
MAX_JSON_DEPTH = 8  # a webhook payload nests 4 levels: payload > alerts > alert > labels
READ_TIMEOUT_S = 10.0


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

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


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, counted no further than limit + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def parse_payload(body: bytes) -> dict[str, Any]:
    """The webhook payload of a request body, checked for its shape; BadRequest otherwise."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise BadRequest(400, "JSON nested too deeply") from None
    except ValueError as error:
        raise BadRequest(400, f"not JSON: {error}") from None
    if _depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise BadRequest(400, "webhook payload has no 'alerts' list")
    if len(payload["alerts"]) > MAX_ALERTS:
        raise BadRequest(400, f"{len(payload['alerts'])} alerts in one payload > {MAX_ALERTS}")
    for alert in payload["alerts"]:
        if not isinstance(alert, dict):
            raise BadRequest(400, "an alert is not a JSON object")
        for part in ("labels", "annotations"):
            values = alert.get(part, {})
            if not isinstance(values, dict) or not all(
                    isinstance(v, str) for v in values.values()):
                raise BadRequest(400, f"an alert's {part} are not an object of strings")
    return payload


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


async def read_body(request: web.Request) -> bytes:
    """At most MAX_BODY_BYTES of the body, within READ_TIMEOUT_S; BadRequest otherwise."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body of {request.content_length} bytes > {MAX_BODY_BYTES}")
    async def whole() -> bytes:
        chunks, size = [], 0
        while chunk := await request.content.read(64 * 1024):  # b"" at the end of the body
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(413, f"body > {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(whole(), READ_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BadRequest(408, f"body not received within {READ_TIMEOUT_S:g} s") from None


def webhook_route(switch: DeadMansSwitch | None, received: list[int],
                  token: str | None = None) -> web.RouteDef:
    """POST /alerts/<route>: log the payload's alerts; `received[0]` counts them. With a
    `token`, only requests carrying `Authorization: Bearer <token>` are accepted."""
    expected = f"Bearer {token}".encode() if token else None

    async def receive(request: web.Request) -> web.Response:
        route = request.match_info["route"]
        try:
            if expected is not None and not hmac.compare_digest(
                    request.headers.get("Authorization", "").encode(), expected):
                raise BadRequest(401, "missing or wrong bearer token")
            if route not in ROUTES:
                raise BadRequest(404, f"POST to /alerts/{{{'|'.join(ROUTES)}}}")
            payload = parse_payload(await read_body(request))
            with tracing.span("alert_webhook", route=route):  # its alert records carry the ids
                count = handle_payload(payload, route, switch)
        except BadRequest as error:
            log.warning("refused webhook request on %s from %s (%d): %s", request.path,
                        request.remote, error.status, error)
            return httpserver.json_response({"error": str(error)}, error.status)
        received[0] += count
        return httpserver.json_response({"logged": count})

    return web.post("/alerts/{route}", receive)


def serve(host: str, port: int, watchdog_timeout_s: float, token: str | None = None) -> int:
    """Run the receiver and its dead man's switch until SIGTERM/SIGINT; `token`: the bearer
    token requests must carry (None: any request is accepted)."""
    switch = DeadMansSwitch(watchdog_timeout_s)
    received = [0]
    try:
        server = httpserver.serve(port, REGISTRY, lambda: (True, {"received": received[0]}),
                                  host=host, service="stgym-alerts",
                                  health=lambda: {"received": received[0]},
                                  routes=[webhook_route(switch, received, token)])
    except OSError as error:
        from stgym.errors import UserError

        raise UserError(f"cannot listen on {host}:{port} for alerts: {error.strerror}") from error
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    log.info("alert webhook receiver listening on http://%s:%d/alerts/{critical,warning}%s",
             host, server.server_address[1],
             " (bearer token required)" if token else " (no token configured: unauthenticated)")
    try:
        while not stopping.wait(min(1.0, watchdog_timeout_s / 10)):
            switch.check()
    finally:
        server.shutdown()
        log.info("alert webhook receiver stopped after %d alerts", received[0])
    return 0
