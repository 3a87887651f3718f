"""A keyed stage commits no offset past a record whose item still waits in its buffer."""

from __future__ import annotations

from journeystream.stages.pending import PendingOffsets


class Item:
    pass


def test_the_oldest_buffered_item_holds_the_commit_back() -> None:
    pending = PendingOffsets()
    a, b, c = Item(), Item(), Item()
    pending.hold(a, 10)
    pending.hold(b, 11)
    pending.hold(c, 14)
    assert pending.commit_point([b, c], next_offset=20) == 11
    assert pending.commit_point([c], next_offset=20) == 14
    assert pending.commit_point([], next_offset=20) == 20


def test_items_released_are_forgotten() -> None:
    pending = PendingOffsets()
    a = Item()
    pending.hold(a, 3)
    assert pending.commit_point([], next_offset=9) == 9
    assert pending.commit_point([a], next_offset=9) == 9  # released once: not held any more
