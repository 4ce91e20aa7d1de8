"""One small HTTP server for a process's probes and hooks, on aiohttp.

`/metrics` (a prometheus_client registry), `/health` (liveness: always 200, with what the
process adds, such as why it is stuck), `/ready` (200 or 503) and any extra routes (the alert
webhook's POST). The server runs in a daemon thread with its own event loop, so a Faust worker,
a trainer or a blocking main loop never waits on a probe, and a probe never waits on them; the
callbacks (`ready`, `health`, the registry's collectors, which may query the database) run in
the loop's thread pool.

`/metrics` is open to loopback peers (this machine's Prometheus, `make demo`); any other peer
must send `Authorization: Bearer <settings.metrics_token>` (secrets_dir/metrics.token, read on
each remote scrape, so a new token needs no restart) or gets 401. `/health` and `/ready` stay
open: a kubelet's probes carry no credentials, and they say nothing but up/ready.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stgym import settings as settings_module
from stgym.errors import UserError

log = logging.getLogger(__name__)

def json_response(payload: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload), status=status, content_type="application/json")


def is_loopback(peer: str | None) -> bool:
    """Whether a peer address is this machine's loopback (IPv4, IPv6 or IPv4-mapped)."""
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def settings_scrape_token() -> str:
    return settings_module.load().scrape_token()


def scrape_refusal(request: web.Request, token: Callable[[], str]) -> web.Response | None:
    """None when `request` may read /metrics (a loopback peer, or the bearer token), else 401."""
    if is_loopback(request.remote):
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    try:
        expected = token()
    except UserError as error:  # no token here: remote scrapes are refused, loudly
        log.warning("/metrics refused to %s: %s", request.remote, error)
        expected = ""
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.encode()):
        return None
    return web.json_response(
        {"error": "/metrics from another machine needs Authorization: Bearer <metrics token> "
                  "(settings.metrics_token, secrets_dir/metrics.token)"},
        status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


async def in_pool(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def metrics_route(registry, token: Callable[[], str] = settings_scrape_token) -> web.RouteDef:
    """GET /metrics of `registry`; peers other than loopback need the bearer token."""

    async def metrics(request: web.Request) -> web.Response:
        refusal = scrape_refusal(request, token)
        if refusal is not None:
            return refusal
        body = await in_pool(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", metrics)


def probe_routes(registry, ready: Callable[[], tuple[bool, dict]], service: str,
                 health: Callable[[], dict] | None = None,
                 token: Callable[[], str] = settings_scrape_token) -> list[web.RouteDef]:
    """GET /metrics, /health and /ready; `ready()` returns (ok, details), `health()` details."""

    async def health_probe(request: web.Request) -> web.Response:
        try:
            details = await in_pool(health) if health is not None else {}
        except Exception as error:  # a liveness probe must answer, not crash
            details = {"error": str(error)}
        return json_response({"status": "ok", "service": service, "pid": os.getpid(), **details})

    async def ready_probe(request: web.Request) -> web.Response:
        try:
            ok, details = await in_pool(ready)
        except Exception as error:  # a readiness probe must answer, not crash
            ok, details = False, {"error": str(error)}
        return json_response({"status": "ready" if ok else "not ready", "service": service,
                              "pid": os.getpid(), **details}, 200 if ok else 503)

    return [metrics_route(registry, token), web.get("/health", health_probe),
            web.get("/ready", ready_probe)]


class HttpServer:
    """An aiohttp application served from a daemon thread; `shutdown()` stops it."""

    def __init__(self, host: str, port: int, routes: Iterable[web.RouteDef],
                 name: str = "http", middlewares: Iterable = ()) -> None:
        routes = list(routes)
        paths = sorted({getattr(route, "prefix", route.path) for route in routes})  # static: prefix

        async def not_found(request: web.Request) -> web.Response:
            return json_response({"error": f"no such path {request.method} {request.path}",
                                  "paths": paths}, 404)

        app = web.Application(middlewares=list(middlewares))
        app.add_routes(routes)
        app.router.add_route("*", "/{tail:.*}", not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-{port}",
                                        daemon=True)
        self._thread.start()
        try:  # bind here, so a port in use is the caller's OSError
            asyncio.run_coroutine_threadsafe(self._start(host, port), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, host: str, port: int) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    @property
    def server_address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 picks a free one)."""
        return tuple(self._runner.addresses[0][:2])

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop serving (idempotent)."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout_s)
        except Exception as error:  # stopping must not raise out of a finally block
            log.warning("HTTP server did not stop cleanly: %s", error)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


def serve(port: int, registry, ready: Callable[[], tuple[bool, dict]], host: str = "127.0.0.1",
          service: str = "stgym-stream", health: Callable[[], dict] | None = None,
          routes: Iterable[web.RouteDef] = (),
          token: Callable[[], str] = settings_scrape_token) -> HttpServer:
    """Serve /metrics /health /ready (and `routes`) on host:port from now on."""
    return HttpServer(host, port, [*probe_routes(registry, ready, service, health, token),
                                   *routes], name=service)
