"""/metrics of both stgym servers — a stream worker's (httpserver.serve) and a trainer's
(producers.worker_metrics) — is open to loopback and asks any other peer for the metrics
token (401 without it or with a wrong one); /health and /ready stay open (kubelet probes carry
no token). A peer counts as remote here by patching `is_loopback` (a real other host: the
namespace lab, tests/ops/test_multihost.py)."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from producers.worker_metrics import WorkerMetrics
from stgym import httpserver

TOKEN = "the-metrics-token"


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(params=["stream", "trainer"])
def metrics_url(request, monkeypatch):
    """/metrics of one of the two servers, with the token TOKEN (from settings)."""
    monkeypatch.setenv("STGYM_METRICS_TOKEN", TOKEN)
    if request.param == "stream":
        registry = CollectorRegistry()
        Counter("probe_events", "events", registry=registry).inc()
        server = httpserver.serve(0, registry, lambda: (True, {}))
        yield f"http://127.0.0.1:{server.server_address[1]}", "probe_events_total"
        server.shutdown()
    else:
        port = free_port()
        metrics = WorkerMetrics(port, "127.0.0.1", {"experiment": "e", "device_type": "stt-pma",
                                                    "algorithm": "cem"})
        yield f"http://127.0.0.1:{port}", "simulation_steps_per_second"
        metrics.close()


def test_loopback_reads_metrics_without_a_token(metrics_url):
    base, metric = metrics_url
    status, body = get(base + "/metrics")
    assert status == 200 and metric in body


@pytest.mark.parametrize("token", [None, "wrong-token", ""], ids=["none", "wrong", "empty"])
def test_a_remote_peer_without_the_token_is_refused(metrics_url, monkeypatch, token):
    base, metric = metrics_url
    monkeypatch.setattr(httpserver, "is_loopback", lambda peer: False)
    status, body = get(base + "/metrics", token)
    assert status == 401 and metric not in body
    assert "metrics token" in body


def test_a_remote_peer_with_the_token_reads_metrics(metrics_url, monkeypatch):
    base, metric = metrics_url
    monkeypatch.setattr(httpserver, "is_loopback", lambda peer: False)
    status, body = get(base + "/metrics", TOKEN)
    assert status == 200 and metric in body


def test_remote_scrapes_are_refused_where_no_token_exists(metrics_url, monkeypatch, tmp_path):
    base, _ = metrics_url
    monkeypatch.delenv("STGYM_METRICS_TOKEN")
    monkeypatch.setenv("STGYM_SECRETS_DIR", str(tmp_path))  # no metrics.token in it
    monkeypatch.setattr(httpserver, "is_loopback", lambda peer: False)
    assert get(base + "/metrics", "")[0] == 401
    assert get(base + "/metrics", "anything")[0] == 401


def test_health_and_ready_stay_open_to_remote_peers(monkeypatch):
    monkeypatch.setattr(httpserver, "is_loopback", lambda peer: False)
    server = httpserver.serve(0, CollectorRegistry(), lambda: (True, {}), token=lambda: TOKEN)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert get(base + "/health")[0] == 200 and get(base + "/ready")[0] == 200
        assert get(base + "/metrics")[0] == 401
    finally:
        server.shutdown()


@pytest.mark.parametrize("peer,loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.231.0.1", False), ("::ffff:10.0.0.1", False), ("fd00::2", False), ("", False),
    (None, False), ("not-an-address", False)])
def test_which_peers_are_loopback(peer, loopback):
    assert httpserver.is_loopback(peer) is loopback
