"""A journey-stage partition's KPI cells restored from its store: cells and customer marks
come back as they were saved, another partition's values in the same store are left alone,
and facts counted before the crash are not counted again."""

from __future__ import annotations

from journeystream.core.facts import Fact
from journeystream.core.journeys import Origin
from journeystream.stages.effects import Effects
from journeystream.stages.kpicells import PartitionKpis, cell_store_key, mark_store_key
from tests.unit.test_kpis import MIN, PHONE, PHONE_FACTS, T0

HORIZON_MS = 2 * 86_400_000


def _origins(facts: list[Fact]) -> list[Origin | None]:
    """Each customer's facts numbered 1, 2, ... (facts without a customer: no origin)."""
    seqs: dict[str, int] = {}
    origins: list[Origin | None] = []
    for fact in facts:
        customer = getattr(fact, "customer_key", None)
        if customer is None:
            origins.append(None)
        else:
            seqs[customer] = seqs.get(customer, 0) + 1
            origins.append((customer, (T0 + seqs[customer]) * 1000))
    return origins


def _stored(kpis: PartitionKpis) -> dict[bytes, bytes]:
    changes = kpis.collect(T0 + MIN, 0, 0.0, Effects())
    return {key: value for key, value in changes.items() if value is not None}


def test_cells_and_marks_come_back_from_the_store_and_replayed_facts_are_skipped() -> None:
    origins = _origins(PHONE_FACTS)
    whole = PartitionKpis(1, HORIZON_MS)
    whole.add(PHONE_FACTS, origins)

    first = PartitionKpis(1, HORIZON_MS)
    first.add(PHONE_FACTS[:10], origins[:10])
    store = _stored(first)
    assert mark_store_key(1, "C1") in store and cell_store_key(1, PHONE) in store
    # the same store holds other partitions' values (partition 11 shares the leading "1")
    for other in (0, 11):
        store[cell_store_key(other, (T0, "web", "x", "y"))] = store[cell_store_key(1, PHONE)]
        store[mark_store_key(other, "C1")] = b"[null,[]]"
        store[mark_store_key(other, "C9")] = b"[1,[]]"

    second = PartitionKpis(1, HORIZON_MS, sorted(store.items()))
    assert len(second) == 1  # only this partition's cell
    assert second.accumulator.mark_state("C9") is None
    assert second.accumulator.snapshot()["marks"] == first.accumulator.snapshot()["marks"]
    # after a crash, the input is read again from before the saved cells: the facts they
    # counted already are skipped by their customers' marks
    second.add(PHONE_FACTS, origins)
    assert second.accumulator.cells() == whole.accumulator.cells()
