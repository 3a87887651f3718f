"""The group member's client id: a worker's processes get the same partitions at every start.
When a checkpoint is due: by the clock, the rows waiting, the customers changed."""

from __future__ import annotations

import uuid

from journeystream.config import Settings
from journeystream.runtime.driver import checkpoint_due, member_client_id


def test_a_workers_processes_sort_in_process_order_whatever_the_brokers_uuids() -> None:
    for _ in range(50):
        # the broker names a member `client_id-<uuid>`; the round-robin assignor sorts by it
        members = {f"{member_client_id(process)}-{uuid.uuid4()}": process for process in (2, 0, 1)}
        assert [members[member] for member in sorted(members)] == [0, 1, 2]


SETTINGS = Settings.from_env({})  # a checkpoint every 250 ms, every 5 s reading a backlog


def due(elapsed_ms: float, backlogged: bool = False, rows: int = 0, customers: int = 0) -> bool:
    return checkpoint_due(
        SETTINGS, elapsed_ms=elapsed_ms, backlogged=backlogged, pending_rows=rows, changed_customers=customers
    )


def test_a_checkpoint_is_due_by_the_clock_sooner_when_caught_up() -> None:
    assert SETTINGS.sink_flush_ms < SETTINGS.checkpoint_backlog_ms
    assert not due(SETTINGS.sink_flush_ms - 1)
    assert due(SETTINGS.sink_flush_ms)
    assert not due(SETTINGS.checkpoint_backlog_ms - 1, backlogged=True)
    assert due(SETTINGS.checkpoint_backlog_ms, backlogged=True)


def test_a_checkpoint_is_due_early_when_the_rows_waiting_reach_their_bound() -> None:
    assert not due(0, rows=SETTINGS.sink_batch_rows - 1)
    assert due(0, rows=SETTINGS.sink_batch_rows)
    # reading a backlog, the bound grows with the interval
    backlog_rows = SETTINGS.sink_batch_rows * SETTINGS.checkpoint_backlog_ms // SETTINGS.sink_flush_ms
    assert not due(0, backlogged=True, rows=backlog_rows - 1)
    assert due(0, backlogged=True, rows=backlog_rows)


def test_a_checkpoint_is_due_early_when_many_customers_changed_even_reading_a_backlog() -> None:
    # changed customers are live objects until their state is written
    assert not due(0, backlogged=True, customers=SETTINGS.checkpoint_customers - 1)
    assert due(0, backlogged=True, customers=SETTINGS.checkpoint_customers)
    assert due(0, customers=SETTINGS.checkpoint_customers)
