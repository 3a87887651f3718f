"""Restoring stores from their changelog partitions, in batches, from the offset each
store already holds to the end of the log.

A checkpoint writes each store's changes as several records, then a marker record
(`Checkpoint._write_states`). A SIGKILL in between can leave only the first records in the
log (a checkpoint's changes of one store span several 512 KiB batches when they are many):
KPI cells without the customer marks that say which facts they counted, and the next
worker counted those facts again. So a restore applies changes only when their marker is
read; what follows the last marker is a checkpoint that never finished, and the restore
overwrites it in the log with the values the store held before it (tombstones where it
held none), ended by a marker, before anything reads the store. A log with no marker at all
was written before markers existed: it is applied as it stands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from journeystream.runtime.store import PartitionStore, StateChanges
from journeystream.stages.effects import OutputRecord

log = logging.getLogger(__name__)

RESTORE_BATCH = 20_000
CHECKPOINT_MARKER = b"\x00journeystream.checkpoint"
"""Key of the record that ends a store's changes of one checkpoint (no state key starts with
a NUL byte); compaction keeps the latest, which is all a restore needs."""
MARKER_VALUE = b"1"  # not a tombstone: compaction would drop it

Send = Callable[[list[OutputRecord]], Awaitable[list["asyncio.Future[Any]"]]]


class PartitionLog:
    """What a restore read of one changelog partition: changes count once a marker ends
    them, and go to the store a batch at a time (a marker ends every checkpoint: one store
    write each would be thousands on a long tail); those after the last marker are held
    back."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.finished: StateChanges = {}  # ended by a marker, not in the store yet
        self.finished_to: int | None = None  # the offset after that marker
        self.unfinished: StateChanges = {}  # read since the last marker
        self.marked = False  # a marker was read

    def read(self, key: bytes, value: bytes | None, offset: int) -> None:
        if key == CHECKPOINT_MARKER:
            self.finished.update(self.unfinished)
            self.unfinished = {}
            self.finished_to = offset + 1
            self.marked = True
        else:
            self.unfinished[key] = value

    def flush(self) -> None:
        """Hand the store what markers ended so far, in one write."""
        if self.finished_to is not None:
            self.store.restored(self.finished.items(), self.finished_to)
            self.finished, self.finished_to = {}, None

    def end(self, end_offset: int) -> list[tuple[bytes, bytes | None]]:
        """At the end of the log: the records that undo an unfinished checkpoint (the
        store's values before it), or none."""
        self.flush()
        if not self.unfinished:
            self.store.restored((), end_offset)
            return []
        if not self.marked:  # written before markers existed: as it stands
            self.store.restored(self.unfinished.items(), end_offset)
            self.unfinished = {}
            return []
        undo = [(key, self.store.backend.get(key)) for key in self.unfinished]
        self.unfinished = {}
        return undo


async def restore(
    stores: Sequence[PartitionStore],
    changelog_topic: Callable[[str], str],
    client_options: dict[str, Any],
    send: Send,
) -> None:
    if not stores:
        return
    started = time.monotonic()
    by_tp = {TopicPartition(changelog_topic(store.name), store.partition): store for store in stores}
    consumer = AIOKafkaConsumer(
        **client_options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    read = 0
    logs = {tp: PartitionLog(store) for tp, store in by_tp.items()}
    try:
        tps = list(by_tp)
        consumer.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        todo = set()
        for tp, store in by_tp.items():
            start = store.backend.next_offset()
            if start > ends[tp]:
                log.warning("%s: the local store is ahead of its changelog (recreated?); rebuilding it", tp)
                store.backend.clear()
                start = 0
            start = max(start, beginnings[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo.add(tp)
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=RESTORE_BATCH)
            for tp, records in batches.items():
                partition_log = logs[tp]
                for record in records:
                    partition_log.read(record.key, record.value, record.offset)
                partition_log.flush()
                read += len(records)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    undone = 0
    for tp, partition_log in logs.items():
        undo = partition_log.end(ends[tp])
        if undo:
            await _undo(tp, undo, send)
            undone += len(undo)
            log.warning("%s: a checkpoint had not finished writing; %d changes undone", tp, len(undo))
    log.info(
        "restored %s: %d changelog records in %.2fs%s",
        ", ".join(f"{store.name}-{store.partition}" for store in stores),
        read,
        time.monotonic() - started,
        f", {undone} unfinished changes undone" if undone else "",
    )


async def _undo(tp: TopicPartition, undo: list[tuple[bytes, bytes | None]], send: Send) -> None:
    """Overwrite an unfinished checkpoint's records with the values before it, acknowledged
    before the store is read (a later restore then reads them after the unfinished ones)."""
    records = [OutputRecord(tp.topic, key, value, tp.partition) for key, value in undo]
    records.append(OutputRecord(tp.topic, CHECKPOINT_MARKER, MARKER_VALUE, tp.partition))
    await asyncio.gather(*await send(records))
