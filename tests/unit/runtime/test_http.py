"""The endpoints' thread: stopped whether or not it ever started (a start that failed
earlier, e.g. a helper process that could not be spawned, must not hang the stop)."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client import CollectorRegistry

from journeystream.runtime.http import HttpEndpoints


def _endpoints() -> HttpEndpoints:
    return HttpEndpoints("127.0.0.1", 0, CollectorRegistry(), lambda: {"ready": True})


def test_endpoints_that_never_started_stop_at_once() -> None:
    endpoints = _endpoints()
    stopping = threading.Thread(target=endpoints.stop, daemon=True)
    stopping.start()
    stopping.join(5)
    assert not stopping.is_alive(), "stop() waited for a server loop that never ran"


def test_endpoints_answer_and_stop() -> None:
    endpoints = _endpoints()
    endpoints.start()
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoints.port}/ready", timeout=5) as response:
        assert response.status == 200 and b'"ready": true' in response.read()
    endpoints.stop()
