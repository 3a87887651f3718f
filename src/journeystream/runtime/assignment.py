"""What this worker holds for the partitions assigned to it: the stage processors, their
stores, and how far each input partition has been processed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import TopicPartition

from journeystream.config import Settings, pseudonyms, rules_config
from journeystream.metrics import Metrics
from journeystream.runtime.store import PartitionStore, StateChanges, open_backend, remove_unowned
from journeystream.runtime.topics import TABLES
from journeystream.stages.control import ControlProcessor
from journeystream.stages.effects import Effects, ErasurePart
from journeystream.stages.identity import LINKS, IdentityProcessor
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.journeys import CUSTOMERS, KPI_CELLS, JourneyProcessor
from journeystream.stages.topology import Topology

KeyedProcessor = IdentityProcessor | JourneyProcessor

STORE_WRITE_ORDER: tuple[tuple[str, ...], ...] = ((LINKS, KPI_CELLS), (CUSTOMERS,))
"""Groups of stores written to their changelogs in turn, each group durable before the next:
KPI cells before the customer states whose facts they counted."""

StoreWrite = tuple[PartitionStore, StateChanges, int]
"""A store, its changes to write (maybe none), the number of the checkpoint that writes them."""


@dataclass
class Assignment:
    settings: Settings
    metrics: Metrics
    topology: Topology
    ingest: IngestProcessor
    control: ControlProcessor
    identity: dict[int, IdentityProcessor] = field(default_factory=dict)
    journeys: dict[int, JourneyProcessor] = field(default_factory=dict)
    stores: dict[tuple[str, int], PartitionStore] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to process
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    partitions: set[TopicPartition] = field(default_factory=set)
    produced_at: list[int] = field(default_factory=list)  # input records' timestamps (ms) since a checkpoint
    keep_going: Callable[[], bool] = lambda: True  # asked by the journey engines during long work

    @classmethod
    def empty(cls, settings: Settings, metrics: Metrics) -> Assignment:
        topology = Topology.from_settings(settings)
        ingest = IngestProcessor(topology, settings.allowed_lateness_ms, metrics, pseudonyms(settings))
        return cls(settings, metrics, topology, ingest, ControlProcessor(topology))

    def store(self, name: str, partition: int) -> PartitionStore:
        store = self.stores.get((name, partition))
        if store is None:
            backend = open_backend(self.settings.store, Path(self.settings.data_dir), name, partition)
            store = self.stores[(name, partition)] = PartitionStore(name, partition, backend)
        return store

    def stores_of(self, tp: TopicPartition) -> list[PartitionStore]:
        return [self.store(name, tp.partition) for name in self.store_names(tp)]

    def store_names(self, tp: TopicPartition) -> tuple[str, ...]:
        if tp.topic == self.topology.by_device:
            return IdentityProcessor.stores
        if tp.topic == self.topology.by_customer:
            return JourneyProcessor.stores
        return ()

    def keep_only(self, assigned: set[TopicPartition]) -> list[str]:
        """A new assignment: the local state of every stage partition not in it is deleted,
        in memory and on disk. Kept, it would go on holding states that the partition's new
        owner erases (GDPR); and an eager rebalance revokes everything, so the stores of
        partitions assigned again are kept (only their changelog tail is read). Returns the
        stores deleted."""
        owned = {(name, tp.partition) for tp in assigned for name in self.store_names(tp)}
        dropped = sorted(where for where in self.stores if where not in owned)
        for where in dropped:
            self.stores.pop(where).backend.destroy()
        removed = {f"{name}-{partition}" for name, partition in dropped}
        if self.settings.store == "rocksdb://":
            removed.update(remove_unowned(Path(self.settings.data_dir), TABLES, owned))
        return sorted(removed)

    def load(self, partition: int) -> _Loader:
        return _Loader(self, partition)

    def build(self, tp: TopicPartition) -> None:
        """Fresh processors from the stores (restored before this)."""
        partition = tp.partition
        if tp.topic == self.topology.by_device:
            self.identity[partition] = IdentityProcessor(partition, self.topology, self.load(partition))
        elif tp.topic == self.topology.by_customer:
            self.journeys[partition] = JourneyProcessor(
                partition,
                self.topology,
                rules_config(self.settings),
                self.settings.kpi_horizon_ms,
                self.load(partition),
                stored_customers=self.store(CUSTOMERS, partition).items(),
                stored_kpi_cells=self.store(KPI_CELLS, partition).items(),
                observer=self.metrics,
                keep_going=self.keep_going,
            )
        self.partitions.add(tp)

    def drop(self, tp: TopicPartition) -> None:
        """The partition was revoked: its processors go; its stores stay until the new
        assignment is known (see keep_only)."""
        partition = tp.partition
        if tp.topic == self.topology.interactions:
            self.ingest.forget(partition)
        elif tp.topic == self.topology.by_device:
            self.identity.pop(partition, None)
        elif tp.topic == self.topology.by_customer:
            self.journeys.pop(partition, None)
        for store in self.stores_of(tp):
            store.discard_staged()
        self.positions.pop(tp, None)
        self.committed.pop(tp, None)
        self.partitions.discard(tp)

    def keyed(self) -> Iterator[KeyedProcessor]:
        yield from self.identity.values()
        yield from self.journeys.values()

    def changed_customers(self) -> int:
        """Customers changed since the last checkpoint, over every journey partition."""
        return sum(journeys.changed_customers for journeys in self.journeys.values())

    def collect(self, stamp_ms: int, now_s: float, effects: Effects) -> None:
        for processor in self.keyed():
            processor.collect(stamp_ms, now_s, effects)

    def stage_changes(self) -> None:
        """Hand every processor's state changes to its stores (readable from now on)."""
        for partition, identity in self.identity.items():
            self._stage(partition, identity.take_changes())
        for partition, journeys in self.journeys.items():
            self._stage(partition, journeys.take_changes())

    def begin_writes(self) -> list[list[StoreWrite]]:
        """The stores' staged changes for a checkpoint to write, per group of
        STORE_WRITE_ORDER. When any store of a stage partition has changes, every store of
        that partition is written (maybe just its marker) under one new checkpoint number: a
        restore brings them back to the last checkpoint they all finished."""
        by_name: dict[str, list[StoreWrite]] = {}
        for tp in sorted(self.partitions):
            group = self.stores_of(tp)
            changes = [store.begin_write() for store in group]
            if not any(changes):
                continue
            number = max(store.checkpoint for store in group) + 1
            for store, values in zip(group, changes, strict=True):
                store.checkpoint = number
                by_name.setdefault(store.name, []).append((store, values, number))
        return [[write for name in names for write in by_name.get(name, [])] for names in STORE_WRITE_ORDER]

    def _stage(self, partition: int, changes: list[tuple[str, StateChanges]]) -> None:
        for name, values in changes:
            if values:
                self.store(name, partition).stage(values)

    def purge(self, erasures: Sequence[ErasurePart]) -> None:
        """The erased keys leave the local stores' files (their deletions are written by now),
        once per store."""
        touched = {(name, part.partition) for part in erasures for name in part.stores}
        for where in sorted(touched):
            store = self.stores.get(where)
            if store is not None:
                store.backend.purge()

    def rows_durable(self, produced_at: list[int], now_s: float) -> None:
        """Input records produced at these times (ms) have their raw rows stored."""
        observe = self.metrics.store_delay_seconds.observe
        for produced in produced_at:
            observe(max(0.0, now_s - produced / 1000))

    def commit_points(self) -> dict[TopicPartition, int]:
        """Per input partition processed since the last commit: the offset that is safe once
        everything staged so far is durable."""
        points = {}
        for tp, position in self.positions.items():
            if tp.topic == self.topology.by_device:
                point = self.identity[tp.partition].commit_point(position)
            elif tp.topic == self.topology.by_customer:
                point = self.journeys[tp.partition].commit_point(position)
            else:
                point = position
            if point > self.committed.get(tp, -1):
                points[tp] = point
        return points


class _Loader:
    """A processor's read access to its partition's stores."""

    def __init__(self, assignment: Assignment, partition: int) -> None:
        self._assignment = assignment
        self._partition = partition

    def __call__(self, name: str, key: bytes) -> bytes | None:
        return self._assignment.store(name, self._partition).get(key)
