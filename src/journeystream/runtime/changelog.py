"""Restoring stores from their changelog partitions, in batches, from the offset each
store already holds to the end of the log.

A checkpoint writes each store's changes as several records, then a marker record that
carries the checkpoint's number (`Checkpoint._write_states`). A SIGKILL in between can leave
only the first records in the log (a checkpoint's changes of one store span several 512 KiB
batches when they are many): KPI cells without the customer marks that say which facts they
counted, and the next worker counted those facts again. So a restore applies changes only
when their marker is read; what follows the last marker is a checkpoint that never
finished, and the restore overwrites it in the log with the values the store held before it
(tombstones where it held none), ended by a marker, before anything reads the store. A log
with no marker at all is empty or was written before markers existed: it is applied as it
stands, and the restore writes a first marker (checkpoint 0), so that a first checkpoint cut
short is never taken for an old log (it was, in the crash test: the partition with the
most data came back with the KPI cells of its first checkpoint and neither their customer
marks nor the customer states, and counted everything again).

The stores of one stage partition (a journey partition's KPI cells and customer states) are
written one after the other, each acknowledged before the next, so a kill in between leaves
the cells one finished checkpoint ahead of the customer states. The next worker then
regenerated that checkpoint's facts from the older customer states, in an order that can
differ (a watermark jump fires deadlines first), and its per-customer fact sequences did not
recognise them: KPI cells came out doubled in about one crash run in eight. So every store
of a partition gets a marker with the same number at every checkpoint that changes any of
them, a restore holds back each store's last finished checkpoint until every log of the
partition is read, and a store whose last number is ahead of the others' has that
checkpoint undone like an unfinished one: the partition restores to the last checkpoint all
its stores finished.
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

Send = Callable[[list[OutputRecord]], Awaitable[list["asyncio.Future[Any]"]]]
Undo = list[tuple[bytes, bytes | None]]


def marker_value(number: int) -> bytes:
    """A marker's value: the checkpoint's number (never empty: a tombstone would be dropped
    by compaction)."""
    return str(number).encode()


def marker_number(value: bytes | None) -> int:
    """The checkpoint number a marker carries; markers written before numbers carry b"1"."""
    try:
        return int(value or b"0")
    except ValueError:
        return 0


class PartitionLog:
    """What a restore read of one changelog partition: changes count once a marker ends
    them, and go to the store a batch at a time (a marker ends every checkpoint: one store
    write each would be thousands on a long tail). The last finished checkpoint is held
    back until the partition's other logs are read (`end`); what follows its marker is
    unfinished."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.finished: StateChanges = {}  # ended by a marker before the last one, not in the store yet
        self.finished_to: int | None = None  # the offset of the marker that ends them
        self.last: StateChanges = {}  # ended by the last marker read
        self.last_marker: int | None = None  # its offset
        self.number: int | None = None  # its checkpoint number; None: no marker read
        self.before: int | None = None  # the number of the marker read before it, if any
        self.unfinished: StateChanges = {}  # read since the last marker

    def read(self, key: bytes, value: bytes | None, offset: int) -> None:
        if key == CHECKPOINT_MARKER:
            if self.last_marker is not None:
                self.finished.update(self.last)
                self.finished_to = self.last_marker
            self.before = self.number
            self.last, self.unfinished = self.unfinished, {}
            self.last_marker, self.number = offset, marker_number(value)
        else:
            self.unfinished[key] = value

    def flush(self) -> None:
        """Hand the store what markers ended before the last one, in one write. Its offset
        stays at a marker: the next restore reads that marker's number again."""
        if self.finished_to is not None:
            self.store.restored(self.finished.items(), self.finished_to)
            self.finished, self.finished_to = {}, None

    def end(self, end_offset: int, agreed: int | None) -> Undo:
        """At the end of the log, knowing the last checkpoint every store of the partition
        finished (`agreed`, None if unknown): applies the last finished checkpoint unless it
        is beyond that one. Returns the records to write before the store is read: what is
        not applied overwritten with the store's values before it, then the marker of the
        checkpoint the store is at; none if everything read is applied."""
        self.flush()
        if self.number is None:
            # no marker: an empty log, or one written before markers existed, applied as it
            # stands. A marker (0) then starts the log: otherwise the first checkpoint cut
            # short would look like an old log and be applied in part
            self.store.restored(self.unfinished.items(), end_offset)
            self.unfinished = {}
            self.store.checkpoint = 0
            return [(CHECKPOINT_MARKER, marker_value(0))]
        assert self.last_marker is not None
        undone, number = self.unfinished, self.number
        if agreed is not None and number > agreed:
            if self.last and self.before != agreed:
                # not the checkpoint right after the agreed one: undoing it needs values
                # this read did not see
                log.warning(
                    "%s-%d: checkpoint %d is ahead of the partition's other stores (at %d) "
                    "and cannot be undone; applied",
                    self.store.name,
                    self.store.partition,
                    number,
                    agreed,
                )
            else:
                undone = {**self.last, **self.unfinished}
                self.last, number = {}, agreed
        self.store.restored(self.last.items(), self.last_marker)
        self.store.checkpoint = number
        self.last, self.unfinished = {}, {}
        if not undone and number == self.number:
            return []
        get = self.store.backend.get
        return [*((key, get(key)) for key in undone), (CHECKPOINT_MARKER, marker_value(number))]


async def restore(
    groups: Sequence[Sequence[PartitionStore]],
    changelog_topic: Callable[[str], str],
    client_options: dict[str, Any],
    send: Send,
) -> None:
    """Restore the stores, given per stage partition: a partition's stores end at the last
    checkpoint they all finished."""
    stores = [store for group in groups for store in group]
    if not stores:
        return
    started = time.monotonic()

    def tp_of(store: PartitionStore) -> TopicPartition:
        return TopicPartition(changelog_topic(store.name), store.partition)

    by_tp = {tp_of(store): store for store in stores}
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
    writes: list[OutputRecord] = []
    for group in groups:
        group_logs = [(tp, logs[tp]) for tp in (tp_of(store) for store in group)]
        numbers = [
            partition_log.number for _, partition_log in group_logs if partition_log.number is not None
        ]
        agreed = min(numbers) if numbers else None
        for tp, partition_log in group_logs:
            ahead = partition_log.number
            undo = partition_log.end(ends[tp], agreed)
            writes += [OutputRecord(tp.topic, key, value, tp.partition) for key, value in undo]
            changes = max(0, len(undo) - 1)
            undone += changes
            if not changes:
                continue
            if ahead is not None and partition_log.store.checkpoint != ahead:
                log.warning(
                    "%s: checkpoint %d finished here but not in the partition's other stores; "
                    "%d changes undone",
                    tp,
                    ahead,
                    changes,
                )
            else:
                log.warning("%s: a checkpoint had not finished writing; %d changes undone", tp, changes)
    if writes:
        await asyncio.gather(*await send(writes))  # acknowledged before any store is read
    purged = sum(await asyncio.to_thread(lambda: [store.purge_restored_deletions() for store in stores]))
    log.info(
        "restored %s: %d changelog records in %.2fs%s%s",
        ", ".join(f"{store.name}-{store.partition}" for store in stores),
        read,
        time.monotonic() - started,
        f", {undone} unfinished changes undone" if undone else "",
        f", {purged} deleted keys purged from the local files" if purged else "",
    )
