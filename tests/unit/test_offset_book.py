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
