"""`stgym serve` (streams.api) and its live dashboard, on stores filled by a real run.

A real run = `stgym demo` (trainer -> memory bus -> the stream aggregation -> the store). The
API reads SQLite read-only and PostgreSQL through the read-only role that
compose/bare/postgres.sh creates; the dashboard is loaded in headless Chromium (Debian package,
installed by compose/bare/api.sh) and its screenshot must show the drawn series' colours.
"""
from __future__ import annotations

import io
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from streams.api import KpiApi, open_reader

REPO = Path(__file__).resolve().parents[2]
SERIES_COLOURS = ("#1f77b4", "#d62728")  # the first two of streams/static/dashboard.js COLORS


def real_run(db_url: str, episodes: int = 240) -> str:
    """Train with `stgym demo` into the store at db_url; returns the experiment id."""
    out = subprocess.run(
        [sys.executable, "-m", "stgym.cli", "--log-level", "WARNING", "demo", "--episodes",
         str(episodes), "--db", db_url, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)["experiment"]


def get(base: str, path: str, **params) -> tuple[int, dict]:
    resp = requests.get(base + path, params=params, timeout=30)
    return resp.status_code, resp.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('kpi-api') / 'store.sqlite3'}"
    return url, real_run(url)


@pytest.fixture
def sqlite_api(sqlite_run):
    url, experiment = sqlite_run
    reader = open_reader(url)
    server = KpiApi(reader, refresh_s=0.5).start(0)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server, reader, experiment
    server.shutdown()
    reader.close()


def check_api(base: str, reader, experiment: str) -> None:
    """What the API answers equals what the store holds, over every route."""
    status, body = get(base, "/api/v1/experiments")
    assert status == 200
    listed = {e["experiment_id"]: e for e in body["experiments"]}
    totals = reader.query_kpis(experiment=experiment)
    n = sum(r["episodes_total"] for r in totals)
    assert n == 240 and listed[experiment]["episodes_total"] == n  # held-out episodes not stored
    assert all(isinstance(r["validation_objective"], float) for r in totals)
    status, body = get(base, "/api/v1/kpis", experiment=experiment)
    assert status == 200 and body["kpis"] == json.loads(json.dumps(totals))
    status, body = get(base, "/api/v1/kpis", experiment=experiment, window="1s", since="1h")
    assert status == 200 and body["window_s"] == 1 and body["since_s"] == 3600
    assert sum(r["episodes_total"] for r in body["kpis"]) == n
    assert all(r["window_s"] == 1 and r["window_start"] % 1 == 0 for r in body["kpis"])
    status, body = get(base, "/api/v1/kpis", experiment=experiment, device_type="sot-pma")
    assert {r["device_type"] for r in body["kpis"]} == {"sot-pma"}
    # Paging: every episode exactly once, in (ts, event_id) order.
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 37} | ({"cursor": cursor} if cursor else {})
        status, body = get(base, f"/api/v1/experiments/{experiment}/episodes", **params)
        assert status == 200
        seen += [(e["ts"], e["event_id"]) for e in body["episodes"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == n == len(set(seen)) and seen == sorted(seen) and pages == n // 37 + 1


def check_bad_parameters(base: str, experiment: str) -> None:
    for path, params, parameter in (
        ("/api/v1/kpis", {"window": "abc"}, "window"),
        ("/api/v1/kpis", {"since": "-5m"}, "since"),
        ("/api/v1/kpis", {"windw": "1m"}, "windw"),
        ("/api/v1/experiments", {"x": "1"}, "x"),
        (f"/api/v1/experiments/{experiment}/episodes", {"limit": "0"}, "limit"),
        (f"/api/v1/experiments/{experiment}/episodes", {"limit": "ten"}, "limit"),
        (f"/api/v1/experiments/{experiment}/episodes", {"cursor": "garbage"}, "cursor"),
    ):
        status, body = get(base, path, **params)
        assert status == 400 and body["parameter"] == parameter, (path, params, body)
        assert parameter in body["error"]
    status, body = get(base, "/api/v1/nothing-here")
    assert status == 404 and "/api/v1/nothing-here" in body["error"]


def check_metrics(base: str) -> None:
    text = requests.get(base + "/metrics", timeout=10).text
    episodes_route = "/api/v1/experiments/{experiment_id}/episodes"
    assert f'http_requests_total{{method="GET",route="{episodes_route}",status="200"}}' in text
    assert 'http_requests_total{method="GET",route="/api/v1/kpis",status="400"} 3.0' in text
    assert 'http_requests_total{method="GET",route="/{tail}",status="404"} 1.0' in text
    assert f'http_request_duration_seconds_count{{method="GET",route="{episodes_route}"}}' in text
    routes = {line.split('route="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("http_requests_total{")}
    assert routes <= {"/api/v1/experiments", "/api/v1/kpis", episodes_route, "/{tail}",
                      "/health", "/ready", "/metrics", "/"}  # templates, never an id


def test_api_over_sqlite_read_only(sqlite_api):
    server, reader, experiment = sqlite_api
    check_api(server.url, reader, experiment)
    check_bad_parameters(server.url, experiment)
    check_metrics(server.url)
    assert get(server.url, "/ready")[1]["schema"] is True
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("DELETE FROM episodes")


def test_api_over_postgres_reader_role(postgres_url, stgym_settings):
    import psycopg2

    experiment = real_run(postgres_url)
    # the read-only role of settings, on this test's own database
    reader_url = stgym_settings.postgres_reader_url.rsplit("/", 1)[0] + "/" + postgres_url.rsplit("/", 1)[1]
    reader = open_reader(reader_url)
    server = KpiApi(reader).start(0)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        check_api(server.url, reader, experiment)
        check_bad_parameters(server.url, experiment)
        check_metrics(server.url)
    finally:
        server.shutdown()
        reader.close()
    # The role itself may not write, even outside the API's read-only sessions.
    conn = psycopg2.connect(reader_url)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("DELETE FROM episodes")
        conn.rollback()
        conn.autocommit = True  # a session that turns read-write still lacks the privilege
        with conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM episodes")
    finally:
        conn.close()


def test_serve_answers_503_while_the_database_is_down(stgym_settings):
    """`stgym serve` with a database that does not answer: it runs, /health is 200, /ready and
    the API are 503 with a reason, and nothing crashes."""
    port, dead = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stgym.cli", "serve", "--port", str(port), "--db",
         f"postgresql://stgym_reader:stgym_reader@127.0.0.1:{dead}/stgym"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get(base + "/health", timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert get(base, "/ready")[0] == 503
        status, body = get(base, "/api/v1/kpis")
        assert status == 503 and "OperationalError" in body["detail"]
        assert get(base, "/api/v1/kpis", window="nope")[0] == 400  # parameters first
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


# -- the dashboard in headless Chromium --------------------------------------------------------

@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `bash compose/bare/services.sh install api` "
                    "(apt-get install chromium)", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


def colour_pixels(png: bytes, hex_colour: str, tolerance: int = 40) -> int:
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=2) <= tolerance).sum())


def test_dashboard_draws_the_real_run_and_shows_an_error_when_the_api_is_down(sqlite_api, browser):
    server, reader, experiment = sqlite_api
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/?experiment={experiment}&window=1s&since=1h")
    page.wait_for_function("document.body.dataset.state === 'live'", timeout=20_000)
    assert errors == []
    rows = page.locator("#summary tbody tr")
    assert rows.count() == 2 and experiment in rows.first.inner_text()
    for chart in ("success", "energy", "time", "rate"):
        canvas = page.locator(f"#chart-{chart} canvas")
        png = canvas.screenshot()
        counts = {c: colour_pixels(png, c) for c in SERIES_COLOURS}
        # both keys (stt-pma, sot-pma) are drawn in their colours: at least a whole point
        # (7 px across, ~38 px) each, more where a key spans several windows (lines)
        assert all(n >= 25 for n in counts.values()), (chart, counts)
    legend = page.locator("#chart-time .u-legend").inner_text()
    assert all(f"{d} / cem {p}" in legend for d in ("sot-pma", "stt-pma") for p in ("p50", "p95", "p99"))

    server.shutdown()  # the API goes down under the open page
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=20_000)
    banner = page.locator("#error")
    assert banner.is_visible() and "KPI API unavailable" in banner.inner_text()
    assert colour_pixels(banner.screenshot(), "#b00020") > 200  # the red error banner is drawn
