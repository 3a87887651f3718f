"""The worker's own offset commits (runtime.partitions.OffsetBook).

Faust's bookkeeping committed past messages no stage had acked, and the crash test lost
them on SIGKILL: the message at the committed offset while later ones were acked, every
message before the first ack of a partition without a committed offset, and offset "gaps"
recorded when the seek after recovery raced the fetcher. These cases pin the rule that
replaced it: an offset is committed only once it and every offset before it were delivered
and acked in the current consumer generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from journeystream.runtime.partitions import OffsetBook

TP = ("by-device", 2)
OTHER = ("by-customer", 0)


@dataclass(frozen=True)
class Message:
    tp: tuple[str, int]
    offset: int
    generation_id: int


@dataclass(frozen=True)
class Event:
    message: Message


def events(offsets: range | list[int], generation: int = 1, tp: tuple[str, int] = TP) -> list[Event]:
    return [Event(Message(tp, offset, generation)) for offset in offsets]


def started(committed: int = 874, generation: int = 1) -> OffsetBook:
    book = OffsetBook()
    book.start(generation, {TP: committed, OTHER: 0})
    return book


def test_nothing_is_committed_before_an_ack() -> None:
    book = started()
    book.take(events(range(874, 880)))
    assert book.to_commit() == {}


def test_the_message_at_the_committed_offset_holds_the_commit_while_later_ones_are_acked() -> None:
    # Faust committed 874 -> 882 here with 874 still in a reorder buffer (a login)
    book = started(874)
    batch = book.take(events(range(874, 882)))
    for event in batch[1:]:
        book.ack(event)
    assert book.to_commit() == {}
    book.ack(batch[0])
    assert book.to_commit() == {TP: 882}


def test_a_partition_without_a_committed_offset_commits_from_its_log_start_only() -> None:
    # Faust committed 0 -> 8 with 0..3 unacked: no committed offset disabled its head check
    book = OffsetBook()
    book.start(1, {TP: 0})
    batch = book.take(events(range(8)))
    for event in batch[4:]:
        book.ack(event)
    assert book.to_commit() == {}
    for event in batch[:4]:
        book.ack(event)
    assert book.to_commit() == {TP: 8}


def test_a_delivery_that_jumps_over_offsets_stops_commits_until_they_are_delivered() -> None:
    # the fetcher raced the seek: 1654..1697 were never handed to the stage in this generation
    book = started(1653)
    first = book.take(events([1653, 1698, 1699]))
    for event in first:
        book.ack(event)
    assert book.to_commit() == {TP: 1654}
    assert book.holes() == {TP: 1654}
    book.committed({TP: 1654})
    redelivered = book.take(events(range(1654, 1700)))
    assert book.to_commit() == {}
    for event in redelivered:
        book.ack(event)
    assert book.holes() == {}
    assert book.to_commit() == {TP: 1700}


def test_a_duplicate_delivery_keeps_its_offset_open_until_both_copies_are_acked() -> None:
    book = started(100)
    first = book.take(events(range(100, 110)))
    second = book.take(events(range(100, 105)))  # delivered again after the seek
    for event in first:
        book.ack(event)
    assert book.to_commit() == {}
    for event in second:
        book.ack(event)
    assert book.to_commit() == {TP: 110}


def test_events_and_acks_of_an_older_generation_are_neither_taken_nor_counted() -> None:
    book = started(10, generation=1)
    old = book.take(events(range(10, 20), generation=1))
    book.start(2, {TP: 10, OTHER: 0})  # rebalance: redelivery from the committed offset
    assert book.take(events(range(20, 25), generation=1)) == []
    for event in old:
        book.ack(event)  # a flush that finished after the rebalance
    assert book.to_commit() == {}
    again = book.take(events(range(10, 12), generation=2))
    for event in again:
        book.ack(event)
    assert book.to_commit() == {TP: 12}


def test_unknown_partitions_are_not_taken_and_commits_never_go_back() -> None:
    book = started(50)
    assert book.take(events([0], tp=("elsewhere", 0))) == []
    batch = book.take(events(range(50, 53)))
    for event in batch:
        book.ack(event)
    book.committed({TP: 60})  # committed further by an earlier generation's flush
    assert book.to_commit() == {}
    assert book.position(TP) == 53
    assert book.position(("elsewhere", 0)) is None


class Part(NamedTuple):
    topic: str
    partition: int


Committed = dict[Part, int | None]


class _FakeConsumer:
    """What Runtime._on_rebalanced uses of Faust's consumer, recording the call order."""

    def __init__(self, assignment: set[Part], committed: Committed) -> None:
        self.calls: list[str] = []
        self._assignment = assignment
        self._committed = committed

    def stop_flow(self) -> None:
        self.calls.append("stop_flow")

    def assignment(self) -> set[Part]:
        return self._assignment

    async def seek_to_committed(self) -> Committed:
        self.calls.append("seek_to_committed")
        return self._committed

    async def earliest_offsets(self, *tps: Part) -> dict[Part, int]:
        self.calls.append("earliest_offsets")
        return {tp: 5 for tp in tps}


class _FakeRunner:
    def __init__(self) -> None:
        import asyncio

        self.lock = asyncio.Lock()
        self.generation: int | None = None

    def reset(self, generation: int) -> None:
        self.generation = generation


async def test_a_rebalance_stops_the_flow_first_and_starts_the_book_from_the_committed_offsets() -> None:
    from types import SimpleNamespace

    from journeystream.runtime.app import Runtime

    interactions, by_device, changelog = Part("in", 0), Part("dev", 1), Part("x-customers-changelog", 0)
    consumer = _FakeConsumer({interactions, by_device, changelog}, {interactions: 120, by_device: None})
    fake = SimpleNamespace(
        app=SimpleNamespace(consumer=consumer, consumer_generation_id=7),
        identity=_FakeRunner(),
        journeys=_FakeRunner(),
        offsets=OffsetBook(),
        input_topics={"in", "dev"},
    )
    fake._committed_offsets = lambda: Runtime._committed_offsets(fake)  # type: ignore[arg-type]
    await Runtime._on_rebalanced(fake, None, signal=None)  # type: ignore[arg-type]
    # nothing may be fetched and handed out between Faust's resume and its seek
    assert consumer.calls[0] == "stop_flow"
    assert fake.identity.generation == fake.journeys.generation == fake.offsets.generation == 7
    assert fake.offsets.position(interactions) == 120
    assert fake.offsets.position(by_device) == 5  # no committed offset: the log start
    assert fake.offsets.position(changelog) is None  # not an input of a stage


async def test_a_stopping_stage_leaves_new_messages_for_the_next_start() -> None:
    # the journeys agent crashed on a closed sink when a batch arrived after the last flush
    from journeystream.config import Settings
    from journeystream.runtime.stages import IdentityRunner

    async def flush() -> None:
        return None

    runner = IdentityRunner(Settings.from_env({}), {}, flush, topics=None)  # type: ignore[arg-type]
    runner.reset(1)
    runner.closed = True
    await runner.handle(events([0, 1], generation=1))
    assert runner.stages == {} and runner.books == {}
