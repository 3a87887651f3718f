"""Reading a changelog partition back: a checkpoint's changes count only once their marker
is read; what follows the last marker (a checkpoint cut short by a kill) is undone with the
values the store held before it; a log written before markers existed is applied whole."""

from __future__ import annotations

from journeystream.runtime.changelog import CHECKPOINT_MARKER, PartitionLog
from journeystream.runtime.store import MemoryBackend, PartitionStore


def _read(partition_log: PartitionLog, records: list[tuple[bytes, bytes | None]], first: int = 0) -> int:
    for offset, (key, value) in enumerate(records, start=first):
        partition_log.read(key, value, offset)
    return first + len(records)


def _store() -> PartitionStore:
    return PartitionStore("kpi_cells", 0, MemoryBackend())


def test_an_unfinished_checkpoint_is_not_applied_and_is_undone() -> None:
    store = _store()
    partition_log = PartitionLog(store)
    end = _read(
        partition_log,
        [
            (b"cell", b"1"),
            (b"mark", b"m1"),
            (CHECKPOINT_MARKER, b"1"),  # finished
            (b"cell", b"2"),
            (b"other", b"x"),  # cut short: its marks never written
        ],
    )
    undo = partition_log.end(end)
    assert dict(store.items()) == {b"cell": b"1", b"mark": b"m1"}
    assert store.backend.next_offset() == 3  # after the marker: a restart reads the rest again
    assert undo == [(b"cell", b"1"), (b"other", None)]


def test_a_finished_log_is_applied_to_its_end() -> None:
    store = _store()
    partition_log = PartitionLog(store)
    end = _read(
        partition_log, [(b"a", b"1"), (CHECKPOINT_MARKER, b"1"), (b"a", None), (CHECKPOINT_MARKER, b"1")]
    )
    assert partition_log.end(end) == []
    assert dict(store.items()) == {}
    assert store.backend.next_offset() == 4


def test_the_undo_read_later_restores_the_values_before_the_unfinished_checkpoint() -> None:
    records: list[tuple[bytes, bytes | None]] = [
        (b"a", b"1"),
        (CHECKPOINT_MARKER, b"1"),
        (b"a", b"2"),
        (b"b", b"3"),
    ]
    first = PartitionLog(_store())
    undo = first.end(_read(first, records))
    again = _store()
    second = PartitionLog(again)
    end = _read(second, [*records, *undo, (CHECKPOINT_MARKER, b"1")])
    assert second.end(end) == []
    assert dict(again.items()) == {b"a": b"1"}


def test_a_log_from_before_markers_is_applied_whole() -> None:
    store = _store()
    partition_log = PartitionLog(store)
    assert partition_log.end(_read(partition_log, [(b"a", b"1"), (b"b", b"2")])) == []
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
    assert store.backend.next_offset() == 2


def test_a_kept_store_reads_from_inside_its_last_checkpoint() -> None:
    """A kept RocksDB store restarts at the first offset of the last batch it wrote: the
    rest of that checkpoint, its marker, then maybe an unfinished one."""
    store = _store()
    store.backend.write({b"a": b"1", b"b": b"2"}, 5)
    partition_log = PartitionLog(store)
    end = _read(partition_log, [(b"b", b"2"), (CHECKPOINT_MARKER, b"1"), (b"a", b"9")], first=5)
    assert partition_log.end(end) == [(b"a", b"1")]
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
