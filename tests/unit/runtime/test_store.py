"""Stores: staged changes are read at once, committed with the changelog offset they reach;
RocksDB keeps both across a reopen (a restart restores only the changelog tail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeystream.runtime.store import MemoryBackend, PartitionStore, RocksBackend, remove_unowned, state_dir


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PartitionStore:
    backend = MemoryBackend() if request.param == "memory" else RocksBackend(tmp_path / "customers-0")
    return PartitionStore("customers", 0, backend)


def test_staged_changes_are_read_before_they_are_committed(store: PartitionStore) -> None:
    store.commit({b"a": b"1", b"b": b"2"}, next_offset=5)
    store.stage({b"a": b"3", b"b": None})
    assert store.get(b"a") == b"3" and store.get(b"b") is None
    assert store.backend.get(b"a") == b"1"  # not durable yet
    staged = store.begin_write()
    assert store.get(b"a") == b"3"  # still readable while the checkpoint writes it
    store.commit(staged, next_offset=9)
    assert dict(store.items()) == {b"a": b"3"}
    assert store.backend.next_offset() == 9


def test_restored_records_apply_in_order(store: PartitionStore) -> None:
    store.restored([(b"k", b"1"), (b"k", b"2"), (b"x", b"9"), (b"x", None)], next_offset=4)
    assert dict(store.items()) == {b"k": b"2"}
    assert store.backend.next_offset() == 4


def test_rocksdb_keeps_values_and_offset_across_a_reopen(tmp_path: Path) -> None:
    first = RocksBackend(tmp_path / "links-2")
    first.write({b"anon": b'[[1,"c"]]'}, next_offset=42)
    first.close()
    second = RocksBackend(tmp_path / "links-2")
    assert second.get(b"anon") == b'[[1,"c"]]'
    assert second.next_offset() == 42
    second.clear()
    assert list(second.items()) == [] and second.next_offset() == 0
    second.close()


KEY = b"CUST-ERASED-KEY-77"


@pytest.mark.parametrize("flushed", [True, False], ids=["in-a-table-file", "in-the-log-only"])
def test_an_erased_keys_old_value_leaves_the_rocksdb_files(tmp_path: Path, flushed: bool) -> None:
    """A deletion only adds a tombstone; purge makes the erased value leave every file."""
    folder = tmp_path / "customers-1"
    backend = RocksBackend(folder)
    backend.write({b"k%d" % n: b"other customer %d" % n for n in range(500)}, next_offset=1)
    backend.write({KEY: b"state of CUST-ERASED-0042"}, next_offset=2)
    if flushed:
        backend._db.flush()  # the value in an SST file, not only in the write-ahead log
    backend.write({KEY: None}, next_offset=3)

    def files_holding_it() -> list[str]:
        needles = (b"CUST-ERASED-0042", KEY, KEY.hex().encode())  # the value, the key, as logged
        return [
            f.name for f in folder.rglob("*") if f.is_file() and any(n in f.read_bytes() for n in needles)
        ]

    assert files_holding_it()  # deleted, but still in the files
    backend.purge()
    assert files_holding_it() == []
    assert backend.get(KEY) is None and backend.get(b"k7") == b"other customer 7"
    backend.close()
    assert files_holding_it() == []


def _files_holding(folder: Path, key: bytes, value: bytes) -> list[str]:
    needles = (value, key, key.hex().encode())  # the value, the key, as RocksDB logs it
    return [f.name for f in folder.rglob("*") if f.is_file() and any(n in f.read_bytes() for n in needles)]


def test_a_destroyed_rocksdb_store_leaves_no_file(tmp_path: Path) -> None:
    backend = RocksBackend(tmp_path / "state" / "customers-3")
    backend.write({KEY: b"state of CUST-ERASED-0042"}, next_offset=7)
    backend.destroy()
    assert list((tmp_path / "state").iterdir()) == []


def test_only_the_stores_of_partitions_not_owned_are_removed(tmp_path: Path) -> None:
    for name, partition in [("customers", 0), ("customers", 1), ("kpi_cells", 1), ("links", 2)]:
        RocksBackend(state_dir(tmp_path) / f"{name}-{partition}").write({b"k": b"v"}, next_offset=1)
    (state_dir(tmp_path) / "customers-1.offset.tmp").write_text("3")  # a write cut short
    (state_dir(tmp_path) / "notes-1").mkdir()  # not a store of ours
    removed = remove_unowned(tmp_path, ("customers", "kpi_cells", "links"), {("customers", 0), ("links", 2)})
    assert removed == ["customers-1", "kpi_cells-1"]
    left = sorted(entry.name for entry in state_dir(tmp_path).iterdir())
    assert left == ["customers-0", "customers-0.offset", "links-2", "links-2.offset", "notes-1"]
    assert RocksBackend(state_dir(tmp_path) / "customers-0").get(b"k") == b"v"


def test_no_state_folder_means_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_unowned(tmp_path / "never-created", ("customers",), set()) == []


def test_a_deletion_read_in_a_restore_leaves_the_rocksdb_files(tmp_path: Path) -> None:
    """A copy that was not in use when the key was erased (its owner was down, or another
    worker owned the partition) learns the deletion from the changelog tail it restores."""
    folder = tmp_path / "customers-1"
    store = PartitionStore("customers", 1, RocksBackend(folder))
    store.commit({b"k%d" % n: b"other customer %d" % n for n in range(500)}, next_offset=1)
    store.commit({KEY: b"state of CUST-ERASED-0042"}, next_offset=2)
    store.backend._db.flush()  # type: ignore[attr-defined]  # in a table file, as after a long run
    store.restored([(b"k2", b"another"), (KEY, None)], next_offset=5)
    assert _files_holding(folder, KEY, b"CUST-ERASED-0042")  # deleted, but still in the files
    assert store.purge_restored_deletions() == 1
    assert _files_holding(folder, KEY, b"CUST-ERASED-0042") == []
    assert store.get(b"k1") == b"other customer 1" and store.get(b"k2") == b"another"
    assert store.purge_restored_deletions() == 0  # once
    store.backend.close()


def test_a_folder_without_its_offset_is_rebuilt_from_the_changelog_start(tmp_path: Path) -> None:
    """A deletion cut short by a crash removed the offset first: the folder left behind,
    whole or in part, is not trusted."""
    folder = tmp_path / "customers-2"
    backend = RocksBackend(folder)
    backend.write({b"k": b"v"}, next_offset=9)
    backend.close()
    folder.with_suffix(".offset").unlink()
    reopened = RocksBackend(folder)
    assert list(reopened.items()) == [] and reopened.next_offset() == 0
    reopened.close()
