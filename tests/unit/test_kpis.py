"""KPI counting (SPEC §3): attribution to cells, every counter and rate against hand-computed
values, window bounds, merge laws, snapshot/restore and wait quantiles."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeystream.core import kpis
from journeystream.core.config import RulesConfig
from journeystream.core.decode import decode
from journeystream.core.events import ChannelKinds, Event
from journeystream.core.facts import (
    AppliedEvent,
    Fact,
    Irritant,
    JourneyClosed,
    JourneyRecord,
    JourneyStarted,
    SessionEnded,
)
from journeystream.core.kpis import (
    COUNTER_FIELDS,
    METRICS,
    WAIT_BUCKETS_S,
    KpiAccumulator,
    KpiCounts,
    contributions,
    merge,
    minute_of,
    rollup,
    wait_bucket_index,
    wait_quantile,
)
from journeystream.core.pipeline import LocalPipeline
from journeystream.simulate import SimConfig, generate

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole minute
MIN = 60_000
KINDS = ChannelKinds()
PHONE: kpis.CellKey = (T0, "phone", "billing", "premium")
WEB: kpis.CellKey = (T0, "web", "billing", "premium")


def applied(
    n: int,
    event_type: str,
    customer: str,
    channel: str = "phone",
    at: int = T0 + 1_000,
    late: bool = False,
    journey: str = "billing",
    segment: str = "premium",
    **attributes: Any,
) -> AppliedEvent:
    event = Event(
        event_id=f"e{n}",
        occurred_at=at,
        channel=channel,
        type=event_type,
        customer_id=customer,
        attributes=attributes,
    )
    return AppliedEvent(event, customer, f"j-{customer}", journey, segment, late)


def irritant(kind: str, n: int, channel: str = "phone", at: int = T0 + 2_000) -> Irritant:
    return Irritant(f"i{n}", kind, "C3", "j-C3", "billing", "premium", channel, at, (f"e{n}",))


def closed(status: str, channel_count: int, inbound: int, at: int = T0 + 3_000) -> JourneyClosed:
    return JourneyClosed("j", "billing", "premium", "phone", status, at, channel_count, inbound)


def session(events: int, at: int = T0 + 4_000) -> SessionEnded:
    return SessionEnded("s", "C1", "billing", "premium", "web", at, events)


PHONE_FACTS: list[Fact] = [
    applied(1, "contact_start", "C1"),
    applied(2, "contact_start", "C2", direction="outbound"),
    applied(3, "contact_start", "C3", direction="inbound"),
    applied(4, "contact_answered", "C1", wait_s=45),
    applied(5, "contact_abandoned", "C3", wait_s=400),
    applied(6, "contact_answered", "C2"),
    applied(7, "contact_end", "C1", handle_s=300, resolved=True),
    applied(8, "contact_end", "C2", handle_s=120.5, resolved=False),
    applied(9, "survey", "C1", nps=10, ces=2, csat=5),
    applied(10, "survey", "C3", nps=7),
    applied(11, "survey", "C3", late=True, nps=3, ces=6),
    applied(12, "survey", "C2", nps=9),
    *(
        irritant(kind, 20 + i)
        for i, kind in enumerate(
            [
                "abandonment",
                "contact_abandoned",
                "repeat_contact_after_web",
                "repeat_contact",
                "long_wait",
                "complaint",
                "complaint",
                "detractor",
                "high_effort",
            ]
        )
    ),
    JourneyStarted("j", "billing", "premium", "phone", T0 + 5_000),
    closed("completed", channel_count=2, inbound=1),
    closed("completed", channel_count=1, inbound=0),
    closed("abandoned", channel_count=3, inbound=0),
    closed("cancelled", channel_count=1, inbound=0),
    closed("expired", channel_count=2, inbound=0),
]

# Worked out by hand from PHONE_FACTS: 12 events from C1, C2, C3; inbound contacts = e1 and
# e3 (e2 is outbound); waits 45 s (bucket (30,60], index 4) and 400 s (bucket (300,600],
# index 8); handle 300 + 120.5; NPS 10, 7, 3, 9 -> 2 promoters, 1 detractor; CES 2 + 6.
PHONE_EXPECTED: dict[str, Any] = {
    "events": 12,
    "customers": 3,
    "journeys_started": 1,
    "journeys_completed": 2,
    "journeys_abandoned": 1,
    "journeys_cancelled": 1,
    "journeys_expired": 1,
    "inbound_contacts": 2,
    "contacts_answered": 2,
    "contacts_abandoned": 1,
    "wait_sum_s": 445.0,
    "wait_count": 2,
    "wait_buckets": [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0],
    "handle_sum_s": 420.5,
    "handle_count": 2,
    "resolved_contacts": 1,
    "irritant_abandonment": 1,
    "irritant_contact_abandoned": 1,
    "irritant_repeat_contact_after_web": 1,
    "irritant_repeat_contact": 1,
    "irritant_long_wait": 1,
    "irritant_complaint": 2,
    "irritant_detractor": 1,
    "irritant_high_effort": 1,
    "nps_responses": 4,
    "nps_promoters": 2,
    "nps_detractors": 1,
    "ces_sum": 8.0,
    "ces_count": 2,
    "csat_sum": 5.0,
    "csat_count": 1,
    "closed_journeys_multichannel": 3,
    "completed_without_assisted": 1,
    "digital_sessions": 0,
    "bounced_sessions": 0,
    "late_events": 1,
}

WEB_FACTS: list[Fact] = [
    applied(30, "page_view", "C1", channel="web", page="/bill"),
    applied(31, "contact_start", "C1", channel="web"),  # web is not assisted: no inbound contact
    session(1),
    session(4),
    session(1),
]
WEB_EXPECTED = {"events": 2, "customers": 1, "digital_sessions": 3, "bounced_sessions": 2}


def accumulate(*facts: Fact) -> dict[kpis.CellKey, KpiCounts]:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add_many(facts)
    return dict(accumulator.cells())


def counts_of(**values: Any) -> KpiCounts:
    return KpiCounts(**values)


# -- minutes and cells ---------------------------------------------------------------------


def test_minute_of_floors_including_before_1970() -> None:
    assert minute_of(T0) == T0
    assert minute_of(T0 + 59_999) == T0
    assert minute_of(T0 + 60_000) == T0 + MIN
    assert minute_of(-1) == -MIN
    assert minute_of(-MIN) == -MIN


def test_every_counter_of_the_phone_cell() -> None:
    cells = accumulate(*PHONE_FACTS)
    assert set(cells) == {PHONE}
    assert cells[PHONE].as_dict() == PHONE_EXPECTED


def test_web_cell_sessions_and_non_assisted_contact() -> None:
    cells = accumulate(*WEB_FACTS)
    assert set(cells) == {WEB}
    assert cells[WEB] == counts_of(**WEB_EXPECTED)


def test_event_counts_on_resolved_journey_and_segment_not_raw_fields() -> None:
    fact = applied(
        1, "page_view", "C1", channel="web", at=T0 + 61_500, journey="unspecified", segment="unknown"
    )
    assert fact.event.journey is None and fact.event.segment is None
    assert contributions(fact, KINDS) == [((T0 + MIN, "web", "unspecified", "unknown"), "events", 1)]


def test_journey_start_and_close_count_at_their_own_minute_and_channel() -> None:
    started = JourneyStarted("j", "claim", "std", "web", T0 + 10_000)
    ended = JourneyClosed("j", "claim", "std", "phone", "abandoned", T0 + 30 * MIN + 5_000, 2, 1)
    assert contributions(started, KINDS) == [((T0, "web", "claim", "std"), "journeys_started", 1)]
    assert contributions(ended, KINDS) == [
        ((T0 + 30 * MIN, "phone", "claim", "std"), "journeys_abandoned", 1),
        ((T0 + 30 * MIN, "phone", "claim", "std"), "closed_journeys_multichannel", 1),
    ]


def test_irritant_counts_at_its_own_time_and_channel() -> None:
    assert contributions(irritant("complaint", 1, channel="email", at=T0 + 3 * MIN + 1), KINDS) == [
        ((T0 + 3 * MIN, "email", "billing", "premium"), "irritant_complaint", 1)
    ]


def test_configured_channel_kinds_decide_inbound_contacts() -> None:
    chat_only = ChannelKinds(assisted=frozenset({"chat"}))
    phone_call = applied(1, "contact_start", "C1", channel="phone")
    assert [name for _, name, _ in contributions(phone_call, chat_only)] == ["events"]
    assert [name for _, name, _ in contributions(phone_call, KINDS)] == ["events", "inbound_contacts"]


def test_journey_record_contributes_nothing() -> None:
    record = JourneyRecord(
        "j", "C1", "claim", "std", "open", T0, T0, None, 1, ("web",), 0, 0, 0, 0, 1, "web", "web"
    )
    assert contributions(record, KINDS) == []


def test_unknown_irritant_kind_and_open_closure_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        contributions(irritant("sneeze", 1), KINDS)
    with pytest.raises(ValueError, match="not a closed status"):
        contributions(closed("open", 1, 0), KINDS)


# -- rates ---------------------------------------------------------------------------------


def test_every_rate_on_the_phone_cell() -> None:
    c = accumulate(*PHONE_FACTS)[PHONE]
    assert kpis.abandonment_rate(c) == pytest.approx(1 / 4)  # 1 / (2 completed + 1 + 1 cancelled)
    assert kpis.completion_rate(c) == pytest.approx(2 / 4)
    assert kpis.contact_abandonment_rate(c) == pytest.approx(1 / 3)  # 1 / (2 answered + 1)
    assert kpis.failure_demand_rate(c) == pytest.approx(1 / 2)  # 1 / 2 inbound contacts
    assert kpis.repeat_contact_rate(c) == pytest.approx(1 / 2)
    assert kpis.digital_containment(c) == pytest.approx(1 / 2)  # 1 of 2 completed without contact
    assert kpis.cross_channel_share(c) == pytest.approx(3 / 5)  # 3 multichannel of 5 closed
    assert kpis.nps(c) == pytest.approx(25.0)  # (2 - 1) / 4 × 100
    assert kpis.avg_ces(c) == pytest.approx(4.0)
    assert kpis.avg_csat(c) == pytest.approx(5.0)
    assert kpis.avg_wait_s(c) == pytest.approx(222.5)
    assert kpis.avg_handle_s(c) == pytest.approx(210.25)
    assert kpis.long_wait_rate(c) == pytest.approx(1 / 3)
    assert kpis.bounce_rate(c) is None  # no digital session on the phone cell


def test_bounce_rate_on_the_web_cell() -> None:
    assert kpis.bounce_rate(accumulate(*WEB_FACTS)[WEB]) == pytest.approx(2 / 3)


RATE_FUNCTIONS = [
    "abandonment_rate",
    "completion_rate",
    "contact_abandonment_rate",
    "failure_demand_rate",
    "repeat_contact_rate",
    "digital_containment",
    "cross_channel_share",
    "nps",
    "avg_ces",
    "avg_csat",
    "avg_wait_s",
    "avg_handle_s",
    "bounce_rate",
    "long_wait_rate",
]


@pytest.mark.parametrize("name", RATE_FUNCTIONS)
def test_rates_are_none_without_denominator(name: str) -> None:
    assert getattr(kpis, name)(KpiCounts()) is None
    assert METRICS[name].value(KpiCounts()) is None
    assert METRICS[name].volume(KpiCounts()) == 0


@pytest.mark.parametrize("name", RATE_FUNCTIONS)
def test_metric_registry_agrees_with_rate_functions(name: str) -> None:
    c = merge(accumulate(*PHONE_FACTS)[PHONE], accumulate(*WEB_FACTS)[WEB])
    assert METRICS[name].is_rate
    assert METRICS[name].value(c) == pytest.approx(getattr(kpis, name)(c))


def test_metric_denominators_by_hand() -> None:
    c = accumulate(*PHONE_FACTS)[PHONE]
    assert METRICS["abandonment_rate"].volume(c) == 4
    assert METRICS["contact_abandonment_rate"].volume(c) == 3
    assert METRICS["failure_demand_rate"].volume(c) == 2
    assert METRICS["cross_channel_share"].volume(c) == 5
    assert METRICS["nps"].volume(c) == 4


def test_counters_are_metrics_without_denominator_except_customers() -> None:
    assert "customers" not in METRICS  # summed over cells it would not be a distinct count
    assert {name for name, metric in METRICS.items() if not metric.is_rate} == set(COUNTER_FIELDS) - {
        "customers"
    }
    c = accumulate(*PHONE_FACTS)[PHONE]
    assert METRICS["irritant_complaint"].value(c) == 2.0
    assert METRICS["wait_sum_s"].value(c) == 445.0
    assert METRICS["events"].volume(c) is None


# -- roll-up and windows -------------------------------------------------------------------


def test_rollup_window_is_half_open() -> None:
    facts = [
        applied(1, "page_view", "C1", channel="web", at=T0),  # exactly at start: included
        applied(2, "page_view", "C2", channel="web", at=T0 + MIN - 1),
        applied(3, "page_view", "C3", channel="web", at=T0 + 2 * MIN),  # exactly at end: excluded
        applied(4, "page_view", "C4", channel="web", at=T0 - 1),  # before start: excluded
    ]
    cells = accumulate(*facts).items()
    assert rollup(cells, T0, T0 + 2 * MIN).events == 2
    assert rollup(cells, T0 - MIN, T0 + 3 * MIN).events == 4
    assert rollup(cells, T0 + 2 * MIN, T0 + 3 * MIN).events == 1


def test_rollup_filters_and_sums_customers_per_cell() -> None:
    facts = [
        applied(1, "page_view", "C1", channel="web"),
        applied(2, "page_view", "C1", channel="web", at=T0 + MIN),
        applied(3, "contact_start", "C1", channel="phone", journey="claim"),
        applied(4, "page_view", "C2", channel="web", segment="std"),
    ]
    cells = list(accumulate(*facts).items())
    everything = rollup(cells, T0, T0 + 2 * MIN)
    assert (everything.events, everything.customers) == (4, 4)  # C1 in 3 cells counts 3 times
    assert rollup(cells, T0, T0 + 2 * MIN, channel="web").events == 3
    assert rollup(cells, T0, T0 + 2 * MIN, journey="claim").inbound_contacts == 1
    assert rollup(cells, T0, T0 + 2 * MIN, channel="web", segment="premium").events == 2
    assert rollup(cells, T0, T0 + 2 * MIN, channel="sms") == KpiCounts()


# -- accumulator ---------------------------------------------------------------------------


def test_distinct_customers_per_cell() -> None:
    cells = accumulate(
        applied(1, "page_view", "C1", channel="web"),
        applied(2, "page_view", "C1", channel="web"),
        applied(3, "page_view", "C2", channel="web"),
    )
    assert (cells[WEB].events, cells[WEB].customers) == (3, 2)


def test_pop_dirty_returns_full_counts_of_changed_cells_once() -> None:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add_many(WEB_FACTS)
    accumulator.add(applied(1, "contact_start", "C1"))
    assert [key for key, _ in accumulator.pop_dirty()] == [PHONE, WEB]
    assert accumulator.pop_dirty() == []
    accumulator.add(applied(2, "page_view", "C9", channel="web"))
    dirty = accumulator.pop_dirty()
    assert [(key, c.events, c.customers) for key, c in dirty] == [(WEB, 3, 2)]  # totals, not deltas
    accumulator.add(applied(3, "page_view", "C8", channel="web"))
    assert dirty[0][1].events == 3  # returned counts are copies


def test_evict_drops_old_cells() -> None:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add(applied(1, "page_view", "C1", channel="web", at=T0))
    accumulator.add(applied(2, "page_view", "C1", channel="web", at=T0 + MIN))
    assert accumulator.evict(T0 + MIN) == 1
    assert [key[0] for key, _ in accumulator.cells()] == [T0 + MIN]
    assert [key[0] for key, _ in accumulator.pop_dirty()] == [T0 + MIN]


def test_snapshot_round_trips_through_json() -> None:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add_many(PHONE_FACTS)
    accumulator.pop_dirty()
    accumulator.add_many(WEB_FACTS)
    restored = KpiAccumulator.restore(json.loads(json.dumps(accumulator.snapshot())), KINDS)
    assert restored.cells() == accumulator.cells()
    assert restored.snapshot() == accumulator.snapshot()
    assert [key for key, _ in restored.pop_dirty()] == [WEB]  # unflushed changes survive
    restored.add(applied(40, "page_view", "C1", channel="web"))  # C1 already seen in that cell
    assert dict(restored.cells())[WEB].customers == 1


def test_restore_refuses_unknown_versions_and_fields() -> None:
    with pytest.raises(ValueError, match="version"):
        KpiAccumulator.restore({"version": 99, "cells": [], "dirty": []})
    with pytest.raises(ValueError, match="unknown KPI fields"):
        KpiCounts.from_dict({"events": 1, "bogus": 2})


# -- merge laws ----------------------------------------------------------------------------

_FLOAT_FIELDS = {f.name for f in fields(KpiCounts) if isinstance(getattr(KpiCounts(), f.name), float)}
counts_strategy = st.builds(
    lambda values, buckets: KpiCounts(**values, wait_buckets=buckets),
    st.fixed_dictionaries(
        {
            # whole-number sums keep float addition exact, so the laws can be checked with ==
            name: st.integers(0, 10**6).map(float) if name in _FLOAT_FIELDS else st.integers(0, 10**6)
            for name in COUNTER_FIELDS
        }
    ),
    st.lists(st.integers(0, 1000), min_size=len(WAIT_BUCKETS_S), max_size=len(WAIT_BUCKETS_S)),
)


@given(counts_strategy, counts_strategy, counts_strategy)
def test_merge_is_associative(a: KpiCounts, b: KpiCounts, c: KpiCounts) -> None:
    assert merge(a, merge(b, c)) == merge(merge(a, b), c)


@given(counts_strategy, counts_strategy)
def test_merge_is_commutative_and_pure(a: KpiCounts, b: KpiCounts) -> None:
    before = (a.as_dict(), b.as_dict())
    assert merge(a, b) == merge(b, a)
    assert (a.as_dict(), b.as_dict()) == before


@given(counts_strategy)
def test_init_is_the_identity(a: KpiCounts) -> None:
    assert merge(a, kpis.init()) == a
    assert KpiCounts.from_dict(json.loads(json.dumps(a.as_dict()))) == a


# -- wait histogram ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait_s", "index"), [(0, 0), (0.5, 1), (10, 1), (10.01, 2), (300, 7), (300.5, 8), (1200, 9), (5000, 10)]
)
def test_wait_bucket_index_uses_inclusive_upper_bounds(wait_s: float, index: int) -> None:
    assert wait_bucket_index(wait_s) == index


def buckets(**by_index: int) -> list[int]:
    counts = [0] * len(WAIT_BUCKETS_S)
    for key, count in by_index.items():
        counts[int(key.removeprefix("b"))] = count
    return counts


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        (buckets(b4=10), 0.5, 45.0),  # rank 5 of 10 in (30, 60]: 30 + 30 × 5/10
        (buckets(b1=10, b2=10), 0.5, 10.0),  # rank 10 ends bucket (0, 10]
        (buckets(b1=10, b2=10), 0.75, 15.0),  # rank 15: 10 + 10 × 5/10
        (buckets(b1=10, b2=10), 0.0, 0.0),
        (buckets(b0=4), 0.5, 0.0),  # all waits were 0
        (buckets(b7=3, b10=1), 0.5, 260.0),  # rank 2 of 4, in (180, 300] holding 3: 180 + 120 × 2/3
        (buckets(b7=3, b10=1), 1.0, 1200.0),  # in +Inf: the highest finite bound
    ],
)
def test_wait_quantile_on_known_histograms(counts: list[int], q: float, expected: float) -> None:
    assert wait_quantile(counts, q) == pytest.approx(expected)


def test_wait_quantile_after_merge_and_edge_cases() -> None:
    merged = merge(KpiCounts(wait_buckets=buckets(b1=10)), KpiCounts(wait_buckets=buckets(b2=10)))
    assert wait_quantile(merged.wait_buckets, 0.75) == pytest.approx(15.0)
    assert wait_quantile(buckets(), 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        wait_quantile(buckets(b1=1), 1.5)


# -- versions, persistence per cell, the horizon ------------------------------------------


def test_cell_version_counts_facts_by_hand() -> None:
    # PHONE_FACTS: 12 events + 9 irritants + 1 start + 5 closures = 27 facts in the phone cell
    (counts,) = accumulate(*PHONE_FACTS).values()
    assert kpis.cell_version(counts) == 27
    # WEB_FACTS: 2 events + 3 sessions
    assert kpis.cell_version(accumulate(*WEB_FACTS)[WEB]) == 5


def test_cell_version_grows_with_every_fact() -> None:
    accumulator = KpiAccumulator(KINDS)
    versions = []
    for fact in PHONE_FACTS:
        accumulator.add(fact)
        versions.append(kpis.cell_version(dict(accumulator.cells())[PHONE]))
    assert versions == list(range(1, len(PHONE_FACTS) + 1))


def test_a_cell_saved_and_loaded_counts_on_identically() -> None:
    whole = KpiAccumulator(KINDS)
    whole.add_many(PHONE_FACTS)
    first = KpiAccumulator(KINDS)
    first.add_many(PHONE_FACTS[:10])
    saved = json.loads(json.dumps(first.cell_state(PHONE)))
    marks = json.loads(json.dumps(first.pop_dirty_marks()))
    assert sorted(marks) == ["C1", "C2", "C3"]  # per customer, not per cell: values stay small
    second = KpiAccumulator(KINDS)
    second.load_cell(PHONE, saved)
    for customer, mark in marks.items():
        second.load_mark(customer, mark)
    assert second.pop_dirty() == []  # loaded from the store: nothing to write again
    second.add_many(PHONE_FACTS[10:])
    assert second.cells() == whole.cells()
    assert second.cells()[0][1].customers == 3  # the distinct customers survived the trip


def test_facts_for_evicted_minutes_are_refused_and_counted() -> None:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add(applied(1, "page_view", "C1", at=T0 + 1_000))
    accumulator.add(applied(2, "page_view", "C1", at=T0 + MIN + 1_000))
    assert accumulator.evicted_keys(T0 + MIN) == [(T0, "phone", "billing", "premium")]
    assert accumulator.evict(T0 + MIN) == 1
    accumulator.pop_dirty()
    accumulator.add(applied(3, "page_view", "C2", at=T0 + 2_000))  # late, into the evicted minute
    accumulator.add(applied(4, "page_view", "C2", at=T0 + MIN + 2_000))
    assert accumulator.too_late == 1
    assert [(key[0], counts.events, counts.customers) for key, counts in accumulator.cells()] == [
        (T0 + MIN, 2, 2)
    ]
    assert len(accumulator) == 1


def test_customer_marks_are_forgotten_with_their_minutes() -> None:
    accumulator = KpiAccumulator(KINDS)
    accumulator.add(applied(1, "page_view", "C1", at=T0 + 1_000), origin=("C1", (T0 + 1_000) * 1000))
    accumulator.add(applied(2, "page_view", "C2", at=T0 + 5 * MIN), origin=("C2", (T0 + 5 * MIN) * 1000))
    assert set(accumulator.pop_dirty_marks()) == {"C1", "C2"}
    accumulator.evict(T0 + 2 * MIN)
    assert accumulator.pop_dirty_marks() == {"C1": None}  # C2's minute is still held
    # a replay of C2's fact is still recognised; C1's would be too late anyway
    accumulator.add(applied(2, "page_view", "C2", at=T0 + 5 * MIN), origin=("C2", (T0 + 5 * MIN) * 1000))
    assert accumulator.replayed == 1


def test_a_customer_counts_once_per_cell_across_many_cells_in_either_form() -> None:
    """A mark holds its cells in a tuple while they are few, a set beyond SMALL_MARK: in
    either form a customer counts once per cell, and its stored state round-trips."""
    many = kpis.SMALL_MARK * 3
    facts = [applied(n, "page_view", "C1", channel="web", at=T0 + n * MIN) for n in range(many)]
    for batched in (False, True):
        accumulator = KpiAccumulator(KINDS)
        for _ in range(2):  # the same events twice (no origins): customers still counted once
            if batched:
                accumulator.add_many(facts)
            else:
                for fact in facts:
                    accumulator.add(fact)
        cells = dict(accumulator.cells())
        assert len(cells) == many
        assert {(counts.events, counts.customers) for counts in cells.values()} == {(2, 1)}
        state = accumulator.mark_state("C1")
        assert state is not None and len(state[1]) == many
        restored = KpiAccumulator(KINDS)
        restored.load_mark("C1", orjson.loads(orjson.dumps(state)))
        assert restored.mark_state("C1") == state
        accumulator.evict(T0 + (many - 2) * MIN)  # back to a few cells: a tuple again
        assert accumulator.mark_state("C1") == [
            None,
            [[T0 + n * MIN, "web", "billing", "premium"] for n in (many - 2, many - 1)],
        ]
        accumulator.add_many([applied(99, "page_view", "C1", channel="web", at=T0 + (many - 1) * MIN)])
        assert dict(accumulator.cells())[(T0 + (many - 1) * MIN, "web", "billing", "premium")].customers == 1


def test_restored_marks_share_one_key_per_cell() -> None:
    """A million restored marks must not each hold a cell tuple and three strings of their
    own: marks naming the same cell share one key."""
    stored = [(f"C{n}", [n, [[T0, "web", "billing", "premium"]]]) for n in range(3)]
    accumulator = KpiAccumulator(KINDS)
    accumulator.load_marks(orjson.loads(orjson.dumps(stored)))
    keys = [next(iter(accumulator._marks[f"C{n}"].cells)) for n in range(3)]
    assert keys[0] == WEB
    assert keys[0] is keys[1] is keys[2]


def test_add_many_counts_a_batch_as_add_does_one_fact_at_a_time() -> None:
    config = SimConfig(seed=11, customers=300, events=6000, duplicate_share=0.02, max_disorder_ms=20_000)
    pipeline = LocalPipeline(RulesConfig())
    batches = []
    for count, message in enumerate(generate(config), 1):
        event = decode(message.value)
        if isinstance(event, Event):
            pipeline.feed(event)
        if count % 250 == 0:
            out = pipeline.engine.drain()
            batches.append((out.facts, out.origins))
    pipeline.advance(2**61)
    out = pipeline.engine.drain()
    batches.append((out.facts, out.origins))
    one, many = KpiAccumulator(), KpiAccumulator()
    for index, (facts, origins) in enumerate(batches):
        if index == len(batches) // 2:  # a floor: some facts come too late for their cell
            floor = min(key[0] for key, _ in one.cells()) + 10 * 60_000
            one.evict(floor)
            many.evict(floor)
        replay = index % 5 == 4  # a batch counted again (a crash replay): skipped by origin
        for _ in range(2 if replay else 1):
            for fact, origin in zip(facts, origins, strict=True):
                one.add(fact, origin)
            many.add_many(facts, origins)
    assert one.snapshot() == many.snapshot()
    assert (one.too_late, one.replayed) == (many.too_late, many.replayed)
    assert one.too_late > 0 and one.replayed > 0
    assert one.pop_dirty() == many.pop_dirty()
