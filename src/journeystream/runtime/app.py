"""The Faust app: topics, the ingest agent, the flush timer and the HTTP endpoints.

No business rules live here: decoding is `core.decode`, rows are `sinks.rows`, writing is
`sinks.sink`. This module wires them to Kafka and decides when offsets may be committed:
an event is acked only after its rows are durable and its rejected copy is on the topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from journeystream.config import Settings
from journeystream.core.decode import Rejection, decode
from journeystream.errors import SinkClosedError
from journeystream.metrics import Metrics
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import (
    ALL_TABLES,
    INTERACTION_EVENTS,
    REJECTED_EVENTS,
    Coordinates,
    interaction_row,
    rejected_row,
)
from journeystream.sinks.sink import BatchingSink

log = logging.getLogger(__name__)

TAKE_MAX = 2000
TAKE_WITHIN_S = 0.05
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Runtime:
    """Everything the worker holds: the Faust app, the sink and the metrics."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.writer = writer
        self.sink = BatchingSink(
            writer,
            ALL_TABLES,
            max_rows=settings.sink_batch_rows,
            max_age_s=settings.sink_flush_ms / 1000,
            max_backoff_s=settings.sink_max_backoff_ms / 1000,
            observer=metrics,
        )
        self.app = _make_app(settings)
        self.interactions = self.app.topic(settings.topic_interactions, partitions=settings.partitions)
        self.rejected = self.app.topic(settings.topic_rejected, partitions=settings.partitions)
        self._last_offsets: dict[Any, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._register()
        self.app.on_before_shutdown.connect(self._on_shutdown)

    def _register(self) -> None:
        app = self.app
        app.agent(self.interactions, name="ingest", concurrency=1)(self._ingest)
        app.timer(2.0, name="lag")(self._update_lag)
        app.page("/metrics")(self._metrics_view())
        app.page("/health")(self._health_view())
        app.page("/ready")(self._ready_view())

    async def _ingest(self, stream: Any) -> None:
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_loop())
        async for events in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            sends = [sent for event in events if (sent := await self._handle(event)) is not None]
            self.sink.after_flush(partial(self._ack, stream, events, sends))
            await self.sink.maybe_flush()

    async def _handle(self, event: Any) -> Awaitable[Any] | None:
        """Decode one message; buffer its row; return the pending send of a rejected copy."""
        message = event.message
        raw: bytes = message.value if message.value is not None else b""
        where = Coordinates(
            message.topic, message.partition, message.offset, int(message.timestamp * 1000), message.key
        )
        self._last_offsets[message.tp] = message.offset
        self.metrics.events_consumed.inc()
        result = decode(raw)
        if isinstance(result, Rejection):
            self.metrics.events_rejected.labels(result.code).inc()
            self.sink.add(
                REJECTED_EVENTS.name, rejected_row(raw, result.code, result.message, where, now_ms())
            )
            return await self.rejected.send(
                key=message.key, value=raw, headers=_rejection_headers(result, where)
            )
        self.metrics.events_valid.inc()
        self.sink.add(INTERACTION_EVENTS.name, interaction_row(result, where, now_ms()))
        return None

    async def _ack(self, stream: Any, events: Sequence[Any], sends: Sequence[Awaitable[Any]]) -> None:
        if sends:
            await asyncio.gather(*sends)  # the rejected copies are on the topic
        for event in events:
            await stream.ack(event)

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Streams have stopped and every event is acked: write what is left."""
        await self.sink.close()

    async def _flush_loop(self) -> None:
        """Flush by age. Not a Faust timer: those stop as soon as the app starts stopping,
        and the rows buffered then must still be written for their offsets to be acked."""
        interval = min(0.25, self.settings.sink_flush_ms / 2000)
        while not self.sink.closed:
            await asyncio.sleep(interval)
            self.metrics.sink_pending_rows.set(self.sink.pending_rows)
            try:
                await self.sink.maybe_flush()
            except SinkClosedError:
                return
            except Exception:
                log.exception("flush failed")

    async def _update_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.settings.topic_interactions:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            # before the first message of a partition, the committed offset is where we stand
            committed = getattr(consumer, "_committed_offset", {}).get(tp) or 0
            processed = max(self._last_offsets.get(tp, -1) + 1, committed)
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - processed))
        self.metrics.ready.set(1 if self.is_ready() else 0)

    def is_ready(self) -> bool:
        app = self.app
        return bool(app.started) and not app.rebalancing and not self.sink.failing

    def _metrics_view(self) -> type[View]:
        registry = self.metrics.registry

        class MetricsView(View):
            async def get(self, request: Request) -> Response:
                # aiohttp refuses a charset inside content_type; Prometheus reads UTF-8 by default
                return self.bytes(generate_latest(registry), content_type=PROMETHEUS_TEXT)

        return MetricsView

    def _health_view(self) -> type[View]:
        class HealthView(View):
            async def get(self, request: Request) -> Response:
                return self.json({"status": "ok"})

        return HealthView

    def _ready_view(self) -> type[View]:
        runtime = self

        class ReadyView(View):
            async def get(self, request: Request) -> Response:
                ready = runtime.is_ready()
                body = {
                    "ready": ready,
                    "sink_failing": runtime.sink.failing,
                    "pending_rows": runtime.sink.pending_rows,
                }
                return self.json(body, status=200 if ready else 503)

        return ReadyView


def _rejection_headers(rejection: Rejection, where: Coordinates) -> list[tuple[str, bytes]]:
    return [
        ("journeystream.reason_code", rejection.code.encode()),
        ("journeystream.reason", rejection.message.encode("utf-8", "replace")),
        ("journeystream.source", f"{where.topic}/{where.partition}/{where.offset}".encode()),
    ]


def _make_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store=settings.store,
        datadir=str(Path(settings.data_dir, "faust")),
        autodiscover=False,
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
    )
