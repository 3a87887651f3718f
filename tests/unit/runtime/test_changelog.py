"""Reading a changelog partition back: a checkpoint's changes count only once their marker
is read; what follows the last marker (a checkpoint cut short by a kill) is undone with the
values the store held before it; a store whose last checkpoint is ahead of its partition's
other stores has that checkpoint undone too; a log written before markers existed is
applied whole."""

from __future__ import annotations

from journeystream.runtime.changelog import CHECKPOINT_MARKER, PartitionLog, marker_number, marker_value
from journeystream.runtime.store import MemoryBackend, PartitionStore

Records = list[tuple[bytes, bytes | None]]


def _read(partition_log: PartitionLog, records: Records, first: int = 0) -> int:
    for offset, (key, value) in enumerate(records, start=first):
        partition_log.read(key, value, offset)
    return first + len(records)


def _store() -> PartitionStore:
    return PartitionStore("kpi_cells", 0, MemoryBackend())


def _read_all(records: Records) -> tuple[PartitionStore, PartitionLog, int]:
    """A fresh store, its log read from offset 0, and the end offset."""
    store = _store()
    partition_log = PartitionLog(store)
    return store, partition_log, _read(partition_log, records)


def _marker(number: int) -> tuple[bytes, bytes]:
    return (CHECKPOINT_MARKER, marker_value(number))


def test_markers_carry_the_checkpoint_number_and_the_first_markers_read_as_one() -> None:
    assert marker_number(marker_value(41)) == 41
    assert marker_number(b"1") == 1  # the value of every marker before numbers


def test_an_unfinished_checkpoint_is_not_applied_and_is_undone() -> None:
    store = _store()
    partition_log = PartitionLog(store)
    end = _read(
        partition_log,
        [
            (b"cell", b"1"),
            (b"mark", b"m1"),
            _marker(1),  # finished
            (b"cell", b"2"),
            (b"other", b"x"),  # cut short: its marks never written
        ],
    )
    undo = partition_log.end(end, agreed=1)
    assert dict(store.items()) == {b"cell": b"1", b"mark": b"m1"}
    assert store.backend.next_offset() == 2  # the marker: a restart reads its number again
    assert store.checkpoint == 1
    assert undo == [(b"cell", b"1"), (b"other", None), _marker(1)]


def test_a_finished_log_is_applied_to_its_end() -> None:
    store, partition_log, end = _read_all([(b"a", b"1"), _marker(1), (b"a", None), _marker(2)])
    assert partition_log.end(end, agreed=2) == []
    assert dict(store.items()) == {}
    assert store.backend.next_offset() == 3
    assert store.checkpoint == 2


def test_the_undo_read_later_restores_the_values_before_the_unfinished_checkpoint() -> None:
    records: Records = [(b"a", b"1"), _marker(1), (b"a", b"2"), (b"b", b"3")]
    first = PartitionLog(_store())
    undo = first.end(_read(first, records), agreed=1)
    again = _store()
    second = PartitionLog(again)
    end = _read(second, [*records, *undo])
    assert second.end(end, agreed=1) == []
    assert dict(again.items()) == {b"a": b"1"}


def test_a_checkpoint_the_partitions_other_stores_did_not_finish_is_undone() -> None:
    """The KPI cells' changelog was written, then the kill came before the customer states':
    the cells go back to the checkpoint the customer states are at."""
    records: Records = [(b"a", b"1"), _marker(1), (b"a", b"2"), (b"b", b"3"), _marker(2)]
    store = _store()
    partition_log = PartitionLog(store)
    undo = partition_log.end(_read(partition_log, records), agreed=1)
    assert dict(store.items()) == {b"a": b"1"}
    assert store.checkpoint == 1
    assert undo == [(b"a", b"1"), (b"b", None), _marker(1)]
    # read again (the undo written after it), the log agrees and nothing more is undone
    again = _store()
    second = PartitionLog(again)
    assert second.end(_read(second, [*records, *undo]), agreed=1) == []
    assert dict(again.items()) == {b"a": b"1"}
    assert again.checkpoint == 1


def test_an_unfinished_checkpoint_after_the_one_undone_is_undone_too() -> None:
    store, partition_log, end = _read_all([(b"a", b"1"), _marker(4), (b"a", b"2"), _marker(5), (b"c", b"9")])
    assert partition_log.end(end, agreed=4) == [(b"a", b"1"), (b"c", None), _marker(4)]
    assert dict(store.items()) == {b"a": b"1"}


def test_a_store_at_the_agreed_checkpoint_keeps_it() -> None:
    store, partition_log, end = _read_all([(b"a", b"1"), _marker(6), (b"a", b"2"), _marker(7)])
    assert partition_log.end(end, agreed=7) == []
    assert dict(store.items()) == {b"a": b"2"}
    assert store.checkpoint == 7


def test_a_checkpoint_ahead_without_the_one_before_it_in_view_is_applied() -> None:
    """Undoing needs the values before the checkpoint: without the marker before it in the
    read, they are unknown, and the checkpoint is applied (logged) rather than guessed at."""
    store, partition_log, end = _read_all([(b"a", b"1"), _marker(3), (b"a", b"2"), _marker(4)])
    assert partition_log.end(end, agreed=1) == []
    assert dict(store.items()) == {b"a": b"2"}
    assert store.checkpoint == 4


def test_a_log_from_before_markers_is_applied_whole_then_marked() -> None:
    store, partition_log, end = _read_all([(b"a", b"1"), (b"b", b"2")])
    assert partition_log.end(end, agreed=None) == [_marker(0)]
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
    assert store.backend.next_offset() == 2


def test_an_empty_log_gets_a_first_marker_so_a_first_checkpoint_cut_short_is_undone() -> None:
    store = _store()
    first = PartitionLog(store)
    assert first.end(0, agreed=None) == [_marker(0)]
    assert store.checkpoint == 0
    # the first checkpoint's changes, cut short before their marker: undone, not applied
    again = PartitionLog(_store())
    end = _read(again, [_marker(0), (b"cell", b"1"), (b"cell2", b"1")])
    assert again.end(end, agreed=0) == [(b"cell", None), (b"cell2", None), _marker(0)]
    assert dict(again.store.items()) == {}


def test_a_kept_store_reads_from_inside_its_last_checkpoint() -> None:
    """A kept RocksDB store restarts at the first offset of the last batch it wrote: the
    rest of that checkpoint, its marker, then maybe an unfinished one."""
    store = _store()
    store.backend.write({b"a": b"1", b"b": b"2"}, 5)
    partition_log = PartitionLog(store)
    end = _read(partition_log, [(b"b", b"2"), _marker(1), (b"a", b"9")], first=5)
    assert partition_log.end(end, agreed=1) == [(b"a", b"1"), _marker(1)]
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}


def test_a_kept_store_one_checkpoint_ahead_is_brought_back_from_its_tail() -> None:
    store = _store()
    store.backend.write({b"a": b"1", b"b": b"2"}, 5)
    partition_log = PartitionLog(store)
    end = _read(partition_log, [(b"b", b"2"), _marker(8), (b"a", b"3"), _marker(9)], first=5)
    assert partition_log.end(end, agreed=8) == [(b"a", b"1"), _marker(8)]
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
    assert store.backend.next_offset() == 8  # the undone checkpoint's marker
