"""/metrics, /health and /ready on a thread of their own: a batch holds the event loop for
a while (that is the point of batching), and a probe must still get its answer at once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class HttpEndpoints:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, readiness: Callable[[], dict[str, Any]]
    ) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(registry, readiness))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: forever if it never ran
            self._server.shutdown()
        self._server.server_close()


def _handler(
    registry: CollectorRegistry, readiness: Callable[[], dict[str, Any]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), PROMETHEUS_TEXT)
            elif self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/ready":
                body = readiness()
                self._json(200 if body["ready"] else 503, body)
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._reply(status, json.dumps(body).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
