"""The Faust app: topics, tables, the three stage agents, ticks, flushing, HTTP endpoints.

No business rules live here. Data flows:

    interactions ──A: ingest──▶ by-device ──B: identity──▶ by-customer ──C: journeys──▶ outputs
                        └──────────────────────────────────────▲
A writes raw rows and rejects; events that need login links go through B, the rest straight
to C. Watermarks travel with the data, so B and C order events by event time exactly.
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
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from journeystream.config import Settings, rules_config
from journeystream.core.alerts import Rule
from journeystream.core.timeline import NEVER
from journeystream.errors import SinkClosedError
from journeystream.metrics import Metrics
from journeystream.runtime.alerting import AlertRunner
from journeystream.runtime.alertmanager import AlertmanagerClient
from journeystream.runtime.partitions import OffsetBook
from journeystream.runtime.stages import IdentityRunner, IngestRunner, JourneyRunner, Topics, TopicSender
from journeystream.runtime.topics import TABLES
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import ALL_TABLES
from journeystream.sinks.sink import BatchingSink

log = logging.getLogger(__name__)

TAKE_MAX = 2000
TAKE_WITHIN_S = 0.05
TICK_S = 1.0
COMMIT_EVERY_S = 1.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class JourneyApp(faust.App):
    """A Faust app that flushes and acks what it can before Faust stops its consumer, so a
    clean stop commits everything that is durable."""

    before_stop: list[Any]

    async def on_stop(self) -> None:
        for hook in getattr(self, "before_stop", []):
            try:
                await hook()
            except Exception:
                log.exception("flush before stop failed; unacked input will be read again")
        await super().on_stop()


class Runtime:
    """Everything the worker holds: the Faust app, the runners, the sink and the metrics."""

    def __init__(
        self, settings: Settings, writer: ClickHouseWriter, metrics: Metrics, rules: Sequence[Rule] = ()
    ) -> None:
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
        app, n = self.app, settings.partitions
        # acks=False: Faust neither tracks nor commits the stages' input offsets; the worker
        # commits them itself from its OffsetBook (see partitions.OffsetBook for why)
        self.interactions = app.topic(settings.topic_interactions, partitions=n, acks=False)
        by_device = app.topic(settings.topic_by_device, partitions=n, acks=False)
        by_customer = app.topic(settings.topic_by_customer, partitions=n, acks=False)
        self.input_topics = {
            settings.topic_interactions,
            settings.topic_by_device,
            settings.topic_by_customer,
        }
        self.offsets = OffsetBook()
        self._last_commit = 0.0
        self._holes: dict[Any, int] = {}
        # Outputs go straight to the app's producer: a Faust topic.send per message builds a
        # channel message and a future wrapper around the same producer call.
        producer = self._producer
        self.topics = Topics(
            rejected=TopicSender(producer, settings.topic_rejected),
            by_device=TopicSender(producer, settings.topic_by_device),
            by_customer=TopicSender(producer, settings.topic_by_customer),
            journeys=TopicSender(producer, settings.topic_journeys),
            irritants=TopicSender(producer, settings.topic_irritants),
        )
        self.alerts_topic = TopicSender(producer, settings.topic_alerts)
        # bytes in, bytes out: the runners own the encoding (orjson), Faust only moves bytes
        self.links, self.customers, self.kpi_cells = (
            app.Table(name, default=None, partitions=n, key_type=bytes, value_type=bytes) for name in TABLES
        )
        flush_producer = self._flush_producer
        self.ingest = IngestRunner(settings, self.topics, self.sink, metrics)
        self.identity = IdentityRunner(settings, self.links, flush_producer, self.topics)
        self.journeys = JourneyRunner(
            settings,
            self.customers,
            flush_producer,
            self.topics,
            self.sink,
            metrics,
            rules_config(settings),
            self.kpi_cells,
        )
        self.alertmanager = (
            AlertmanagerClient(settings.alertmanager_url, settings.alert_resend_ms / 1000, metrics)
            if settings.alertmanager_url and rules
            else None
        )
        self.alerting = AlertRunner(
            settings, rules, writer, self.sink, self.alerts_topic, metrics, self.alertmanager
        )
        self._streams: dict[str, Any] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self._register(by_device, by_customer)

    def _register(self, by_device: Any, by_customer: Any) -> None:
        app = self.app
        app.agent(self.interactions, name="ingest", concurrency=1)(self._ingest_agent)
        app.agent(by_device, name="identity", concurrency=1)(self._identity_agent)
        app.agent(by_customer, name="journeys", concurrency=1)(self._journeys_agent)
        app.timer(TICK_S, name="tick")(self._tick)
        app.timer(2.0, name="gauges")(self._update_gauges)
        app.timer(self.settings.alert_eval_ms / 1000, name="alerts")(self._evaluate_alerts)
        app.page("/metrics")(self._metrics_view())
        app.page("/health")(self._health_view())
        app.page("/ready")(self._ready_view())
        app.on_rebalance_complete.connect(self._on_rebalanced)
        app.before_stop = [self._flush_everything, self._commit]

    # ---- agents ---------------------------------------------------------------------------

    async def _ingest_agent(self, stream: Any) -> None:
        self._start_flusher()
        self._streams["ingest"] = stream
        async for batch in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            events = [] if self._stopping else self.offsets.take(batch)
            if not events:
                continue  # stopping: what was not acked is read again at the next start
            try:
                sends = await self.ingest.handle(events)
            except SinkClosedError:
                if self._stopping:
                    continue  # the sink closed under this batch; it is not acked
                raise
            self.sink.after_flush(partial(self._ack_all, stream, events, sends))
            await self.sink.maybe_flush()

    async def _identity_agent(self, stream: Any) -> None:
        self._start_flusher()
        self._streams["identity"] = stream
        ack = partial(self._ack, stream)
        async for batch in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            await self.identity.handle(self.offsets.take(batch))
            if self.identity.due():
                await self.identity.flush(ack)

    async def _journeys_agent(self, stream: Any) -> None:
        self._start_flusher()
        self._streams["journeys"] = stream
        ack = partial(self._ack, stream)
        async for batch in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            await self.journeys.handle(self.offsets.take(batch))
            if self.journeys.due() or self.sink.pending_rows >= self.settings.sink_batch_rows:
                await self.journeys.flush(ack)

    async def _ack(self, stream: Any, event: Any) -> None:
        """Everything the event caused is durable: its offset may be committed."""
        self.offsets.ack(event)
        await stream.ack(event)  # Faust's reference count only; it commits nothing for these topics

    async def _ack_all(self, stream: Any, events: Sequence[Any], sends: Sequence[Awaitable[Any]]) -> None:
        stored_at = time.time()  # this runs once the batch's rows are in ClickHouse
        for event in events:
            self.metrics.store_delay_seconds.observe(max(0.0, stored_at - event.message.timestamp))
        if sends:
            await asyncio.gather(*sends)  # forwarded, announced and rejected copies are on the broker
        for event in events:
            await self._ack(stream, event)

    # ---- background work ------------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Flush by age while streams are idle. Not a Faust timer: those stop as soon as the
        app starts stopping, and what is buffered then must still be written."""
        interval = min(0.25, self.settings.sink_flush_ms / 2000)
        while not self.sink.closed:
            await asyncio.sleep(interval)
            self.metrics.sink_pending_rows.set(self.sink.pending_rows)
            try:
                await self.sink.maybe_flush()
                for name, runner in (("identity", self.identity), ("journeys", self.journeys)):
                    stream = self._streams.get(name)
                    if stream is not None and runner.due():
                        await runner.flush(partial(self._ack, stream))
                if time.monotonic() - self._last_commit >= COMMIT_EVERY_S and not self._stopping:
                    await self._commit()
            except SinkClosedError:
                return
            except Exception:
                log.exception("background flush failed; it is retried")

    async def _evaluate_alerts(self) -> None:
        if self._stopping or self.app.rebalancing:
            return
        if self.alertmanager is not None:
            self.alertmanager.start()
        leading = TP(self.settings.topic_by_customer, 0) in self.app.consumer.assignment()
        try:
            await self.alerting.round(leading)
        except Exception:
            log.exception("alert evaluation failed; it is retried next round")

    async def _flush_everything(self) -> None:
        self._stopping = True
        if self.alertmanager is not None:
            await self.alertmanager.stop()
        # Faust stops the consumer and the agents only after this hook: a stage takes no
        # new batch once its last flush is done (closed), or it would write to a closed sink
        for name, runner in (("identity", self.identity), ("journeys", self.journeys)):
            stream = self._streams.get(name)
            if stream is not None:
                await runner.flush(partial(self._ack, stream))
            async with runner.lock:
                runner.closed = True
        await self.sink.close()

    def _producer(self) -> Any:
        return self.app.producer

    async def _commit(self) -> None:
        """Commit every input offset whose messages, and all before it, were acked."""
        self._last_commit = time.monotonic()
        holes = self.offsets.holes()
        if holes and holes != self._holes:
            # at-least-once holds (nothing past a hole is committed), but these messages were
            # skipped by the consumer in this generation: a restart delivers them again
            log.warning("commits wait for offsets not delivered in this generation: %s", holes)
        self._holes = holes
        offsets = self.offsets.to_commit()
        if not offsets:
            return
        consumer: Any = self.app.consumer
        if await consumer._commit(offsets):  # the driver's commit of these exact offsets
            self.offsets.committed(offsets)

    async def _flush_producer(self) -> None:
        await self.app.producer.flush()

    async def _tick(self) -> None:
        if self._stopping:
            return
        await self.ingest.tick(self._caught_up_partitions(), self.settings.quiet_after_ms / 1000)

    def _caught_up_partitions(self) -> list[int]:
        """Input partitions whose next offset to process is their end (high-water mark)."""
        consumer = self.app.consumer
        caught_up = []
        for tp in consumer.assignment():
            if tp.topic != self.settings.topic_interactions:
                continue
            highwater = consumer.highwater(tp)
            if highwater is not None and self._position(tp) >= highwater:
                caught_up.append(tp.partition)
        return caught_up

    def _position(self, tp: Any) -> int:
        """The next offset a stage will be handed (the committed one before the first)."""
        return self.offsets.position(tp) or 0

    async def _on_rebalanced(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Tables are recovered and Faust is about to seek every partition back to its
        committed offset: rebuild the stages from the tables, not from memory, and count
        deliveries afresh from the committed offsets."""
        # Faust resumes the stream partitions before it seeks them to the committed offsets,
        # while the consumer's flow is still on from reading the changelogs: what it fetches
        # in between is delivered, then refetched, and some of it is dropped on the floor
        # (never delivered in this generation). Stop the flow now; Faust resumes it right
        # after its seek, so the first record any stage sees is the committed one.
        self.app.consumer.stop_flow()
        generation = self.app.consumer_generation_id
        committed = await self._committed_offsets()
        async with self.identity.lock, self.journeys.lock:
            # one step: a stage never sees an event of a generation the book does not track
            self.identity.reset(generation)
            self.journeys.reset(generation)
            self.offsets.start(generation, committed)
        log.info("generation %s: input starts at %s", generation, {str(tp): o for tp, o in committed.items()})

    async def _committed_offsets(self) -> dict[Any, int]:
        """Per assigned input partition: the committed offset, or the log start if none."""
        consumer: Any = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in self.input_topics]
        if not tps:
            return {}
        committed = {
            (tp.topic, tp.partition): offset
            for tp, offset in (await consumer.seek_to_committed()).items()  # Faust seeks again next
            if offset is not None and offset >= 0
        }
        missing = [tp for tp in tps if (tp.topic, tp.partition) not in committed]
        earliest = await consumer.earliest_offsets(*missing) if missing else {}
        return {tp: committed.get((tp.topic, tp.partition), earliest.get(tp, 0)) for tp in tps}

    async def _update_gauges(self) -> None:
        consumer = self.app.consumer
        stage_inputs = (
            self.settings.topic_interactions,
            self.settings.topic_by_device,
            self.settings.topic_by_customer,
        )
        for tp in consumer.assignment():
            if tp.topic not in stage_inputs:
                continue  # changelogs are read only during recovery
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            processed = self._position(tp)
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - processed))
        for partition, engine in list(self.journeys.engines.items()):
            self.metrics.state_customers.labels(str(partition)).set(engine.customers_in_memory())
            self.metrics.open_journeys.labels(str(partition)).set(engine.open_journeys())
            self.metrics.state_bytes.labels(str(partition)).set(self.journeys.state_bytes.get(partition, 0))
            self._stage_gauges("journeys", partition, engine.timeline)
            self.metrics.stage_late.labels("journeys", str(partition)).set(engine.late_items)
        for partition, stage in list(self.identity.stages.items()):
            self._stage_gauges("identity", partition, stage.timeline)
            self.metrics.stage_late.labels("identity", str(partition)).set(stage.late_items)
        self.metrics.ready.set(1 if self.is_ready() else 0)

    def _stage_gauges(self, stage: str, partition: int, timeline: Any) -> None:
        if timeline.watermark > NEVER:
            self.metrics.watermark.labels(stage, str(partition)).set(timeline.watermark / 1000)
        self.metrics.buffered.labels(stage, str(partition)).set(len(timeline))

    def is_ready(self) -> bool:
        app = self.app
        return bool(app.started) and not app.rebalancing and not self.sink.failing

    # ---- HTTP -----------------------------------------------------------------------------

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


def _make_app(settings: Settings) -> JourneyApp:
    return JourneyApp(
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
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_ms / 3000),
        consumer_group_instance_id=settings.group_instance_id or None,
        stream_wait_empty=False,  # messages held in reorder buffers are acked later, by design
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
    )
