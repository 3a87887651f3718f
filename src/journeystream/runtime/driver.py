"""The stream driver: one aiokafka consumer for the three stage inputs, read a batch at a
time (`getmany`), each partition's records handed to its stage processor, a checkpoint
every JOURNEYSTREAM_SINK_FLUSH_MS (or sooner when the sink is full).

Partitions come and go with the consumer group's rebalances. Before partitions are taken
away, everything processed is checkpointed; when partitions arrive, their stores are
restored from the changelogs and fresh processors built from them, by the run loop rather
than the rebalance listener (see `assigned`). Reading then starts at
the committed offset of each partition, or at the log start when there is none (aiokafka
resets an assigned partition with `auto_offset_reset=earliest`): exactly what the
checkpoint made safe.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError

from journeystream.config import Settings
from journeystream.core.alerts import Rule
from journeystream.core.timeline import NEVER
from journeystream.kafka_options import kafka_options
from journeystream.metrics import Metrics
from journeystream.runtime.alerting import AlertRunner
from journeystream.runtime.alertmanager import AlertmanagerClient
from journeystream.runtime.assignment import Assignment
from journeystream.runtime.changelog import restore
from journeystream.runtime.checkpoint import Checkpoint
from journeystream.runtime.erasures import Eraser, worker_name
from journeystream.runtime.producer import BATCH_BYTES, Producer
from journeystream.runtime.topics import changelog_topic
from journeystream.sinks.clickhouse import StoreAccess
from journeystream.sinks.rows import ALL_TABLES, now_ms, retention_days
from journeystream.sinks.sink import BatchingSink
from journeystream.stages.effects import Effects, OutputRecord

log = logging.getLogger(__name__)

MAX_RECORDS = 10_000  # per getmany, over every assigned partition
FETCH_WAIT_MS = 100
TICK_S = 1.0
STEP_S = 0.5
"""The longest a journey engine works on one batch before the loop gets a turn (heartbeats:
aiokafka sends them from a task on the same loop, and a session times out in 10 s)."""
BREATHE_S = 0.02  # the loop's own time after each such step


class AlertsTopic:
    """Where the alert evaluator sends its notifications (through the checkpoint's producer)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, key: bytes, value: bytes) -> None:
        await self._producer.send([OutputRecord(self._topic, key, value)])


def checkpoint_due(
    settings: Settings, elapsed_ms: float, backlogged: bool, pending_rows: int, changed_customers: int
) -> bool:
    """Every SINK_FLUSH_MS when caught up (latency); every CHECKPOINT_BACKLOG_MS while
    reading a backlog (throughput: a customer touched many times is written once); sooner
    when the rows waiting or the customers changed reach their bound (memory: a changed
    customer stays a live object until its state is written, whatever the engine's bound on
    live customers)."""
    interval_ms = settings.sink_flush_ms
    if backlogged:
        interval_ms = max(interval_ms, settings.checkpoint_backlog_ms)
    rows = settings.sink_batch_rows * interval_ms // settings.sink_flush_ms
    many_changed = changed_customers >= settings.checkpoint_customers
    return elapsed_ms >= interval_ms or pending_rows >= rows or many_changed


def member_client_id(process: int) -> str:
    """The group consumer's client id, for a worker's process number (0: the worker). The
    broker names a member `client_id-<uuid>` and aiokafka's round-robin assignor deals the
    partitions to the members in that order. With aiokafka's default client id the order,
    and so each process's partitions, was random at every start: a RocksDB store kept on disk
    then belonged to the other process half the time and was rebuilt from its whole changelog
    (a process keeps no copy of a partition it does not own). With the host and the process
    number first, a worker restarted on the same host gets its partitions back."""
    return f"journeystream-{socket.gethostname()}-{process}"


class StreamDriver:
    def __init__(
        self,
        settings: Settings,
        writer: StoreAccess,
        metrics: Metrics,
        rules: Sequence[Rule] = (),
        client_options: dict[str, Any] | None = None,
        process: int = 0,
    ) -> None:
        self.process = process  # 0: the worker; N: its helper N
        self.settings = settings
        self.metrics = metrics
        self.writer = writer
        self.client_options = client_options if client_options is not None else kafka_options(settings)
        self.sink = BatchingSink(
            writer,
            ALL_TABLES,
            max_rows=settings.sink_batch_rows,
            max_age_s=settings.sink_flush_ms / 1000,
            max_backoff_s=settings.sink_max_backoff_ms / 1000,
            observer=metrics,
            retention_days=retention_days(settings.events_ttl_days, settings.facts_ttl_days),
        )
        self.assignment = Assignment.empty(settings, metrics)
        self.topology = self.assignment.topology
        self.effects = Effects()
        self.lock = asyncio.Lock()  # one batch, checkpoint or rebalance step at a time
        self.stopping = False
        self.consuming = False
        self.rebalancing = True  # until the group gave this worker its first assignment, built
        self.to_build: set[TopicPartition] = set()  # assigned, stores not restored yet
        self.busy: set[TopicPartition] = set()  # journey partitions with records still to process
        self._step_ends = 0.0
        self.assignment.keep_going = lambda: time.monotonic() < self._step_ends
        self.backlogged = False  # the last fetch was (about) full: there is a backlog
        self.last_message_at: dict[int, float] = {}
        self._last_tick = 0.0
        self.rules = tuple(rules)
        self.alertmanager = (
            AlertmanagerClient.from_settings(settings, metrics)
            if settings.alertmanager_url and rules
            else None
        )
        self._kafka_producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: Producer | None = None
        self._checkpoint: Checkpoint | None = None
        self.alerting: AlertRunner | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._kafka_producer = AIOKafkaProducer(
            **self.client_options,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=BATCH_BYTES,
            max_request_size=4 * BATCH_BYTES,
            compression_type="snappy",  # cheap on CPU (aiokafka compresses lz4 at level 9)
        )
        await self._kafka_producer.start()
        self._producer = producer = Producer(self._kafka_producer)
        self._consumer = consumer = AIOKafkaConsumer(
            **self.client_options,
            client_id=member_client_id(self.process),
            group_id=settings.app_id,
            group_instance_id=settings.group_instance_id or None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(3000, settings.kafka_session_timeout_ms // 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        topology = self.topology
        topics = [topology.interactions, topology.control, topology.by_device, topology.by_customer]
        consumer.subscribe(topics, listener=_Rebalance(self))
        await consumer.start()
        self._checkpoint = Checkpoint(
            self.sink,
            producer,
            lambda name: changelog_topic(settings, name),
            consumer.commit,
            self.metrics.on_checkpoint,
            Eraser(
                self.writer,
                producer,
                topology.control,
                worker_name(settings.app_id),
                self.metrics.on_erasure_part,
            ).carry_out,
        )
        self.alerting = AlertRunner(
            settings,
            self.rules,
            self.writer,
            self.sink,
            AlertsTopic(producer, settings.topic_alerts),
            self.metrics,
            self.alertmanager,
        )
        if self.alertmanager is not None:
            self.alertmanager.start()

    async def finish(self) -> None:
        """Stop handling batches, rebalances and alert rounds, and checkpoint what was
        processed; the clients and the sink stay open (stop() closes them)."""
        if self.stopping:
            return
        self.stopping = True
        if self.alertmanager is not None:
            await self.alertmanager.stop()
        async with self.lock:
            if self._checkpoint is not None:
                try:
                    await self._checkpoint.run(self.assignment, self.effects)
                except Exception:
                    log.exception("the last checkpoint failed; what it held is read again at the next start")

    async def stop(self) -> None:
        """Checkpoint what was processed, leave the group, close the clients and the sink."""
        await self.finish()
        # Outside the lock: leaving the group finishes a rebalance under way, whose listener
        # returns at once now that the driver is stopping.
        if self._consumer is not None:
            await self._consumer.stop()
        if self._kafka_producer is not None:
            await self._kafka_producer.stop()
        await self.sink.close()
        for store in self.assignment.stores.values():
            store.backend.close()

    async def run(self) -> None:
        """The hot path: until stopped, a batch, its effects, and a checkpoint when due."""
        consumer = self._consumer
        assert consumer is not None and self._checkpoint is not None
        self.consuming = True
        while not self.stopping:
            if self.busy:
                # time for the other tasks between two steps: a heartbeat is several hops
                # (request, reader task, response), one per loop turn; getmany without a
                # wait returns what it holds without suspending at all
                await asyncio.sleep(BREATHE_S)
            try:
                wait_ms = 0 if self.busy else FETCH_WAIT_MS
                batch = await consumer.getmany(timeout_ms=wait_ms, max_records=MAX_RECORDS)
            except ConsumerStoppedError:
                return  # stopping: the consumer was closed under this call
            self.backlogged = sum(len(records) for records in batch.values()) >= MAX_RECORDS // 2
            async with self.lock:
                if self.stopping:
                    return  # not processed, not committed: read again at the next start
                if self.to_build:
                    await self._build_assigned()  # before any record of theirs is handled
                self._step_ends = time.monotonic() + STEP_S
                if self.busy:
                    await self._resume_busy()
                if batch:
                    await self._handle(batch)
                await self._tick()
                if self._checkpoint_due():
                    await self._checkpoint.start(self.assignment, self.effects)

    async def _handle(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._checkpoint is not None
        assignment, effects, topology = self.assignment, self.effects, self.topology
        stamp = now_ms()
        for tp, records in batch.items():
            if tp not in assignment.partitions or not records:
                continue  # fetched before the partition was revoked
            partition = tp.partition
            if tp.topic == topology.interactions:
                self.last_message_at[partition] = time.monotonic()
                assignment.produced_at.extend(record.timestamp for record in records)
                assignment.ingest.process(partition, records, stamp, effects)
            elif tp.topic == topology.by_device:
                assignment.identity[partition].process(records, effects)
            elif tp.topic == topology.by_customer:
                journeys = assignment.journeys[partition]
                journeys.process(records, effects)
                assignment.positions[tp] = journeys.next_offset
                if journeys.busy:
                    self._pause(tp)
                continue
            else:
                assignment.control.process(records, effects)
            assignment.positions[tp] = records[-1].offset + 1
        await self._checkpoint.emit(effects)

    def _pause(self, tp: TopicPartition) -> None:
        """The journey engine stopped short (a watermark made many deadlines due): no more of
        the partition's records until it is done; the loop turns meanwhile."""
        assert self._consumer is not None
        self.busy.add(tp)
        self._consumer.pause(tp)

    async def _resume_busy(self) -> None:
        assert self._consumer is not None and self._checkpoint is not None
        assignment = self.assignment
        for tp in sorted(self.busy):
            journeys = assignment.journeys[tp.partition]
            done = journeys.resume(self.effects)
            assignment.positions[tp] = journeys.next_offset
            if done:
                self.busy.discard(tp)
                self._consumer.resume(tp)
        await self._checkpoint.emit(self.effects)

    def _checkpoint_due(self) -> bool:
        assert self._checkpoint is not None
        return checkpoint_due(
            self.settings,
            elapsed_ms=(time.monotonic() - self._checkpoint.last) * 1000,
            backlogged=self.backlogged,
            pending_rows=self.sink.pending_rows,
            changed_customers=self.assignment.changed_customers(),
        )

    async def _tick(self) -> None:
        """Live mode: the watermark of a caught-up, quiet input partition follows the wall
        clock (a partition with a backlog is never quiet, or its backlog would arrive late)."""
        now = time.monotonic()
        if now - self._last_tick < TICK_S:
            return
        self._last_tick = now
        quiet_after_s = self.settings.quiet_after_ms / 1000
        for tp in list(self.assignment.partitions):
            if tp.topic != self.topology.interactions:
                continue
            if now - self.last_message_at.get(tp.partition, 0.0) < quiet_after_s:
                continue
            if await self._caught_up(tp):
                self.assignment.ingest.tick(tp.partition, now_ms(), self.effects)
        assert self._checkpoint is not None
        await self._checkpoint.emit(self.effects)

    async def _caught_up(self, tp: TopicPartition) -> bool:
        assert self._consumer is not None
        highwater = self._consumer.highwater(tp)
        if highwater is None:
            return False
        return await self.position(tp) >= int(highwater)

    async def position(self, tp: TopicPartition) -> int:
        """The next offset this worker processes in the partition."""
        known = self.assignment.positions.get(tp)
        if known is not None:
            return known
        assert self._consumer is not None
        return int(await self._consumer.position(tp))

    # ---- rebalances -----------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        self.rebalancing = True
        if self.stopping:
            return  # the last checkpoint is done or under way; nothing is read any more
        async with self.lock:
            if self._checkpoint is not None and not self.stopping and self.assignment.partitions:
                try:
                    await self._checkpoint.run(self.assignment, self.effects)
                except Exception:
                    log.exception("checkpoint before a rebalance failed; the new owner reads again")
            for tp in revoked:
                self.assignment.drop(tp)
                self.metrics.forget_partition(tp.topic, tp.partition, self._stage_of(tp))
            self.to_build -= revoked
            self.busy -= revoked  # what they still held is read again by their next owner
            self.effects.take()  # effects of dropped partitions (none after a checkpoint)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """The local state of partitions not assigned any more is deleted (see
        Assignment.keep_only); the assigned ones are only noted. aiokafka sends no heartbeat
        while this listener runs (its heartbeat task starts again once the join is
        complete), so restoring and building here a partition with many stored customers
        outlived the session timeout, the group dropped the worker, and the rejoin built it
        all again, over and over (1 000 000 stored customers: 11 s of building against a
        10 s session). The run loop builds them before it handles their first records,
        heartbeats going on meanwhile."""
        if self.stopping:
            return
        async with self.lock:
            if self._checkpoint is not None:
                try:  # a checkpoint started since the revocation writes no store deleted below
                    await self._checkpoint.wait()
                except Exception:
                    log.exception("checkpoint before a rebalance failed; the new owner reads again")
            deleted = self.assignment.keep_only(assigned)
        if deleted:
            log.info("deleted the local state of partitions now elsewhere: %s", ", ".join(deleted))
        self.to_build |= assigned
        if not self.to_build:  # nothing for this member (more members than partitions): idle, not stuck
            self.rebalancing = False

    async def _build_assigned(self) -> None:
        """Restore the stores of the assigned partitions (the changelog read yields to the
        loop between batches), then build their processors in a thread: indexing every
        stored customer is seconds of Python, and the loop must keep the group's heartbeats
        and the endpoints going meanwhile. Called under the lock: no batch, checkpoint or
        rebalance step touches the assignment in between."""
        started = time.monotonic()
        assigned = sorted(self.to_build)
        groups = [self.assignment.stores_of(tp) for tp in assigned]
        assert self._producer is not None
        changelog = partial(changelog_topic, self.settings)
        await restore(groups, changelog, self.client_options, self._producer.send_tracked)
        await asyncio.to_thread(self._build, assigned)
        self.to_build.difference_update(assigned)
        if self._checkpoint is not None:
            self._checkpoint.last = time.monotonic()  # the interval runs from the work's start
        self.rebalancing = bool(self.to_build)
        log.info(
            "assigned %s in %.2fs",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in assigned),
            time.monotonic() - started,
        )

    def _build(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.assignment.build(tp)

    # ---- gauges and alerts ----------------------------------------------------------------

    async def update_gauges(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        metrics, assignment = self.metrics, self.assignment
        for tp in list(assignment.partitions):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - await self.position(tp))
                if tp in assignment.partitions:  # not revoked meanwhile (its gauges are gone)
                    metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        for partition, journeys in list(assignment.journeys.items()):
            label = str(partition)
            engine = journeys.engine
            metrics.state_customers.labels(label).set(engine.customers_in_memory())
            metrics.open_journeys.labels(label).set(engine.open_journeys())
            store = assignment.stores.get(("customers", partition))
            if store is not None:
                metrics.state_bytes.labels(label).set(store.backend.size_bytes())
            metrics.kpi_cells.labels(label).set(len(journeys.kpis))
            self._stage_gauges("journeys", partition, engine.timeline, journeys.late_items)
        for partition, identity in list(assignment.identity.items()):
            self._stage_gauges("identity", partition, identity.stage.timeline, identity.late_items)
        metrics.sink_pending_rows.set(self.sink.pending_rows)
        metrics.ready.set(1 if self.is_ready() else 0)

    def _stage_of(self, tp: TopicPartition) -> str | None:
        """The stage label of a keyed stage's partition in the gauges."""
        if tp.topic == self.topology.by_customer:
            return "journeys"
        return "identity" if tp.topic == self.topology.by_device else None

    def _stage_gauges(self, stage: str, partition: int, timeline: Any, late: int) -> None:
        label = str(partition)
        if timeline.watermark > NEVER:
            self.metrics.watermark.labels(stage, label).set(timeline.watermark / 1000)
        self.metrics.buffered.labels(stage, label).set(len(timeline))
        self.metrics.stage_late.labels(stage, label).set(late)

    async def evaluate_alerts(self) -> None:
        if self.stopping or self.rebalancing or self.alerting is None:
            return
        leading = TopicPartition(self.topology.by_customer, 0) in self.assignment.partitions
        try:
            await self.alerting.round(leading)
        except Exception:
            log.exception("alert evaluation failed; it is retried next round")

    def is_ready(self) -> bool:
        return self.consuming and not self.rebalancing and not self.stopping and not self.sink.failing


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, driver: StreamDriver) -> None:
        self.driver = driver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.driver.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.driver.assigned(set(assigned))
