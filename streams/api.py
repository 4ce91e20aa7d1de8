"""`stgym serve`: the KPI HTTP API and the live dashboard page, over the KPI store, read only.

Routes (JSON; times in epoch seconds, energies in J, durations in s):

  GET /api/v1/experiments                        experiments, newest first, with episode counts
  GET /api/v1/kpis?experiment=&device_type=&algorithm=&window=&since=
                                                 KPI rows (`stgym kpi --json` shape); window and
                                                 since are durations (10s, 1m, 2h, 1d)
  GET /api/v1/experiments/{experiment_id}/episodes?limit=&cursor=
                                                 one page of episodes in event-time order;
                                                 `next_cursor` fetches the next page
  GET /  (the dashboard)  /static/…  /health  /ready  /metrics

A bad parameter is a 400 whose body names it: {"error": …, "parameter": "window"}; so is an
unknown one. The store is opened read only (PostgreSQL: the read-only role of
settings.postgres_reader_url and read-only sessions; SQLite: mode=ro), and a database that
does not answer is a 503, never a crash. /metrics carries http_requests_total{method,route,
status} and http_request_duration_seconds{method,route}, where route is the route template
(`/api/v1/experiments/{experiment_id}/episodes`; `/{tail}` for unknown paths), so labels stay
bounded. Served by stgym.httpserver (the probes of every process, here with these routes and
middlewares), from `stgym serve` or inside `stgym demo`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from sinks.base import migrations
from stgym.durations import parse_duration
from stgym.httpserver import HttpServer, probe_routes
from stgym.procmetrics import ProcessResourceCollector

log = logging.getLogger(__name__)
disable_created_metrics()  # no *_created series (as streams.metrics)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PAGE = 1000
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BadParameter(Exception):
    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


def _json(payload, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload, allow_nan=False), status=status,
                        content_type="application/json")


def _clean(value):
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _only(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter {name!r}; expected one of {', '.join(allowed)}")


def _duration(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_duration(raw)
    except ValueError:
        raise BadParameter(name, f"{name} must be a duration like 10s, 1m, 2h or 1d, got {raw!r}") from None


def _text(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > 200:
        raise BadParameter(name, f"{name} is longer than 200 characters")
    return raw


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def encode_cursor(ts: float, event_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([ts, event_id]).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    try:
        ts, event_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(event_id, str) or not math.isfinite(float(ts)):
            raise ValueError
        return float(ts), event_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadParameter("cursor", "cursor is not a next_cursor value of this API") from None


class HttpMetrics:
    """The request counter and latency histogram, labelled by the route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=registry)
        self.duration = Histogram("http_request_duration_seconds", "Time to answer an HTTP request",
                                  ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=registry)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            self.requests.labels(method, route, str(status)).inc()
            self.duration.labels(method, route).observe(time.perf_counter() - started)


class KpiApi:
    """The aiohttp application over one read-only sink (`sink` may be shared, e.g. by the demo)."""

    def __init__(self, sink, registry: CollectorRegistry | None = None,
                 service: str = "stgym-serve", refresh_s: float = 2.0) -> None:
        self.sink = sink
        self.service = service
        self.refresh_s = refresh_s
        self.registry = registry or CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        self.registry.register(ProcessResourceCollector(service))

    # -- plumbing ----------------------------------------------------------------------------
    async def _read(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    @web.middleware
    async def errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except BadParameter as error:
            return _json({"error": error.detail, "parameter": error.parameter}, 400)
        except web.HTTPException as error:
            if error.status >= 400 and error.content_type != "application/json":
                return _json({"error": error.reason, "path": request.path}, error.status)
            raise
        except Exception as error:  # the store is down, restarting or not migrated: answer
            detail = _first_line(error)
            log.warning("%s %s failed: %s", request.method, request.path, detail)
            return _json({"error": "the KPI store cannot answer now", "detail": detail}, 503)

    @property
    def middlewares(self) -> list:
        return [self.http.middleware, self.errors]

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/experiments", self.experiments),
            web.get("/api/v1/kpis", self.kpis),
            web.get("/api/v1/experiments/{experiment_id}/episodes", self.episodes),
            web.get("/", self.dashboard),
            web.static("/static", STATIC_DIR),
            *probe_routes(self.registry, self._ready, self.service),
        ]

    def start(self, port: int, host: str = "127.0.0.1") -> HttpServer:
        """Serve from a daemon thread from now on (port 0: any free one)."""
        return HttpServer(host, port, self.routes(), name=self.service, middlewares=self.middlewares)

    # -- handlers ----------------------------------------------------------------------------
    async def experiments(self, request: web.Request) -> web.Response:
        _only(request, ())
        return _json({"experiments": _clean(await self._read(self.sink.list_experiments))})

    async def kpis(self, request: web.Request) -> web.Response:
        _only(request, ("experiment", "device_type", "algorithm", "window", "since"))
        window_s = _duration(request, "window")
        since_s = _duration(request, "since")
        rows = await self._read(
            self.sink.query_kpis, _text(request, "experiment"), _text(request, "device_type"),
            _text(request, "algorithm"), since_s=since_s, window_s=window_s)
        return _json({"kpis": _clean(rows), "window_s": window_s, "since_s": since_s,
                      "generated_at": time.time()})

    async def episodes(self, request: web.Request) -> web.Response:
        _only(request, ("limit", "cursor"))
        raw = request.query.get("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            raise BadParameter("limit", f"limit must be an integer 1..{MAX_PAGE}, got {raw!r}") from None
        if not 1 <= limit <= MAX_PAGE:
            raise BadParameter("limit", f"limit must be an integer 1..{MAX_PAGE}, got {limit}")
        cursor = request.query.get("cursor")
        after = decode_cursor(cursor) if cursor else None
        experiment = request.match_info["experiment_id"]
        rows = await self._read(self.sink.query_episodes, experiment, limit=limit, after=after)
        next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["event_id"]) if len(rows) == limit else None
        return _json({"experiment_id": experiment, "episodes": _clean(rows), "limit": limit,
                      "next_cursor": next_cursor})

    def _ready(self) -> tuple[bool, dict]:
        """Ready = the database answers; `schema` says whether it holds every migration this
        code reads (a fresh cluster has none, an old store fewer, until a stream worker or
        `stgym db migrate` applies them: the read-only API cannot)."""
        ok = self.sink.ping()
        try:
            applied = set(self.sink.migration_versions()) if ok else set()
        except Exception:
            applied = set()
        missing = sorted({m.version for m in migrations()} - applied)
        return ok, {"database": ok, "schema": not missing, "missing_migrations": missing}

    async def dashboard(self, request: web.Request) -> web.Response:
        html = (STATIC_DIR / "dashboard.html").read_text()
        return web.Response(text=html.replace("{{refresh_ms}}", str(int(self.refresh_s * 1000))),
                            content_type="text/html")


def open_reader(url: str):
    """The store at `url`, read only."""
    from sinks.factory import open_sink

    sink = open_sink(url, readonly=True)
    sink.setup()
    return sink


def serve(url: str, port: int, host: str = "127.0.0.1") -> int:
    """Run the API until SIGINT/SIGTERM (the `stgym serve` command)."""
    from sinks.postgres import redact

    sink = open_reader(url)
    server = KpiApi(sink).start(port, host)
    log.info("KPI API on http://%s:%d/ (dashboard), /api/v1/…, /metrics; store %s (read only)",
             host, port, redact(url))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
        sink.close()
    return 0
