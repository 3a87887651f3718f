"""What a worker keeps of its partitions across rebalances: the stores of partitions assigned
again (only their changelog tail is read), nothing of the others (their new owner's erasures
would not reach a copy left here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.metrics import Metrics
from journeystream.runtime.assignment import Assignment


def _assignment(tmp_path: Path, store: str) -> Assignment:
    settings = Settings.from_env(
        {
            "JOURNEYSTREAM_PARTITIONS": "4",
            "JOURNEYSTREAM_APP_ID": "app",
            "JOURNEYSTREAM_STORE": store,
            "JOURNEYSTREAM_DATA_DIR": str(tmp_path / "data"),
        }
    )
    return Assignment.empty(settings, Metrics(CollectorRegistry()))


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_new_assignment_deletes_the_state_of_partitions_now_elsewhere(tmp_path: Path, store: str) -> None:
    assignment = _assignment(tmp_path, store)
    topology = assignment.topology
    held = [TopicPartition(topology.by_customer, p) for p in range(4)] + [
        TopicPartition(topology.by_device, 1)
    ]
    for tp in held:
        for partition_store in assignment.stores_of(tp):
            partition_store.commit({b"CUST-1": b"state"}, next_offset=1)
    kept = {TopicPartition(topology.by_customer, 0), TopicPartition(topology.by_device, 1)}
    interactions = TopicPartition(topology.interactions, 2)  # no store of its own

    deleted = assignment.keep_only({*kept, interactions})

    assert deleted == [
        "customers-1",
        "customers-2",
        "customers-3",
        "kpi_cells-1",
        "kpi_cells-2",
        "kpi_cells-3",
    ]
    assert sorted(assignment.stores) == [("customers", 0), ("kpi_cells", 0), ("links", 1)]
    assert assignment.store("customers", 0).get(b"CUST-1") == b"state"  # assigned again: kept
    assert assignment.store("customers", 2).get(b"CUST-1") is None  # back later: restored afresh
    if store == "rocksdb://":
        on_disk = sorted(entry.name for entry in (tmp_path / "data" / "state").iterdir() if entry.is_dir())
        assert on_disk == [
            "customers-0",
            "customers-2",
            "kpi_cells-0",
            "links-1",
        ]  # customers-2: just reopened


def test_copies_left_on_disk_by_an_earlier_run_go_at_the_first_assignment(tmp_path: Path) -> None:
    earlier = _assignment(tmp_path, "rocksdb://")
    for partition in range(4):
        earlier.stores_of(TopicPartition(earlier.topology.by_customer, partition))
    for partition_store in earlier.stores.values():
        partition_store.backend.close()

    assignment = _assignment(tmp_path, "rocksdb://")  # a restart: nothing opened yet
    deleted = assignment.keep_only({TopicPartition(assignment.topology.by_customer, 3)})

    assert deleted == [
        "customers-0",
        "customers-1",
        "customers-2",
        "kpi_cells-0",
        "kpi_cells-1",
        "kpi_cells-2",
    ]
    left = sorted(entry.name for entry in (tmp_path / "data" / "state").iterdir())
    assert left == ["customers-3", "kpi_cells-3"]  # never written: no offset file yet
