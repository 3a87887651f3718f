"""Per-partition bookkeeping shared by the keyed stages: which input messages may be acked,
and writing Faust table keys under the right partition.

A stage may ack a message only once everything it caused is durable: its outputs were sent
(and written to ClickHouse), then the stage state it changed was written to the table's
changelog. Messages whose item still waits in the reorder buffer are not acked yet.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
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
