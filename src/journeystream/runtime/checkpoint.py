"""The checkpoint: the one place that decides the order in which what the stages did
becomes durable, and commits input offsets only for what is.

    1. the journey stage's facts and KPI cells since the last checkpoint become rows and
       records (collect)
    2. ClickHouse rows (idempotent: deterministic ids, ReplacingMergeTree, dedup tokens)
    3. output and internal records, acknowledged by the broker
    4. state changes to the changelogs, group by group (KPI cells before customer states),
       each acknowledged before the next, each store's changes ended by a marker record with
       the checkpoint's number, written to every store of a partition that changed (a
       restore applies a checkpoint's changes only with their marker, and a partition's
       stores only up to the last checkpoint they all finished); then to the local stores
    5. erasures carried out by the stages: their ClickHouse rows deleted (after the rows
       written in step 2), their parts reported on the control topic
    6. input offsets: per partition, the oldest record whose items still wait in a reorder
       buffer, else the next offset to read

A crash anywhere in between leaves offsets behind the durable effects: the records after
them are read again, and the stages absorb that (event-id dedup, idempotent merges and rows).
Why this and not Kafka transactions: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from journeystream.runtime.assignment import Assignment, StoreWrite
from journeystream.runtime.changelog import CHECKPOINT_MARKER, marker_value
from journeystream.runtime.producer import Producer
from journeystream.runtime.store import PartitionStore, StateChanges
from journeystream.sinks.rows import RAW_TABLES, now_ms
from journeystream.sinks.sink import BatchingSink
from journeystream.stages.effects import Effects, ErasurePart, OutputRecord
from journeystream.stages.routing import envelope_records

log = logging.getLogger(__name__)

Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]
CarryOut = Callable[[list[ErasurePart]], Awaitable[None]]


async def _no_erasures(parts: list[ErasurePart]) -> None:
    if parts:
        raise RuntimeError("erasure parts with nobody to carry them out")


class Checkpoint:
    def __init__(
        self,
        sink: BatchingSink,
        producer: Producer,
        changelog_topic: Callable[[str], str],
        commit: Commit,
        on_done: Callable[[float], None] = lambda seconds: None,
        erasures: CarryOut = _no_erasures,
    ) -> None:
        self.sink = sink
        self.producer = producer
        self.changelog_topic = changelog_topic
        self.commit = commit
        self.last = time.monotonic()
        self._inflight: asyncio.Future[None] | None = None
        self._on_done = on_done
        self._carry_out = erasures
        self._erasures: list[ErasurePart] = []  # since the last checkpoint started

    async def emit(self, effects: Effects) -> None:
        """Rows to the sink's buffer, records to the producer (not awaited)."""
        taken = effects.take()
        self._erasures.extend(taken.erasures)
        self.sink.add_many(taken.rows)
        records = taken.records
        for envelope in taken.envelopes:
            records.extend(envelope_records(envelope))
        if records:
            await self.producer.send(records)

    async def run(self, assignment: Assignment, effects: Effects) -> None:
        """A whole checkpoint, waited for (before partitions are given up, at stop)."""
        await self.start(assignment, effects)
        await self.wait()

    async def start(self, assignment: Assignment, effects: Effects) -> None:
        """Take what is to be made durable now (under the driver's lock), then write it in
        the background while the next batches are processed; one checkpoint at a time.
        What is taken is fixed here: rows and records emitted so far, the state changes and
        the offsets they make safe. Later batches' rows go to the sink's next generation,
        their state changes to the next checkpoint."""
        await self.wait()
        assignment.collect(now_ms(), time.monotonic(), effects)
        await self.emit(effects)
        assignment.stage_changes()
        writes = assignment.begin_writes()
        points = assignment.commit_points()
        produced_at, assignment.produced_at = assignment.produced_at, []
        erasures, self._erasures = self._erasures, []
        self.last = started = time.monotonic()
        self._inflight = asyncio.ensure_future(
            self._finish(assignment, writes, erasures, points, produced_at, started)
        )

    async def wait(self) -> None:
        """Until the checkpoint under way is durable; raises what made it fail."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _finish(
        self,
        assignment: Assignment,
        writes: list[list[StoreWrite]],
        erasures: list[ErasurePart],
        points: dict[TopicPartition, int],
        produced_at: list[int],
        started: float,
    ) -> None:
        last_raw_table = RAW_TABLES[-1].name

        def raw_rows_written(table: str) -> None:
            # the end-to-end delay a supervisor sees: the event's row is queryable now,
            # whatever the facts' tables written after it still take
            if table == last_raw_table:
                assignment.rows_durable(produced_at, time.time())

        await self.sink.flush(raw_rows_written)
        await self.producer.drain()
        written: list[tuple[PartitionStore, StateChanges, int]] = []
        for group in writes:
            written += await self._write_states(group)
        # the local stores only once every group is on the changelogs: a kept store never
        # holds a checkpoint that a restore may undo
        for store, changes, next_offset in written:
            store.commit(changes, next_offset)
        if erasures:
            assignment.purge(erasures)
            await self._carry_out(erasures)
        if points:
            await self._commit(assignment, points)
        self._on_done(time.monotonic() - started)

    async def _write_states(self, stores: list[StoreWrite]) -> list[tuple[PartitionStore, StateChanges, int]]:
        """Each store's changes then its marker, all acknowledged; returns per store the
        offset its local copy may restart from."""
        writes: list[tuple[PartitionStore, StateChanges, list[asyncio.Future[Any]]]] = []
        for store, changes, number in stores:
            topic = self.changelog_topic(store.name)
            records = [OutputRecord(topic, key, value, store.partition) for key, value in changes.items()]
            records.append(OutputRecord(topic, CHECKPOINT_MARKER, marker_value(number), store.partition))
            writes.append((store, changes, await self.producer.send_tracked(records)))
        # the last batch's first offset: a restore from there re-reads at most one batch of
        # values the store already holds, and always the marker with its number
        return [
            (store, changes, (await asyncio.gather(*futures))[-1].offset)
            for store, changes, futures in writes
        ]

    async def _commit(self, assignment: Assignment, points: dict[TopicPartition, int]) -> None:
        try:
            await self.commit(points)
        except (CommitFailedError, KafkaError) as error:
            # a rebalance took the partitions: their records are read again by their new
            # owner from the last commit, which the stages absorb
            log.warning("offset commit refused (%s); the records since the last commit are read again", error)
            return
        assignment.committed.update(points)
