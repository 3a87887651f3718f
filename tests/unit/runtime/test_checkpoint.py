"""The checkpoint's write order, with recording stand-ins for the store and the producer:
rows, then records, then KPI cells, then customer states (each acknowledged before the
next), then offsets; and no offset past a record whose item still waits in a buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.core.journeys import KeyedEvent
from journeystream.core.state import event_from_list
from journeystream.metrics import Metrics
from journeystream.runtime.assignment import Assignment
from journeystream.runtime.changelog import CHECKPOINT_MARKER, marker_number
from journeystream.runtime.checkpoint import CarryOut, Checkpoint, Commit
from journeystream.sinks.rows import ALL_TABLES
from journeystream.stages.effects import Effects, InputRecord, OutputRecord
from journeystream.stages.envelope import Watermark, encode_message, pack

T0 = 1_767_225_600_000


@dataclass
class Written:
    offset: int


class RecordingSink:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.rows: list[str] = []
        self.pending_rows = 0

    def add_many(self, rows: list[tuple[str, Any]]) -> None:
        self.rows.extend(table for table, _ in rows)

    async def flush(self, on_table_written: Callable[[str], None] | None = None) -> None:
        self.log.append(f"rows:{','.join(sorted(set(self.rows)))}")
        self.rows.clear()
        for spec in ALL_TABLES:
            if on_table_written is not None:
                on_table_written(spec.name)


class RecordingProducer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.offset = 100

    async def send(self, records: Iterable[OutputRecord]) -> None:
        topics = sorted({record.topic for record in records})
        self.log.append(f"send:{','.join(topics)}")

    async def drain(self) -> None:
        self.log.append("drain")

    async def send_tracked(self, records: Iterable[OutputRecord]) -> list[asyncio.Future[Any]]:
        sent = list(records)
        self.log.append(f"changelog:{sent[0].topic}#{marker_number(sent[-1].value)}")
        # the store's changes, then the marker a restore waits for
        assert [record.key for record in sent].index(CHECKPOINT_MARKER) == len(sent) - 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        name = sent[0].topic

        def acknowledged() -> None:
            self.log.append(f"acked:{name}")
            future.set_result(Written(self.offset))

        asyncio.get_running_loop().call_soon(acknowledged)
        return [future]


def _checkpoint(
    log: list[str],
    commit: Commit,
    sink: RecordingSink | None = None,
    producer: RecordingProducer | None = None,
    erasures: CarryOut | None = None,
) -> Checkpoint:
    """A checkpoint over the recording stand-ins, changelog topics named `app-<store>-changelog`."""
    stand_ins: tuple[Any, Any] = (sink or RecordingSink(log), producer or RecordingProducer(log))
    if erasures is None:
        return Checkpoint(*stand_ins, lambda name: f"app-{name}-changelog", commit)
    return Checkpoint(*stand_ins, lambda name: f"app-{name}-changelog", commit, erasures=erasures)


def _item(n: int, at: int, customer: str) -> KeyedEvent:
    event = event_from_list([f"e{n}", at, "web", "page_view", customer, None, "claim", None, None, None, {}])
    return KeyedEvent(customer, event)


async def test_rows_then_records_then_cells_then_states_then_offsets() -> None:
    settings = Settings.from_env({"JOURNEYSTREAM_PARTITIONS": "1", "JOURNEYSTREAM_APP_ID": "app"})
    assignment = Assignment.empty(settings, Metrics(CollectorRegistry()))
    tp = TopicPartition(settings.topic_by_customer, 0)
    assignment.build(tp)
    sources = [f"{stage}0" for stage in "AB"]
    # offset 7: two events, watermarks let the first through; offset 8: an event still buffered
    first = [_item(1, T0, "c1"), _item(2, T0 + 10_000, "c2")]
    first += [Watermark(source, T0 + 5_000) for source in sources]
    second = [_item(3, T0 + 20_000, "c3")]
    records = [
        InputRecord(offset, T0, None, next(pack([encode_message(m) for m in messages])))
        for offset, messages in ((7, first), (8, second))
    ]
    effects = Effects()
    assignment.journeys[0].process(records, effects)
    assignment.positions[tp] = 9

    log: list[str] = []
    committed: dict[TopicPartition, int] = {}

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        log.append("commit")
        committed.update(offsets)

    checkpoint = _checkpoint(log, commit)
    await checkpoint.run(assignment, effects)

    assert log == [
        "send:journeystream.journeys",
        "rows:journeys,kpi_minute,kpi_progress",
        "drain",
        "changelog:app-kpi_cells-changelog#1",
        "acked:app-kpi_cells-changelog",
        "changelog:app-customers-changelog#1",
        "acked:app-customers-changelog",
        "commit",
    ]
    # events 2 and 3 wait in the reorder buffer (after the watermark): offset 7 is not safe
    assert committed == {tp: 7}
    store = assignment.stores[("customers", 0)]
    assert set(dict(store.items())) == {b"c1"}
    assert store.backend.next_offset() == 100
    assert orjson.loads(store.get(b"c1") or b"null")[1] == "c1"


async def test_an_erasure_is_carried_out_after_its_rows_and_tombstones_and_before_the_commit() -> None:
    from journeystream.stages.effects import ErasurePart
    from journeystream.stages.envelope import Erase

    settings = Settings.from_env({"JOURNEYSTREAM_PARTITIONS": "1", "JOURNEYSTREAM_APP_ID": "app"})
    assignment = Assignment.empty(settings, Metrics(CollectorRegistry()))
    tp = TopicPartition(settings.topic_by_customer, 0)
    assignment.build(tp)
    sources = [f"{stage}0" for stage in "AB"]
    messages = [_item(1, T0, "c1"), *(Watermark(source, T0 + 5_000) for source in sources)]
    erase = [Erase("c1", "req-1", True)]
    records = [
        InputRecord(offset, T0, None, next(pack([encode_message(m) for m in batch])))
        for offset, batch in ((3, messages), (4, erase))
    ]
    effects = Effects()
    assignment.journeys[0].process(records, effects)
    assignment.positions[tp] = 5
    log: list[str] = []
    carried: list[ErasurePart] = []

    async def carry_out(parts: list[ErasurePart]) -> None:
        log.append("erasures")
        carried.extend(parts)

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        log.append("commit")

    checkpoint = _checkpoint(log, commit, erasures=carry_out)
    await checkpoint.emit(effects)  # as the driver does after each batch: the part waits
    await checkpoint.run(assignment, effects)
    assert log[-4:] == [
        "changelog:app-customers-changelog#1",
        "acked:app-customers-changelog",
        "erasures",
        "commit",
    ]
    assert [(p.request, p.key, p.primary, p.existed) for p in carried] == [("req-1", "c1", True, True)]
    assert dict(assignment.stores[("customers", 0)].items()) == {}  # the state's deletion is durable


def test_every_store_of_a_changed_partition_is_written_under_one_checkpoint_number() -> None:
    """A restore brings a partition's stores back to the last checkpoint they all finished:
    so each checkpoint that changes one of them writes a marker to all, with one number."""
    settings = Settings.from_env({"JOURNEYSTREAM_PARTITIONS": "1", "JOURNEYSTREAM_APP_ID": "app"})
    assignment = Assignment.empty(settings, Metrics(CollectorRegistry()))
    assignment.build(TopicPartition(settings.topic_by_customer, 0))
    cells, customers = assignment.stores[("kpi_cells", 0)], assignment.stores[("customers", 0)]

    def written() -> list[list[tuple[str, dict[bytes, bytes | None], int]]]:
        return [
            [(store.name, changes, number) for store, changes, number in group]
            for group in assignment.begin_writes()
        ]

    customers.stage({b"c1": b"state"})
    assert written() == [[("kpi_cells", {}, 1)], [("customers", {b"c1": b"state"}, 1)]]
    assert written() == [[], []]  # nothing changed: nothing written, not even a marker
    cells.checkpoint = customers.checkpoint = 5  # as a restore leaves them
    cells.stage({b"cell": b"counts"})
    assert written() == [[("kpi_cells", {b"cell": b"counts"}, 6)], [("customers", {}, 6)]]


async def test_the_local_stores_take_a_checkpoint_only_once_every_changelog_has_it() -> None:
    """A kill after the KPI cells' changelog and before the customer states' leaves a kept
    store with neither: the restore can still bring the cells back (it needs their values
    before the checkpoint, which a kept store that took it would have lost)."""
    settings = Settings.from_env({"JOURNEYSTREAM_PARTITIONS": "1", "JOURNEYSTREAM_APP_ID": "app"})
    assignment = Assignment.empty(settings, Metrics(CollectorRegistry()))
    assignment.build(TopicPartition(settings.topic_by_customer, 0))
    cells, customers = assignment.stores[("kpi_cells", 0)], assignment.stores[("customers", 0)]
    cells.stage({b"cell": b"counts"})
    customers.stage({b"c1": b"state"})
    log: list[str] = []

    class ProducerKilledBeforeTheCustomerStates(RecordingProducer):
        async def send_tracked(self, records: Iterable[OutputRecord]) -> list[asyncio.Future[Any]]:
            sent = list(records)
            if "customers" in sent[0].topic:
                raise asyncio.CancelledError  # the process ends here
            return await super().send_tracked(sent)

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        log.append("commit")

    checkpoint = _checkpoint(log, commit, producer=ProducerKilledBeforeTheCustomerStates(log))
    with pytest.raises(asyncio.CancelledError):
        await checkpoint.run(assignment, Effects())
    assert "acked:app-kpi_cells-changelog" in log
    assert "commit" not in log
    assert dict(cells.backend.items()) == {} and cells.backend.next_offset() == 0
    assert dict(customers.backend.items()) == {}


async def test_the_store_delay_is_observed_once_the_raw_rows_are_written() -> None:
    """journeystream_store_delay_seconds times an event to its raw row: observed when
    interaction_events and rejected_events are written, not after the facts' tables."""
    settings = Settings.from_env({"JOURNEYSTREAM_PARTITIONS": "1", "JOURNEYSTREAM_APP_ID": "app"})
    assignment = Assignment.empty(settings, Metrics(CollectorRegistry()))
    assignment.produced_at = [T0, T0 + 1]
    histogram = assignment.metrics.store_delay_seconds
    observed: dict[str, float] = {}

    class SinkNotingTheDelays(RecordingSink):
        async def flush(self, on_table_written: Callable[[str], None] | None = None) -> None:
            def noted(table: str) -> None:
                assert on_table_written is not None
                on_table_written(table)
                observed[table] = _histogram_count(histogram)

            await super().flush(noted)

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        pass

    log: list[str] = []
    checkpoint = _checkpoint(log, commit, sink=SinkNotingTheDelays(log))
    await checkpoint.run(assignment, Effects())
    assert observed["interaction_events"] == 0
    assert observed["rejected_events"] == 2
    assert observed["journeys"] == observed["alert_state"] == 2


def _histogram_count(histogram: Any) -> float:
    return next(
        sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )
