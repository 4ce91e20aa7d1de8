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
`/health` and `/ready` answer JSON for the service scripts.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("stgym.alerts")

ROUTES = ("critical", "warning")


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


def handle_payload(payload: dict[str, Any], route: str) -> int:
    """Log every alert of a webhook payload; return how many there were."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("webhook payload has no 'alerts' list")
    receiver = str(payload.get("receiver", ""))
    for alert in alerts:
        log_alert(alert, route, receiver)
    return len(alerts)


class _WebhookHandler(BaseHTTPRequestHandler):
    server_version = "stgym-alerts/1"

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path in ("/health", "/ready"):
            self._reply(HTTPStatus.OK, {"status": "ok", "received": self.server.received})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "alerts" or parts[1] not in ROUTES:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"POST to /alerts/{{{'|'.join(ROUTES)}}}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            payload = json.loads(self.rfile.read(length))
            count = handle_payload(payload, parts[1])
        except (ValueError, TypeError, AttributeError) as error:
            log.warning("rejected webhook payload on %s: %s", self.path, error)
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.server.received += count
        self._reply(HTTPStatus.OK, {"logged": count})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("webhook %s %s", self.address_string(), format % args)


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _WebhookHandler)
        self.received = 0


def serve(host: str, port: int) -> int:
    """Run the receiver until SIGTERM/SIGINT."""
    try:
        server = WebhookServer(host, port)
    except OSError as error:
        from stgym.errors import UserError

        raise UserError(f"cannot listen on {host}:{port} for alerts: {error.strerror}") from error
    stopping = threading.Event()

    def stop(signum, frame) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("alert webhook receiver listening on http://%s:%d/alerts/{critical,warning}",
             host, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log.info("alert webhook receiver stopped after %d alerts", server.received)
    return 0
