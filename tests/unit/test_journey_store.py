"""The engine with a backing store, as the worker runs it: states are written at flushes
and loaded lazily; a key changed since the last flush must never be reloaded stale."""

from __future__ import annotations

import json

from journeystream.core.config import DAY_MS, RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import AppliedEvent, JourneyRecord
from journeystream.core.ids import journey_id
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload, MergeRequest
from journeystream.core.kpis import KpiAccumulator

T0 = 1_700_000_000_000


def page_view(event_id: str, at: int) -> KeyedEvent:
    return KeyedEvent("C1", Event(event_id, at, "web", "page_view", customer_id="C1"))


def flush(engine: JourneyEngine, store: dict[str, bytes]) -> None:
    for key, value in engine.dirty_states().items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def records(engine: JourneyEngine) -> dict[str, JourneyRecord]:
    return {f.journey_id: f for f in engine.drain().facts if isinstance(f, JourneyRecord)}


def test_a_state_deleted_but_not_yet_flushed_is_not_reloaded_from_the_store() -> None:
    store: dict[str, bytes] = {}
    engine = JourneyEngine(RulesConfig(), ["A"], load=store.get)
    engine.push(page_view("e1", T0))
    engine.observe("A", T0 + 1)
    flush(engine, store)  # the store now holds C1 with an open journey
    first = journey_id("C1", "unspecified", "e1")
    assert records(engine)[first].status == "open"

    # two days later everything of C1 has lapsed: the journey expires, the state empties
    engine.observe("A", T0 + 2 * DAY_MS)
    assert records(engine)[first].status == "expired"
    assert "C1" in store  # its deletion is not flushed yet

    # a new event of C1 before that flush: a new journey, not the stale stored one
    engine.push(page_view("e2", T0 + 2 * DAY_MS + 10))
    engine.observe("A", T0 + 2 * DAY_MS + 20)
    touched = records(engine)
    second = journey_id("C1", "unspecified", "e2")
    assert first not in touched
    assert touched[second].status == "open"
    assert touched[second].event_count == 1


def test_states_reload_from_the_store_after_a_restart() -> None:
    store: dict[str, bytes] = {}
    engine = JourneyEngine(RulesConfig(), ["A"], load=store.get)
    engine.push(page_view("e1", T0))
    engine.observe("A", T0 + 1)
    flush(engine, store)
    restarted = JourneyEngine(RulesConfig(), ["A"], load=store.get)
    for key, value in store.items():
        restarted.restore(key, value)
    restarted.push(page_view("e2", T0 + 60_000))
    restarted.push(page_view("e1", T0))  # a re-delivered event: already applied before the restart
    restarted.observe("A", T0 + 120_000)
    journey = records(restarted)[journey_id("C1", "unspecified", "e1")]
    assert journey.event_count == 2


def test_an_id_old_in_event_time_is_still_deduplicated_while_few_events_were_applied_since() -> None:
    """After a crash, input is delivered again by offset: in a fast catch-up that can span
    more event time than the dedup window. Ids are kept for dedup_min_items applied events."""
    engine = JourneyEngine(RulesConfig(dedup_min_items=10), ["A"])
    engine.push(page_view("e1", T0))
    engine.observe("A", T0 + 3 * DAY_MS)  # far past the 24 h dedup window in event time
    engine.drain()
    engine.push(page_view("e1", T0))  # delivered again (late in event time)
    engine.observe("A", T0 + 3 * DAY_MS + 1)
    assert engine.duplicates == 1
    for number in range(10):  # ten more applied events: the retention by count has passed
        engine.push(
            KeyedEvent(
                f"X{number}",
                Event(f"x{number}", T0 + 3 * DAY_MS + 5, "web", "page_view", customer_id=f"X{number}"),
            )
        )
    engine.observe("A", T0 + 3 * DAY_MS + 10)
    assert engine.customer("C1") is None or "e1" not in engine.customer("C1").seen  # type: ignore[union-attr]


def test_a_merged_anonymous_key_stays_a_tombstone_while_its_ids_may_come_back() -> None:
    """The watermark may jump days ahead (a quiet, caught-up stream follows the wall clock)
    while anonymous events are still delivered again after a crash: they must not open a new
    anonymous journey; one the key applied before the merge went over in the payload, so it
    is a duplicate here (forwarded, it could be applied twice by a customer restored from
    before its merge)."""
    engine = JourneyEngine(RulesConfig(dedup_min_items=5), ["A"])
    anonymous = KeyedEvent(
        "anon:X", Event("a1", T0, "web", "journey_start", anonymous_id="X", journey="claim")
    )
    engine.push(anonymous)
    engine.push(MergeRequest("anon:X", "C9", T0 + 60_000, "login"))
    engine.observe("A", T0 + 120_000)
    engine.drain()
    engine.observe("A", T0 + 3 * DAY_MS)  # days later in event time, few events applied since
    engine.drain()
    engine.push(anonymous)  # delivered again
    engine.observe("A", T0 + 3 * DAY_MS + 1)
    messages = engine.drain().messages
    assert messages == [] and engine.duplicates == 1  # neither re-opened nor forwarded
    tombstone = engine.customer("anon:X")
    assert tombstone is not None and tombstone.merged_into == "C9" and not tombstone.journeys


# ---- KPI cells saved ahead of the customer states (the worker's write order) -----------


def _events(customer: str, start: int, count: int) -> list[KeyedEvent]:
    kinds = ["journey_start", "journey_step", "page_view", "journey_step", "journey_complete"]
    return [
        KeyedEvent(
            customer,
            Event(
                f"{customer}-{start + i}",
                T0 + (start + i) * 1_000,
                "web",
                kinds[(start + i) % 5],
                customer_id=customer,
                journey="billing",
            ),
        )
        for i in range(count)
    ]


def _count(engine: JourneyEngine, kpis: KpiAccumulator) -> None:
    output = engine.drain()
    kpis.add_many(output.facts, output.origins)


def test_cells_saved_ahead_of_the_states_do_not_count_replayed_facts_twice() -> None:
    first = [*_events("C1", 0, 4), *_events("C2", 0, 3)]
    second = [*_events("C1", 4, 4), *_events("C2", 3, 5)]

    reference = KpiAccumulator()
    clean = JourneyEngine(RulesConfig(), ["A"])
    for item in first + second:
        clean.push(item)
    clean.observe("A", T0 + DAY_MS * 3)
    _count(clean, reference)

    states: dict[str, bytes] = {}
    engine = JourneyEngine(RulesConfig(), ["A"], load=states.get)
    kpis = KpiAccumulator()
    for item in first:
        engine.push(item)
    engine.observe("A", T0 + 2_500)  # C1-3 (at 3 s) still waits in the reorder buffer
    _count(engine, kpis)
    flush(engine, states)  # flush 1: cells and states saved
    for item in second:
        engine.push(item)
    engine.observe("A", T0 + 20_000)
    _count(engine, kpis)
    saved_cells = {key: json.loads(json.dumps(kpis.cell_state(key))) for key, _ in kpis.cells()}
    saved_marks = json.loads(json.dumps(kpis.pop_dirty_marks()))
    # flush 2 saves the cells, then the process dies before the customer states are written

    restarted = JourneyEngine(RulesConfig(), ["A"], load=states.get)
    for key, value in states.items():
        restarted.restore(key, value)
    recovered = KpiAccumulator()
    for key, cell in saved_cells.items():
        recovered.load_cell(key, cell)
    for customer, mark in saved_marks.items():
        recovered.load_mark(customer, mark)
    for item in first + second:  # everything unacked is delivered again
        restarted.push(item)
    restarted.observe("A", T0 + DAY_MS * 3)
    _count(restarted, recovered)

    assert recovered.replayed > 0  # the cells really were ahead
    assert recovered.cells() == reference.cells()
    assert sum(counts.events for _, counts in reference.cells()) == len(first + second)


def test_facts_are_complete_only_up_to_the_oldest_item_held_for_a_merge() -> None:
    engine = JourneyEngine(RulesConfig(), ["A"])
    login = Event("e-login", T0 + 1_000, "web", "login", customer_id="C1", anonymous_id="x")
    engine.push(KeyedEvent("C1", login, merge_from="anon:x"))
    engine.push(page_view("e2", T0 + 2_000))
    engine.observe("A", T0 + 5_000)
    # the login waits for the anonymous history: its facts, and those of C1's next events,
    # come when the payload arrives, after the watermark has passed them
    assert engine.timeline.watermark == T0 + 5_000
    assert engine.complete_before() == T0 + 1_000
    engine.receive_payload(MergePayload("C1", "anon:x", None))
    applied = [f for f in engine.drain().facts if isinstance(f, AppliedEvent)]
    assert [f.event.event_id for f in applied] == ["e-login", "e2"]
    assert engine.complete_before() == T0 + 5_000


def test_a_merged_anonymous_key_does_not_forward_what_it_applied_before_the_merge() -> None:
    """After a crash, events the anonymous key applied before the login are read again and
    reach its tombstone: their effects went over in the merge payload, so forwarding them
    would make the customer apply them twice (a journey opened on both sides, then 'merged')."""
    engine = JourneyEngine(RulesConfig(), ["A0"])
    page = Event("e1", 1_000, "web", "page_view", anonymous_id="a", journey="claim")
    engine.push(KeyedEvent("anon:a", page))
    engine.observe("A0", 2_000)
    engine.push(MergeRequest("anon:a", "C1", 3_000, "login-1"))
    engine.observe("A0", 4_000)
    (payload,) = engine.drain_messages()
    assert isinstance(payload, MergePayload) and payload.key == "C1" and payload.state is not None

    engine.push(KeyedEvent("anon:a", page))  # read again after a crash: late, reaches the tombstone
    later = Event("e2", 5_000, "web", "page_view", anonymous_id="a", journey="claim")
    engine.push(KeyedEvent("anon:a", later))  # a straggler after the merge: the customer's now
    engine.observe("A0", 6_000)
    assert engine.drain_messages() == [KeyedEvent("C1", later)]
    assert engine.duplicates == 1


def test_a_journey_record_carries_every_field_of_its_state() -> None:
    # record() builds the JourneyRecord positionally: every field must land in its place

    from journeystream.core.facts import JourneyRecord
    from journeystream.core.state import JourneyState

    values = iter(range(100, 200))
    state = JourneyState(
        *(f"v{next(values)}" for _ in range(4)),
        *(next(values) for _ in range(2)),
        "web",
        "phone",
        ["web", "phone"],
        "closed",
        *(next(values) for _ in range(13)),
    )
    record = state.record()
    for name in JourneyRecord.__struct_fields__:
        expected = getattr(state, name)
        assert getattr(record, name) == (tuple(expected) if name == "channels" else expected), name
