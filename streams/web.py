"""/metrics, /health and /ready for a process, on a small threaded HTTP server of its own."""
from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


def serve(port: int, registry, ready: Callable[[], tuple[bool, dict]], host: str = "127.0.0.1",
          service: str = "stgym-stream") -> ThreadingHTTPServer:
    """Start serving in a daemon thread; `ready()` returns (ok, details). Port 0 picks one."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, payload: dict) -> None:
            self._send(code, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                self._json(200, {"status": "ok", "service": service, "pid": os.getpid()})
            elif path == "/ready":
                try:
                    ok, details = ready()
                except Exception as error:  # a readiness probe must answer, not crash
                    ok, details = False, {"error": str(error)}
                self._json(200 if ok else 503, {"status": "ready" if ok else "not ready",
                                                "service": service, "pid": os.getpid(), **details})
            else:
                self._json(404, {"error": "not found", "paths": ["/metrics", "/health", "/ready"]})

        def log_message(self, format, *args) -> None:  # noqa: A002 (http.server API)
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"web-{port}", daemon=True).start()
    return server
