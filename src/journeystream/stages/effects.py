"""What a stage processor hands to whoever drives it: rows, records and state changes.

Processors only append here; the driver decides when each becomes durable (the runtime's
checkpoint, or the replay's end of file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec


class Record(Protocol):
    """What a processor reads of a consumed record (aiokafka's ConsumerRecord has these)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class InputRecord(msgspec.Struct, frozen=True, gc=False):
    """One record not read from Kafka (a line of a replayed file, a record in a test)."""

    offset: int
    timestamp: int  # milliseconds
    key: bytes | None
    value: bytes | None


class OutputRecord(msgspec.Struct, frozen=True, gc=False):
    """A record to produce. `partition` None: the producer's partitioner places it by key."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (changelogs)
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """Messages of one processed batch for one partition of an internal topic, in order.
    The runtime sends them as records (stages/envelope.py); a replay hands them on as they are."""

    topic: str
    partition: int
    messages: list[Any]  # envelope.Message (kept untyped here: envelope imports the core)


@dataclass(frozen=True, slots=True)
class ErasurePart:
    """One stage's part of an erasure request (journeystream erase). The driver reports it
    once the state changes that carry it out are durable; for the primary part (the key the
    request named) it first deletes the ClickHouse rows of `customer_id` / `anonymous_ids`."""

    request: str
    part: str  # "customer" or "anonymous" (a journey-stage key), "links" (an anonymous id's)
    key: str  # the store key erased
    primary: bool
    existed: bool  # there was a state (or links) to erase
    items_dropped: int  # items held or buffered for the key, dropped with it
    expect: int = 0  # parts the primary cascaded to (merged anonymous ids' states and links)
    customer_id: str | None = None  # the primary's rows to delete
    anonymous_ids: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()  # where the key's state lived (old values are purged from the files)
    partition: int = -1


StateChanges = dict[bytes, bytes | None]
"""Store key -> new value (None deletes it)."""


@dataclass(slots=True)
class Effects:
    rows: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    records: list[OutputRecord] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    erasures: list[ErasurePart] = field(default_factory=list)

    def row(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.append((table, row))

    def record(self, record: OutputRecord) -> None:
        self.records.append(record)

    def take(self) -> Effects:
        """Everything collected so far; the collector starts empty again."""
        taken = Effects(self.rows, self.records, self.envelopes, self.erasures)
        self.rows, self.records, self.envelopes, self.erasures = [], [], [], []
        return taken


class StageObserver(Protocol):
    """Hooks for the service's metrics (see metrics.Metrics); replay passes NO_OBSERVER."""

    def on_consumed(self, count: int) -> None: ...
    def on_valid(self, count: int) -> None: ...
    def on_rejected(self, code: str) -> None: ...
    def on_late(self, count: int) -> None: ...
    def on_applied(self, count: int) -> None: ...
    def on_irritant(self, kind: str) -> None: ...
    def on_journey_closed(self, status: str) -> None: ...
    def on_kpi_too_late(self, count: int) -> None: ...


class NoObserver:
    """Every hook does nothing; observers override the hooks they need."""

    def on_consumed(self, count: int) -> None:
        pass

    def on_valid(self, count: int) -> None:
        pass

    def on_rejected(self, code: str) -> None:
        pass

    def on_late(self, count: int) -> None:
        pass

    def on_applied(self, count: int) -> None:
        pass

    def on_irritant(self, kind: str) -> None:
        pass

    def on_journey_closed(self, status: str) -> None:
        pass

    def on_kpi_too_late(self, count: int) -> None:
        pass


NO_OBSERVER: StageObserver = NoObserver()
