"""ClickHouse over https and Alertmanager with TLS and basic auth, against a local HTTPS
server (127.0.0.1) whose certificate a test CA signs: the CA file is what verifies it, the
password comes from its file, and no log line carries it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.metrics import Metrics
from journeystream.runtime.alertmanager import AlertmanagerClient
from journeystream.sinks.store import StoreTarget, connect
from tests.tls import Authority, Certificate, issue, make_ca

PASSWORD = "file-Secr3t-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Certificate, Authority]:
    folder = tmp_path_factory.mktemp("service-pki")
    ca = make_ca(folder, "ca")
    return ca, issue(ca, folder, "server"), make_ca(folder, "other-ca")


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]
    status = 200

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append(dict(self.headers.items()))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def https_server(server_cert: Certificate, status: int) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A threaded HTTPS server on 127.0.0.1 answering `status` to everything; yields its
    port and the headers of every request it received."""
    seen: list[dict[str, str]] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert.cert, server_cert.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def test_clickhouse_https_verifies_with_the_ca_file_and_sends_the_file_password(
    tmp_path: Path, pki: tuple[Authority, Certificate, Authority]
) -> None:
    ca, server_cert, other = pki
    with https_server(server_cert, status=500) as (port, seen):
        env = {
            "JOURNEYSTREAM_CLICKHOUSE_DSN": f"https://writer@127.0.0.1:{port}/journeystream",
            "JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE": str(password_file(tmp_path)),
            "JOURNEYSTREAM_CLICKHOUSE_CA_FILE": str(ca.cert),
        }
        target = StoreTarget.from_settings(Settings.from_env(env))
        assert PASSWORD not in repr(target)
        with pytest.raises(Exception) as trusted:  # the fake server is no ClickHouse: HTTP 500
            connect(target)
        assert "certificate verify failed" not in str(trusted.value)
        assert seen, "TLS handshake failed: no request reached the server"
        credentials = {basic_auth(headers) for headers in seen} | {
            (headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")) for headers in seen
        }
        assert ("writer", PASSWORD) in credentials

        seen.clear()
        untrusted = Settings.from_env({**env, "JOURNEYSTREAM_CLICKHOUSE_CA_FILE": str(other.cert)})
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            connect(StoreTarget.from_settings(untrusted))
        assert seen == []


async def _post_once(client: AlertmanagerClient, seen: list[dict[str, str]], metrics: Metrics) -> None:
    client.fire("rule", {"labels": {"alertname": "rule"}})
    client.start()
    try:
        for _ in range(100):
            done = seen or metrics.alertmanager_posts.labels("error")._value.get() > 0
            if done:
                return
            await asyncio.sleep(0.05)
    finally:
        await client.stop()


def test_alertmanager_tls_and_basic_auth(
    tmp_path: Path, pki: tuple[Authority, Certificate, Authority], caplog: pytest.LogCaptureFixture
) -> None:
    ca, server_cert, other = pki
    with https_server(server_cert, status=200) as (port, seen):
        env = {
            "JOURNEYSTREAM_ALERTMANAGER_URL": f"https://127.0.0.1:{port}",
            "JOURNEYSTREAM_ALERTMANAGER_USERNAME": "journeystream",
            "JOURNEYSTREAM_ALERTMANAGER_PASSWORD_FILE": str(password_file(tmp_path)),
            "JOURNEYSTREAM_ALERTMANAGER_CA_FILE": str(ca.cert),
        }
        metrics = Metrics(CollectorRegistry())
        client = AlertmanagerClient.from_settings(Settings.from_env(env), metrics)
        asyncio.run(_post_once(client, seen, metrics))
        assert [basic_auth(headers) for headers in seen] == [("journeystream", PASSWORD)]
        assert metrics.alertmanager_posts.labels("ok")._value.get() == 1

        seen.clear()
        untrusted = Settings.from_env({**env, "JOURNEYSTREAM_ALERTMANAGER_CA_FILE": str(other.cert)})
        metrics = Metrics(CollectorRegistry())
        with caplog.at_level(logging.WARNING):
            asyncio.run(_post_once(AlertmanagerClient.from_settings(untrusted, metrics), seen, metrics))
        assert seen == []
        assert metrics.alertmanager_posts.labels("error")._value.get() >= 1
        assert "certificate verify failed" in caplog.text.lower()
        assert PASSWORD not in caplog.text


def test_alertmanager_url_credentials_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"JOURNEYSTREAM_ALERTMANAGER_URL": f"http://am:{PASSWORD}@127.0.0.1:9"})
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING):
        asyncio.run(_post_once(AlertmanagerClient.from_settings(settings, metrics), [], metrics))
    assert "posting 1 alerts to http://am:***@127.0.0.1:9/api/v2/alerts failed" in caplog.text
    assert PASSWORD not in caplog.text
