"""Delivery of alerts to Alertmanager's API v2, off the processing path.

The evaluator hands over alerts (`fire`, `resolve`) and never waits: a background task posts
the current set, re-posts firing alerts every `resend_s` (Alertmanager resolves an alert it
has not heard of for `resolve_timeout`), and retries with backoff while Alertmanager is down.
Alertmanager deduplicates by label set, so a re-post never notifies twice.

`AlertmanagerClient.from_settings` applies the connection settings: basic auth (user and
password file, or the URL's user:password), and for https the CA file that verifies
Alertmanager's certificate (else the system's CAs). The password is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from datetime import UTC, datetime
from typing import Any

import aiohttp

from journeystream.config import Settings, mask_password
from journeystream.errors import ConfigError
from journeystream.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
POST_TIMEOUT_S = 10.0


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def alert_payload(
    labels: dict[str, str], annotations: dict[str, str], starts_at: int, ends_at: int | None
) -> dict[str, Any]:
    """One alert in the API v2 `postableAlerts` shape."""
    payload: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": iso_time(starts_at)}
    if ends_at is not None:
        payload["endsAt"] = iso_time(ends_at)
    return payload


class AlertmanagerClient:
    def __init__(
        self,
        url: str,
        resend_s: float,
        metrics: Metrics,
        *,
        basic_auth: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.shown_endpoint = mask_password(self.endpoint)  # what logs may show
        self._headers = {}
        if basic_auth is not None:
            token = base64.b64encode(":".join(basic_auth).encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self.ssl_context = ssl_context
        self.resend_s = resend_s
        self.metrics = metrics
        self.firing: dict[str, dict[str, Any]] = {}
        self.resolved: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> AlertmanagerClient:
        """A client for JOURNEYSTREAM_ALERTMANAGER_URL with its basic auth and CA file."""
        auth = None
        if settings.alertmanager_username:
            auth = (settings.alertmanager_username, settings.alertmanager_password)
        context = None
        if settings.alertmanager_ca_file:
            try:
                context = ssl.create_default_context(cafile=settings.alertmanager_ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"JOURNEYSTREAM_ALERTMANAGER_CA_FILE={settings.alertmanager_ca_file!r}: "
                    f"not a usable PEM CA file ({exc})"
                ) from None
        return cls(
            settings.alertmanager_url,
            settings.alert_resend_ms / 1000,
            metrics,
            basic_auth=auth,
            ssl_context=context,
        )

    def fire(self, key: str, payload: dict[str, Any]) -> None:
        self.resolved.pop(key, None)
        self.firing[key] = payload
        self._wake.set()

    def resolve(self, key: str, payload: dict[str, Any]) -> None:
        self.firing.pop(key, None)
        self.resolved[key] = payload
        self._wake.set()

    def forget_all(self) -> None:
        """This worker stopped evaluating (another one leads now): stop re-posting."""
        self.firing.clear()
        self.resolved.clear()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context else None
        async with aiohttp.ClientSession(
            timeout=timeout, headers=self._headers, connector=connector
        ) as session:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.resend_s)
                self._wake.clear()
                if await self._post(session):
                    backoff = 0.5
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self._wake.set()  # try again at once after the pause

    async def _post(self, session: aiohttp.ClientSession) -> bool:
        resolved = dict(self.resolved)
        alerts = [*self.firing.values(), *resolved.values()]
        if not alerts:
            return True
        try:
            async with session.post(self.endpoint, json=alerts) as response:
                if response.status >= 300:
                    text = await response.text()
                    raise RuntimeError(f"HTTP {response.status}: {text[:200]}")
        except Exception as exc:  # down, refused, timeout, bad answer: keep everything, retry
            self.metrics.alertmanager_posts.labels("error").inc()
            log.warning("posting %d alerts to %s failed: %s", len(alerts), self.shown_endpoint, exc)
            return False
        self.metrics.alertmanager_posts.labels("ok").inc()
        for key, payload in resolved.items():
            if self.resolved.get(key) is payload:
                del self.resolved[key]  # delivered; a resolution is posted once
        return True
