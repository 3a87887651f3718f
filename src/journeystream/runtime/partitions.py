"""Per-partition bookkeeping shared by the keyed stages: which input messages may be acked,
and writing Faust table keys under the right partition.

A stage may ack a message only once everything it caused is durable: its outputs were sent
(and written to ClickHouse), then the stage state it changed was written to the table's
changelog. Messages whose item still waits in the reorder buffer are not acked yet.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.streams import _current_event  # the event Faust tables attribute writes to

_partitioner = DefaultPartitioner()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner gives `key` (murmur2, like Kafka's)."""
    all_partitions = list(range(partitions))
    return int(_partitioner(key, all_partitions, all_partitions))


class AckBook:
    """Messages processed since the last durable point, and which of them are still buffered."""

    def __init__(self) -> None:
        self._unacked: list[tuple[Any, Any]] = []  # (faust event, item or None)

    def processed(self, event: Any, item: Any = None) -> None:
        self._unacked.append((event, item))

    def __len__(self) -> int:
        return len(self._unacked)

    def take_ackable(self, still_buffered: Iterable[Any]) -> list[Any]:
        """Events whose item is no longer buffered; the others stay for a later flush."""
        buffered = {id(item) for item in still_buffered}
        ackable, keep = [], []
        for event, item in self._unacked:
            if item is not None and id(item) in buffered:
                keep.append((event, item))
            else:
                ackable.append(event)
        self._unacked = keep
        return ackable


class _Track:
    """One input partition of one consumer generation."""

    __slots__ = ("committed", "hole_at", "next_owed", "outstanding")

    def __init__(self, committed: int) -> None:
        self.committed = committed  # what the broker has (or what we committed since)
        self.next_owed = committed  # lowest offset not delivered yet in offset order
        self.outstanding: Counter[int] = Counter()  # delivered, not acked (duplicates counted)
        self.hole_at: int | None = None

    def deliver(self, offset: int) -> None:
        if offset == self.next_owed:
            self.next_owed += 1
        elif offset > self.next_owed:
            self.hole_at = self.next_owed  # commits wait until next_owed is delivered
        self.outstanding[offset] += 1

    def ack(self, offset: int) -> None:
        left = self.outstanding[offset] - 1
        if left > 0:
            self.outstanding[offset] = left
        else:
            del self.outstanding[offset]

    def commit_point(self) -> int:
        return min(self.outstanding) if self.outstanding else self.next_owed


class OffsetBook:
    """Which input offsets may be committed: the worker owns its offset commits.

    Faust's own bookkeeping is not used for the stages' input topics (they are declared
    without acks): it commits past messages nobody acked (an offset gap recorded when the
    seek after a rebalance races the fetcher, the message at the committed offset itself,
    every message before the first ack of a partition without a committed offset, and
    messages it skipped during a rebalance). Here an offset is committable only when every
    offset from the committed one up to it was delivered to a stage and acked, in this
    consumer generation; a delivery that jumps over an offset stops commits of the partition
    until the missing offsets are delivered (after the seek to the committed offsets).
    """

    def __init__(self) -> None:
        self.generation: int | None = None
        self._tracks: dict[Any, _Track] = {}

    def start(self, generation: int, committed: Mapping[Any, int]) -> None:
        """A new consumer generation: everything unacked will be delivered again from
        `committed` (the broker's committed offset, or the log start, per partition)."""
        self.generation = generation
        self._tracks = {tp: _Track(offset) for tp, offset in committed.items()}

    def take(self, events: Sequence[Any]) -> list[Any]:
        """The events of the current generation, recorded as delivered. Others were fetched
        before a rebalance; they are delivered again after the seek and must not be processed
        (nor acked) now."""
        taken = []
        for event in events:
            message = event.message
            track = self._tracks.get(message.tp)
            if track is None or message.generation_id != self.generation:
                continue
            track.deliver(message.offset)
            taken.append(event)
        return taken

    def ack(self, event: Any) -> None:
        """Everything the event caused is durable. Acks of an older generation are ignored:
        their messages are delivered again."""
        message = event.message
        track = self._tracks.get(message.tp)
        if track is not None and message.generation_id == self.generation:
            track.ack(message.offset)

    def to_commit(self) -> dict[Any, int]:
        """Offsets to commit now: partitions whose commit point moved past the committed one."""
        offsets = {}
        for tp, track in self._tracks.items():
            point = track.commit_point()
            if point > track.committed:
                offsets[tp] = point
        return offsets

    def committed(self, offsets: Mapping[Any, int]) -> None:
        for tp, offset in offsets.items():
            track = self._tracks.get(tp)
            if track is not None:
                track.committed = max(track.committed, offset)

    def position(self, tp: Any) -> int | None:
        """The lowest offset not yet delivered in order (None if the partition is unknown)."""
        track = self._tracks.get(tp)
        return None if track is None else track.next_owed

    def holes(self) -> dict[Any, int]:
        """Partitions whose deliveries jumped over an offset (commits wait for it)."""
        return {
            tp: track.hole_at
            for tp, track in self._tracks.items()
            if track.hole_at is not None and track.next_owed == track.hole_at
        }


def write_table(table: Any, partition_event: Any, changes: dict[bytes, bytes | None]) -> None:
    """Set or delete table keys as if inside the stream iteration of `partition_event`,
    so Faust sends each change to that event's changelog partition."""
    token = _current_event.set(weakref.ref(partition_event))
    try:
        for key, value in changes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    finally:
        _current_event.reset(token)
