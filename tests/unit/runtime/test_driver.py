"""The group member's client id: a worker's processes get the same partitions at every start."""

from __future__ import annotations

import uuid

from journeystream.runtime.driver import member_client_id


def test_a_workers_processes_sort_in_process_order_whatever_the_brokers_uuids() -> None:
    for _ in range(50):
        # the broker names a member `client_id-<uuid>`; the round-robin assignor sorts by it
        members = {f"{member_client_id(process)}-{uuid.uuid4()}": process for process in (2, 0, 1)}
        assert [members[member] for member in sorted(members)] == [0, 1, 2]
