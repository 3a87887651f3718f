"""The three stages as Faust-facing runners. Each owns per-partition core objects, turns
Kafka messages into core calls, sends what the core produced, and acks input only once
its effects are durable (outputs first, then state)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from journeystream.config import Settings
from journeystream.core.config import RulesConfig
from journeystream.core.decode import Rejection, decode
from journeystream.core.events import Event
from journeystream.core.facts import AppliedEvent, Fact, Irritant, JourneyClosed, JourneyRecord
from journeystream.core.identity import IdentityStage, device_key, encode_links, needs_identity
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload, MergeRequest
from journeystream.core.timeline import NEVER, SourceWatermark, Timeline
from journeystream.metrics import Metrics
from journeystream.runtime.codec import Watermark, decode_internal, encode, encode_device_event
from journeystream.runtime.kpicells import KpiCells
from journeystream.runtime.partitions import AckBook, partition_of, write_table
from journeystream.sinks.rows import (
    INTERACTION_EVENTS,
    REJECTED_EVENTS,
    Coordinates,
    fact_row,
    interaction_row,
    irritant_json,
    journey_json,
    now_ms,
    rejected_row,
)
from journeystream.sinks.sink import BatchingSink

log = logging.getLogger(__name__)

Send = Callable[..., Awaitable[Any]]


def source_names(prefix: str, partitions: int) -> list[str]:
    return [f"{prefix}{p}" for p in range(partitions)]


class TopicSender:
    """Sends bytes to one topic through the app's producer (default partitioner: murmur2 of
    the key, as Kafka's Java clients). `send` returns once the record is queued, with the
    future of its acknowledgement."""

    def __init__(self, producer: Callable[[], Any], name: str) -> None:
        self._producer = producer
        self.name = name

    async def send(
        self,
        key: bytes | None = None,
        value: bytes = b"",
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        return await self._producer().send(self.name, key, value, partition, None, headers)  # type: ignore[no-any-return]


class Topics:
    """The topics the runners send to."""

    def __init__(
        self,
        rejected: TopicSender,
        by_device: TopicSender,
        by_customer: TopicSender,
        journeys: TopicSender,
        irritants: TopicSender,
    ) -> None:
        self.rejected = rejected
        self.by_device = by_device
        self.by_customer = by_customer
        self.journeys = journeys
        self.irritants = irritants


class IngestRunner:
    """Stage A: decode and validate, store raw rows, reject what fails the contract, route
    valid events by device (to resolve identity) or straight by customer, and announce each
    input partition's watermark downstream."""

    def __init__(self, settings: Settings, topics: Topics, sink: BatchingSink, metrics: Metrics) -> None:
        self.settings = settings
        self.topics = topics
        self.sink = sink
        self.metrics = metrics
        self.watermarks: dict[int, SourceWatermark] = {}
        self.last_message_at: dict[int, float] = {}
        self.lateness_ms = RulesConfig().allowed_lateness_ms

    async def handle(self, events: Sequence[Any]) -> list[Awaitable[Any]]:
        """Process a batch; returns the pending sends the batch's acks must wait for."""
        sends: list[Awaitable[Any]] = []
        advanced: set[int] = set()
        for event in events:
            message = event.message
            partition = message.partition
            self.last_message_at[partition] = time.monotonic()
            sent, moved = await self._one(message)
            sends.extend(sent)
            if moved:
                advanced.add(partition)
        for partition in sorted(advanced):
            sends.extend(await self._announce(partition))
        return sends

    async def _one(self, message: Any) -> tuple[list[Awaitable[Any]], bool]:
        raw: bytes = message.value if message.value is not None else b""
        where = Coordinates(
            message.topic, message.partition, message.offset, int(message.timestamp * 1000), message.key
        )
        self.metrics.events_consumed.inc()
        result = decode(raw)
        if isinstance(result, Rejection):
            self.metrics.events_rejected.labels(result.code).inc()
            self.sink.add(
                REJECTED_EVENTS.name, rejected_row(raw, result.code, result.message, where, now_ms())
            )
            headers = _rejection_headers(result, where)
            return [await self.topics.rejected.send(key=message.key, value=raw, headers=headers)], False
        self.metrics.events_valid.inc()
        self.sink.add(INTERACTION_EVENTS.name, interaction_row(result, where, now_ms()))
        watermark = self._watermark(message.partition)
        if watermark.is_late(result.occurred_at):
            self.metrics.events_late.inc()
        moved = watermark.see(result.occurred_at)
        return [await self._route(result)], moved

    async def _route(self, event: Event) -> Awaitable[Any]:
        if needs_identity(event):
            key = device_key(event).encode()
            return await self.topics.by_device.send(key=key, value=encode_device_event(event))
        customer = str(event.customer_id)
        value = encode(KeyedEvent(customer, event))
        return await self.topics.by_customer.send(key=customer.encode(), value=value)

    def _watermark(self, partition: int) -> SourceWatermark:
        watermark = self.watermarks.get(partition)
        if watermark is None:
            watermark = self.watermarks[partition] = SourceWatermark(self.lateness_ms)
        return watermark

    async def _announce(self, partition: int) -> list[Awaitable[Any]]:
        """Tell every downstream partition how far input partition `partition` has got."""
        value = encode(Watermark(f"A{partition}", self._watermark(partition).watermark))
        sends = []
        for topic in (self.topics.by_device, self.topics.by_customer):
            for downstream in range(self.settings.partitions):
                sends.append(await topic.send(key=None, value=value, partition=downstream))
        return sends

    async def tick(self, caught_up: Sequence[int], quiet_after_s: float) -> None:
        """Live mode: the watermark of a quiet input partition follows the wall clock. Quiet
        means caught up with the partition's end and no message for `quiet_after_s`; a
        partition with a backlog is never quiet, or its backlog would all arrive late."""
        now = time.monotonic()
        for partition in caught_up:
            if now - self.last_message_at.get(partition, 0.0) < quiet_after_s:
                continue
            if self._watermark(partition).quiet(now_ms()):
                await self._announce(partition)


class _KeyedRunner:
    """What stages B and C share: per-partition core objects, an ack book per partition,
    and a flush that makes outputs durable before state, and state before acks."""

    def __init__(self, settings: Settings, table: Any, producer_flush: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.table = table
        self._producer_flush = producer_flush
        self.books: dict[int, AckBook] = {}
        self.context_events: dict[int, Any] = {}
        self.sends: list[Awaitable[Any]] = []
        self.lock = asyncio.Lock()
        self.last_flush = time.monotonic()
        self.generation: int | None = None  # set once the first rebalance has completed
        self.closed = False  # the worker is stopping: messages are left for the next start

    def reset(self, generation: int) -> None:
        """After a rebalance: forget in-memory state; the table is the truth, and every
        unacked message will be delivered again from the committed offsets."""
        self.books.clear()
        self.context_events.clear()
        self.sends.clear()
        self._reset_stages()
        self.generation = generation

    def current(self, events: Sequence[Any]) -> list[Any]:
        """The events of the current consumer generation. Older ones were fetched before a
        rebalance and will be delivered again after the seek: they are neither processed
        nor acked (the stage state they would apply to may be gone)."""
        current = [event for event in events if event.message.generation_id == self.generation]
        if len(current) != len(events):
            log.warning(
                "%s: dropped %d events of generation %s (now %s)",
                type(self).__name__,
                len(events) - len(current),
                {e.message.generation_id for e in events},
                self.generation,
            )
        return current

    def _reset_stages(self) -> None:
        raise NotImplementedError

    async def handle(self, events: Sequence[Any]) -> None:
        """Apply a batch to the partitions' stages, then send what they produced."""
        async with self.lock:
            if self.closed:
                return
            touched: set[int] = set()
            for event in self.current(events):
                partition = event.message.partition
                item = self._dispatch(partition, decode_internal(event.message.value))
                self._book(partition).processed(event, item)
                self.context_events[partition] = event
                touched.add(partition)
            for partition in sorted(touched):
                await self._send_outputs(partition)

    def _dispatch(self, partition: int, message: Any) -> Any:
        """Hand one internal message to the partition's stage; returns the buffered item
        (acked only once applied) or None."""
        raise NotImplementedError

    async def _send_outputs(self, partition: int) -> None:
        raise NotImplementedError

    def _book(self, partition: int) -> AckBook:
        book = self.books.get(partition)
        if book is None:
            book = self.books[partition] = AckBook()
        return book

    def due(self) -> bool:
        return time.monotonic() - self.last_flush >= self.settings.sink_flush_ms / 1000

    async def flush(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        async with self.lock:
            await self._flush_outputs()
            await self._write_state()
            await self._producer_flush()  # the changelog writes are on the broker
            for partition, book in self.books.items():
                for event in book.take_ackable(self._still_buffered(partition)):
                    await ack(event)
            self.last_flush = time.monotonic()

    async def _flush_outputs(self) -> None:
        sends, self.sends = self.sends, []
        if sends:
            await asyncio.gather(*sends)

    async def _write_state(self) -> None:
        for partition, changes in self._state_changes().items():
            if changes:
                write_table(self.table, self.context_events[partition], changes)

    def _state_changes(self) -> dict[int, dict[bytes, bytes | None]]:
        raise NotImplementedError

    def _still_buffered(self, partition: int) -> list[Any]:
        """Items of the partition still waiting in its reorder buffer (not to be acked)."""
        timeline = self._timeline(partition)
        return timeline.pending() if timeline is not None else []

    def _timeline(self, partition: int) -> Timeline[Any] | None:
        raise NotImplementedError


class IdentityRunner(_KeyedRunner):
    """Stage B: customer-key resolution for device-keyed events (table: anonymous id -> customer)."""

    def __init__(
        self, settings: Settings, table: Any, producer_flush: Callable[[], Awaitable[None]], topics: Topics
    ) -> None:
        super().__init__(settings, table, producer_flush)
        self.topics = topics
        self.stages: dict[int, IdentityStage] = {}
        self.announced: dict[int, int] = {}

    def _reset_stages(self) -> None:
        self.stages.clear()
        self.announced.clear()

    def _stage(self, partition: int) -> IdentityStage:
        stage = self.stages.get(partition)
        if stage is None:
            stage = self.stages[partition] = IdentityStage(
                source_names("A", self.settings.partitions), load_link=self._load_link
            )
        return stage

    def _load_link(self, anonymous_id: str) -> bytes | None:
        value = self.table.get(anonymous_id.encode())
        return None if value is None else bytes(value)

    def _dispatch(self, partition: int, message: Any) -> Any:
        stage = self._stage(partition)
        if isinstance(message, Watermark):
            stage.observe(message.source, message.watermark)
            return None
        stage.push(message)
        return message

    async def _send_outputs(self, partition: int) -> None:
        stage = self.stages[partition]
        for item in stage.drain():
            self.sends.append(await self.topics.by_customer.send(key=item.key.encode(), value=encode(item)))
        watermark = stage.timeline.watermark
        if watermark > self.announced.get(partition, NEVER):
            self.announced[partition] = watermark
            value = encode(Watermark(f"B{partition}", watermark))
            for downstream in range(self.settings.partitions):
                self.sends.append(
                    await self.topics.by_customer.send(key=None, value=value, partition=downstream)
                )

    def _state_changes(self) -> dict[int, dict[bytes, bytes | None]]:
        return {
            partition: {anon.encode(): encode_links(links) for anon, links in stage.dirty_links().items()}
            for partition, stage in self.stages.items()
        }

    def _timeline(self, partition: int) -> Timeline[Any] | None:
        stage = self.stages.get(partition)
        return stage.timeline if stage is not None else None


class JourneyRunner(_KeyedRunner):
    """Stage C: the journey engine per partition (table: customer key -> customer state)."""

    def __init__(
        self,
        settings: Settings,
        table: Any,
        producer_flush: Callable[[], Awaitable[None]],
        topics: Topics,
        sink: BatchingSink,
        metrics: Metrics,
        rules: RulesConfig,
        kpi_table: Any,
    ) -> None:
        super().__init__(settings, table, producer_flush)
        self.topics = topics
        self.sink = sink
        self.metrics = metrics
        self.rules = rules
        self.engines: dict[int, JourneyEngine] = {}
        self.kpis = KpiCells(kpi_table, settings.kpi_horizon_ms, metrics)
        self.state_bytes: dict[int, int] = {}  # serialized customer states per partition
        self._kpi_changes: dict[int, dict[bytes, bytes | None]] = {}
        self.on_facts: list[Callable[[list[Fact]], None]] = []

    def _reset_stages(self) -> None:
        self.engines.clear()
        self.state_bytes.clear()
        self.kpis.reset()
        self._kpi_changes.clear()

    def _engine(self, partition: int) -> JourneyEngine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = self._restore(partition)
        return engine

    def _restore(self, partition: int) -> JourneyEngine:
        started = time.monotonic()
        engine = JourneyEngine(
            self.rules,
            source_names("A", self.settings.partitions) + source_names("B", self.settings.partitions),
            load=self._load_state,
        )
        restored = size = 0
        for key, value in list(self.table.items()):
            if partition_of(bytes(key), self.settings.partitions) == partition:
                engine.restore(bytes(key).decode(), bytes(value))
                restored += 1
                size += len(value)
        self.state_bytes[partition] = size
        log.info(
            "partition %d: %d customers restored in %.2fs", partition, restored, time.monotonic() - started
        )
        return engine

    def _load_state(self, key: str) -> bytes | None:
        value = self.table.get(key.encode())
        return None if value is None else bytes(value)

    def _dispatch(self, partition: int, message: Any) -> Any:
        engine = self._engine(partition)
        if isinstance(message, Watermark):
            engine.observe(message.source, message.watermark)
        elif isinstance(message, MergePayload):
            log.debug(
                "merge payload %s -> %s (%s) at partition %s",
                message.source,
                message.key,
                "with state" if message.state else "empty",
                partition,
            )
            engine.receive_payload(message)
        elif isinstance(message, KeyedEvent | MergeRequest):
            if isinstance(message, MergeRequest) or message.merge_from:
                log.debug("%s at partition %s", message, partition)
            engine.push(message)
            return message
        return None

    async def _send_outputs(self, partition: int) -> None:
        output = self.engines[partition].drain()
        for message in output.messages:
            self.sends.append(
                await self.topics.by_customer.send(key=message.key.encode(), value=encode(message))
            )
        stamp = now_ms()
        for fact in output.facts:
            row = fact_row(fact, stamp)
            if row is not None:
                self.sink.add(*row)
            if isinstance(fact, JourneyRecord):
                self.sends.append(
                    await self.topics.journeys.send(key=fact.journey_id.encode(), value=journey_json(fact))
                )
            elif isinstance(fact, Irritant):
                self.metrics.irritants.labels(fact.kind).inc()
                self.sends.append(
                    await self.topics.irritants.send(key=fact.irritant_id.encode(), value=irritant_json(fact))
                )
            elif isinstance(fact, AppliedEvent):
                self.metrics.events_applied.inc()
            elif isinstance(fact, JourneyClosed):
                self.metrics.journeys_closed.labels(fact.status).inc()
        self.kpis.add(partition, output.facts, output.origins)
        for callback in self.on_facts:
            callback(output.facts)

    async def _flush_outputs(self) -> None:
        stamp = now_ms()
        for partition, engine in self.engines.items():
            changes = self.kpis.collect(partition, engine.complete_before(), self.sink, stamp)
            self._kpi_changes.setdefault(partition, {}).update(changes)
        await super()._flush_outputs()
        await self.sink.flush()

    async def _write_state(self) -> None:
        # KPI cells reach the broker before the customer states: never a state without the
        # cells that counted its facts (the reverse is undone by the cells' fact sequences)
        kpi_changes, self._kpi_changes = self._kpi_changes, {}
        written = False
        for partition, cells in kpi_changes.items():
            if cells:
                write_table(self.kpis.table, self.context_events[partition], cells)
                written = True
        if written:
            await self._producer_flush()
        await super()._write_state()

    def _count_bytes(self, partition: int, changes: dict[bytes, bytes | None]) -> None:
        """Keep the partition's serialized state size current (the state_bytes gauge)."""
        delta = 0
        for key, value in changes.items():
            old = self.table.get(key)
            delta += (len(value) if value is not None else 0) - (len(old) if old is not None else 0)
        self.state_bytes[partition] = self.state_bytes.get(partition, 0) + delta

    def _state_changes(self) -> dict[int, dict[bytes, bytes | None]]:
        changes = {
            partition: {key.encode(): value for key, value in engine.dirty_states().items()}
            for partition, engine in self.engines.items()
        }
        for partition, partition_changes in changes.items():
            self._count_bytes(partition, partition_changes)  # before they replace the stored values
        return changes

    def _timeline(self, partition: int) -> Timeline[Any] | None:
        engine = self.engines.get(partition)
        return engine.timeline if engine is not None else None


def _rejection_headers(rejection: Rejection, where: Coordinates) -> list[tuple[str, bytes]]:
    return [
        ("journeystream.reason_code", rejection.code.encode()),
        ("journeystream.reason", rejection.message.encode("utf-8", "replace")),
        ("journeystream.source", f"{where.topic}/{where.partition}/{where.offset}".encode()),
    ]
