"""`stgym alerts serve`: Alertmanager webhook payloads become structured log records."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

PAYLOAD = {
    "version": "4", "status": "firing", "receiver": "stgym-warning",
    "groupLabels": {"alertname": "LowSuccessRate"},
    "alerts": [
        {"status": "firing", "labels": {"alertname": "LowSuccessRate", "severity": "warning",
                                        "experiment": "exp-7", "algorithm": "cem"},
         "annotations": {"summary": "Low switching success rate in exp-7",
                         "description": "Success rate is 25%"},
         "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "fingerprint": "abc123"},
        {"status": "resolved", "labels": {"alertname": "KafkaDown", "severity": "critical"},
         "annotations": {"summary": "Kafka broker is down"},
         "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2026-01-01T00:05:00Z",
         "fingerprint": "def456"},
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start_receiver(tmp_path, **env):
    port = free_port()
    stderr = open(tmp_path / "alerts.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stgym.cli", "--log-format", "json", "alerts", "serve",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=stderr,
        env=dict(os.environ, STGYM_DATA_DIR=str(tmp_path), STGYM_LOG_SHIP="off",
                 STGYM_SECRETS_DIR=str(tmp_path / "secrets"), **env),
    )
    return port, stderr, proc


@pytest.fixture
def receiver(tmp_path):
    port, stderr, proc = start_receiver(tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
        except OSError:
            assert proc.poll() is None, (tmp_path / "alerts.log").read_text()
            time.sleep(0.2)
    yield port, tmp_path / "alerts.log", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stderr.close()


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_each_alert_is_logged_as_a_structured_record(receiver):
    port, log_path, proc = receiver
    status, body = post(f"http://127.0.0.1:{port}/alerts/warning", json.dumps(PAYLOAD).encode())
    assert (status, body) == (200, {"logged": 2})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    alerts = [r for r in records(log_path) if r.get("alertname")]
    firing, resolved = alerts
    assert firing["level"] == "WARNING" and firing["service"] == "stgym-alerts"
    assert firing["logger"] == "stgym.alerts"
    assert firing["message"] == "alert firing: LowSuccessRate — Low switching success rate in exp-7"
    assert (firing["alert_status"], firing["severity"], firing["route"], firing["receiver"]) == (
        "firing", "warning", "warning", "stgym-warning")
    assert firing["experiment_id"] == "exp-7" and firing["labels"]["algorithm"] == "cem"
    assert firing["annotations"]["description"] == "Success rate is 25%"
    assert firing["fingerprint"] == "abc123"
    assert resolved["level"] == "INFO" and resolved["alertname"] == "KafkaDown"
    assert resolved["alert_status"] == "resolved" and resolved["ends_at"] == "2026-01-01T00:05:00Z"


def test_bad_requests_are_refused_and_logged_without_crashing(receiver):
    port, log_path, proc = receiver
    assert post(f"http://127.0.0.1:{port}/alerts/warning", b"{not json")[0] == 400
    assert post(f"http://127.0.0.1:{port}/alerts/warning", b'{"alerts": 3}')[0] == 400
    assert post(f"http://127.0.0.1:{port}/alerts/info", json.dumps(PAYLOAD).encode())[0] == 404
    assert post(f"http://127.0.0.1:{port}/alerts/critical", json.dumps(PAYLOAD).encode())[0] == 200
    assert proc.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ready", "service": "stgym-alerts",
                                               "pid": proc.pid, "received": 2}


def post_raw(port: int, body: bytes, headers: dict | None = None,
             path: str = "/alerts/warning") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # not listening yet
        return 0


def nested(depth: int) -> bytes:
    return json.dumps({"alerts": [{"labels": {"alertname": "x"}, "annotations": {},
                                   "extra": json.loads("[" * depth + "]" * depth)}]}).encode()


def test_hostile_bodies_are_refused_with_their_reason(receiver):
    from stgym import alerts

    port, log_path, proc = receiver
    many = dict(PAYLOAD, alerts=PAYLOAD["alerts"][:1] * (alerts.MAX_ALERTS + 1))
    cases = [
        (b"x" * (alerts.MAX_BODY_BYTES + 1), 413),
        (json.dumps(many).encode(), 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),  # deeper than the JSON parser's recursion
        (nested(alerts.MAX_JSON_DEPTH), 400),
        (json.dumps({"alerts": [{"labels": {"alertname": {"deep": "x"}}}]}).encode(), 400),
        (json.dumps({"alerts": ["not an object"]}).encode(), 400),
        (json.dumps([1, 2]).encode(), 400),
        (b"\xff\xfe", 400),
    ]
    for body, status in cases:
        assert post_raw(port, body) == status, body[:60]
    # a client that announces a body and never sends it is cut off after READ_TIMEOUT_S
    with socket.create_connection(("127.0.0.1", port), timeout=alerts.READ_TIMEOUT_S + 20) as sock:
        sock.sendall(b"POST /alerts/warning HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{")
        assert sock.recv(100).startswith(b"HTTP/1.1 408")
    assert post_raw(port, json.dumps(PAYLOAD).encode()) == 200
    assert proc.poll() is None
    refusals = [r for r in records(log_path) if "refused webhook request" in r.get("message", "")]
    assert len(refusals) == len(cases) + 1


def test_bearer_token_when_configured(tmp_path):
    port, stderr, proc = start_receiver(tmp_path, STGYM_ALERT_WEBHOOK_TOKEN="s3cret-token")
    try:
        body = json.dumps(PAYLOAD).encode()
        deadline = time.monotonic() + 60
        while post_raw(port, body) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert post_raw(port, body) == 401
        assert post_raw(port, body, {"Authorization": "Bearer wrong"}) == 401
        assert post_raw(port, body, {"Authorization": "Bearer s3cret-token"}) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stderr.close()


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "alerts", "serve", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, STGYM_DATA_DIR=str(tmp_path)),
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
