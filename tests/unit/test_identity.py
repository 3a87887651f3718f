"""Customer key (SPEC §2): resolution by the identity stage, and login merges of the
anonymous history into the customer's, through the pipeline and the engine directly.

Every expected value below is worked out from the SPEC by hand, not read off the program.
"""

from __future__ import annotations

from typing import Any

import pytest

from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import AppliedEvent, Fact, Irritant, JourneyClosed, JourneyRecord
from journeystream.core.identity import IdentityStage, anonymous_key, device_key, encode_links, needs_identity
from journeystream.core.ids import irritant_id, journey_id
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload, MergeRequest
from journeystream.core.pipeline import LocalPipeline

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEC = 1_000
MIN = 60 * SEC
END = 2**61


def ev(
    event_id: str,
    at: int,
    type_: str,
    channel: str = "web",
    journey: str | None = "billing",
    customer: str | None = None,
    anon: str | None = None,
    **attributes: Any,
) -> Event:
    return Event(
        event_id=event_id,
        occurred_at=T0 + at,
        channel=channel,
        type=type_,
        customer_id=customer,
        anonymous_id=anon,
        journey=journey,
        attributes=attributes,
    )


def login(event_id: str, at: int, customer: str = "C", anon: str = "A", journey: str | None = None) -> Event:
    return ev(event_id, at, "login", "web", journey, customer=customer, anon=anon)


def run(*events: Event, until: int = END) -> list[Fact]:
    pipeline = LocalPipeline(RulesConfig())
    facts: list[Fact] = []
    for event in events:
        pipeline.feed(event)
        facts += pipeline.drain()
    pipeline.advance(until)
    return facts + pipeline.drain()


def records(facts: list[Fact]) -> dict[str, JourneyRecord]:
    latest: dict[str, JourneyRecord] = {}
    for fact in facts:
        if isinstance(fact, JourneyRecord):
            assert fact.journey_id not in latest or fact.version > latest[fact.journey_id].version
            latest[fact.journey_id] = fact
    return latest


def applied(facts: list[Fact]) -> dict[str, AppliedEvent]:
    out: dict[str, AppliedEvent] = {}
    for fact in facts:
        if isinstance(fact, AppliedEvent):
            assert fact.event.event_id not in out
            out[fact.event.event_id] = fact
    return out


def irritants(facts: list[Fact], kind: str) -> list[Irritant]:
    return [f for f in facts if isinstance(f, Irritant) and f.kind == kind]


def keys(facts: list[Fact]) -> dict[str, str]:
    return {event_id: a.customer_key for event_id, a in applied(facts).items()}


# ---- the identity stage on its own ------------------------------------------------------


def test_which_events_need_the_identity_stage() -> None:
    assert needs_identity(ev("a", 0, "page_view", anon="A"))
    assert needs_identity(login("l", 0))
    assert not needs_identity(ev("c", 0, "page_view", customer="C"))
    assert not needs_identity(ev("b", 0, "page_view", customer="C", anon="A"))
    assert device_key(login("l", 0)) == "A"
    assert anonymous_key("A") == "anon:A"


def test_identity_stage_resolves_in_event_time_order() -> None:
    stage = IdentityStage(["src"])
    before = ev("a1", 0, "page_view", anon="A")
    after = ev("a2", 2 * SEC, "page_view", anon="A")
    link = login("l", 1 * SEC)
    stage.push(before)
    stage.push(after)  # arrives before the login, but happened after it
    stage.push(link)
    assert stage.drain() == []  # nothing resolved before the watermark passes
    stage.observe("src", T0 + 2 * SEC)
    assert stage.drain() == [
        KeyedEvent("anon:A", before),
        MergeRequest("anon:A", "C", T0 + SEC, "l"),
        KeyedEvent("C", link, "anon:A"),
        KeyedEvent("C", after),
    ]
    assert stage.dirty_links() == {"A": [(T0 + SEC, "C")]}
    assert stage.dirty_links() == {}


def test_identity_stage_late_event_from_before_the_login_stays_anonymous() -> None:
    """Resolution depends on the event's time, not on when it is processed: the anonymous
    key's tombstone forwards it to the customer (see the journey engine)."""
    stage = IdentityStage(["src"])
    stage.push(login("l", 10 * SEC))
    stage.observe("src", T0 + 10 * SEC)
    stage.drain()
    late = ev("a0", 0, "page_view", anon="A")  # before the login, delivered long after it
    after = ev("a1", 11 * SEC, "page_view", anon="A")
    stage.push(late)
    stage.push(after)
    stage.observe("src", T0 + 12 * SEC)
    assert stage.drain() == [KeyedEvent("anon:A", late), KeyedEvent("C", after)]


def test_identity_stage_restarted_with_the_link_stored_still_resolves_earlier_events_as_anonymous() -> None:
    """After a crash, events from before the login are read again while the link written
    after the login is already in the table."""
    stored = {"A": encode_links([(T0 + 10 * SEC, "C")])}
    stage = IdentityStage(["src"], load_link=stored.get)
    before, after = ev("a0", 5 * SEC, "page_view", anon="A"), ev("a1", 20 * SEC, "page_view", anon="A")
    stage.push(before)
    stage.push(after)
    stage.observe("src", T0 + 30 * SEC)
    assert stage.drain() == [KeyedEvent("anon:A", before), KeyedEvent("C", after)]


def test_identity_stage_second_login_asks_for_a_merge_again_but_links_once() -> None:
    stage = IdentityStage(["src"])
    stage.push(login("l1", 0))
    stage.push(login("l2", MIN))
    stage.observe("src", T0 + MIN)
    out = stage.drain()
    assert [type(item).__name__ for item in out] == ["MergeRequest", "KeyedEvent"] * 2
    assert stage.dirty_links() == {"A": [(T0, "C"), (T0 + MIN, "C")]}


def test_identity_stage_loads_links_after_a_restart() -> None:
    stage = IdentityStage(["src"], load_link={"A": encode_links([(T0 - 1, "C")])}.get)
    event = ev("a", 0, "page_view", anon="A")
    other = ev("b", 0, "page_view", anon="B")
    stage.push(event)
    stage.push(other)
    stage.observe("src", T0)
    assert stage.drain() == [KeyedEvent("C", event), KeyedEvent("anon:B", other)]


# ---- customer key through the pipeline --------------------------------------------------


def test_customer_id_is_the_key_and_only_a_login_links_devices() -> None:
    facts = run(
        ev("c1", 0, "page_view", customer="C", anon="A"),  # both ids, but not a login
        ev("a1", MIN, "page_view", anon="A"),
    )
    assert keys(facts) == {"c1": "C", "a1": "anon:A"}


def test_anonymous_before_login_and_customer_after() -> None:
    facts = run(
        ev("a1", 0, "page_view", journey=None, anon="A"),
        login("l", MIN),
        ev("a2", 2 * MIN, "page_view", journey=None, anon="A"),
    )
    assert keys(facts) == {"a1": "anon:A", "l": "C", "a2": "C"}
    anonymous_journey = journey_id("anon:A", "unspecified", "a1")
    assert applied(facts)["a1"].journey_id == anonymous_journey
    # the anonymous journey now belongs to the customer: the login and a2 join it
    assert applied(facts)["l"].journey_id == applied(facts)["a2"].journey_id == anonymous_journey
    record = records(facts)[anonymous_journey]
    assert (record.customer_key, record.event_count) == ("C", 3)


@pytest.mark.parametrize("logged_in", [True, False])
def test_web_use_before_login_counts_for_the_call_after_it(logged_in: bool) -> None:
    events = [
        ev("w1", 0, "page_view", anon="A"),
        ev("w2", MIN, "journey_start", anon="A"),
        # the login is on another journey: its own web use does not match billing
        login("l", 2 * MIN, journey="account"),
        ev("call", 10 * MIN, "contact_start", "phone", customer="C"),
    ]
    facts = run(*(events if logged_in else [e for e in events if e.event_id != "l"]))
    found = irritants(facts, "repeat_contact_after_web")
    if not logged_in:
        assert found == []  # anon:A and C stay two customers
        return
    web_journey = journey_id("anon:A", "billing", "w1")
    assert [(i.irritant_id, i.customer_key, i.journey_id, i.event_ids, i.occurred_at) for i in found] == [
        (irritant_id("repeat_contact_after_web", "call"), "C", web_journey, ("call", "w2"), T0 + 10 * MIN)
    ]
    record = records(facts)[web_journey]
    assert record.customer_key == "C"
    assert record.event_count == 3  # w1, w2, call
    assert record.channels == ("web", "phone")
    assert record.inbound_contacts == 1
    assert record.irritant_count == 2  # the call after web, and the abandonment at w2 + 30 min
    assert (record.status, record.ended_at) == ("abandoned", T0 + 31 * MIN)


def test_both_sides_open_on_the_same_journey_become_one_under_the_earlier_id() -> None:
    facts = run(
        ev("e1", 0, "journey_start", "phone", customer="C"),
        ev("e2", 1 * MIN, "contact_start", "phone", customer="C"),
        ev("e3", 2 * MIN, "journey_start", "web", anon="A"),
        ev("e4", 3 * MIN, "contact_start", "chat", anon="A"),  # anonymous: after web (e3)
        login("l", 4 * MIN),
        ev("e6", 5 * MIN, "journey_complete", "web", customer="C"),
    )
    kept, absorbed = journey_id("C", "billing", "e1"), journey_id("anon:A", "billing", "e3")
    journeys = records(facts)
    assert set(journeys) == {kept, absorbed}
    record = journeys[kept]
    assert (record.customer_key, record.status) == ("C", "completed")
    assert (record.started_at, record.ended_at) == (T0, T0 + 5 * MIN)
    assert record.event_count == 6  # 2 + 2 + the login + the completion
    assert record.channels == ("phone", "web", "chat")
    assert record.inbound_contacts == 2
    assert record.irritant_count == 1  # e4's, raised on the anonymous side
    assert journeys[absorbed].status == "merged"
    assert applied(facts)["l"].journey_id == applied(facts)["e6"].journey_id == kept
    assert [c.status for c in facts if isinstance(c, JourneyClosed) and c.journey_id == kept] == ["completed"]


def test_the_anonymous_journey_is_kept_when_it_started_first() -> None:
    facts = run(
        ev("e1", 0, "journey_start", "web", anon="A"),
        ev("e2", 1 * MIN, "journey_start", "phone", customer="C"),
        login("l", 2 * MIN),
        ev("e4", 3 * MIN, "journey_step", "phone", customer="C"),
    )
    kept, absorbed = journey_id("anon:A", "billing", "e1"), journey_id("C", "billing", "e2")
    journeys = records(facts)
    assert journeys[absorbed].status == "merged"
    record = journeys[kept]
    assert (record.customer_key, record.started_at, record.event_count) == ("C", T0, 4)
    # the last step of either side counts for the abandonment deadline
    assert (record.status, record.ended_at) == ("abandoned", T0 + 33 * MIN)


def test_a_merged_journey_closes_on_the_channel_of_its_last_event() -> None:
    facts = run(
        ev("e1", 0, "journey_start", "phone", customer="C"),
        ev("e2", 1 * MIN, "journey_start", "web", anon="A"),
        ev("e3", 2 * MIN, "journey_step", "mobile_app", anon="A"),
        login("l", 3 * MIN, journey="account"),  # not on billing
    )
    kept = journey_id("C", "billing", "e1")
    record = records(facts)[kept]
    assert (record.status, record.ended_at, record.event_count) == ("abandoned", T0 + 32 * MIN, 3)
    assert record.last_channel == "mobile_app"  # e3 is billing's last event
    closed = [c for c in facts if isinstance(c, JourneyClosed) and c.journey_id == kept]
    assert [(c.status, c.channel) for c in closed] == [("abandoned", "mobile_app")]
    (abandonment,) = irritants(facts, "abandonment")
    assert (abandonment.journey_id, abandonment.channel) == (kept, "mobile_app")


def test_a_login_without_anonymous_history() -> None:
    facts = run(login("l", 0), ev("a", MIN, "page_view", journey=None, anon="A"))
    assert keys(facts) == {"l": "C", "a": "C"}
    journey = journey_id("C", "unspecified", "l")
    assert set(records(facts)) == {journey}
    assert records(facts)[journey].event_count == 2
    assert all(r.status != "merged" for r in records(facts).values())


def test_a_second_login_of_the_same_device() -> None:
    facts = run(
        ev("a0", 0, "page_view", journey=None, anon="A"),
        login("l1", 1 * MIN),
        ev("a1", 2 * MIN, "page_view", journey=None, anon="A"),
        login("l2", 3 * MIN),
        ev("a3", 4 * MIN, "page_view", journey=None, anon="A"),
    )
    assert keys(facts) == {"a0": "anon:A", "l1": "C", "a1": "C", "l2": "C", "a3": "C"}
    journey = journey_id("anon:A", "unspecified", "a0")
    assert set(records(facts)) == {journey}  # nothing opened, nothing merged twice
    assert (records(facts)[journey].customer_key, records(facts)[journey].event_count) == ("C", 5)


def test_the_device_logged_in_by_another_customer_resolves_to_them() -> None:
    facts = run(
        login("l1", 0, customer="C"),
        ev("a1", 1 * MIN, "page_view", anon="A"),
        login("l2", 2 * MIN, customer="D"),
        ev("a2", 3 * MIN, "page_view", anon="A"),
    )
    assert keys(facts) == {"l1": "C", "a1": "C", "l2": "D", "a2": "D"}


def test_a_login_delivered_after_a_later_anonymous_event_still_applies_first() -> None:
    facts = run(
        ev("a1", 0, "page_view", anon="A"),
        ev("a3", 3 * SEC, "page_view", anon="A"),  # within the lateness of the login below
        login("l", 2 * SEC),
    )
    assert keys(facts) == {"a1": "anon:A", "l": "C", "a3": "C"}


# ---- merges across partitions: the engine directly --------------------------------------

LOGIN_AT = 10 * MIN


def _merge_across_partitions(deliver: str) -> tuple[list[Fact], list[Fact]]:
    """The anonymous key and the customer live on two engines; the merge payload reaches the
    customer's engine at the moment `deliver` names."""
    config = RulesConfig()
    anonymous_side = JourneyEngine(config, ["src"])
    customer_side = JourneyEngine(config, ["src"])
    link = login("l", LOGIN_AT)

    anonymous_side.push(KeyedEvent("anon:A", ev("w1", 0, "page_view", anon="A")))
    anonymous_side.push(KeyedEvent("anon:A", ev("w2", MIN, "journey_start", anon="A")))
    anonymous_side.push(MergeRequest("anon:A", "C", T0 + LOGIN_AT, "l"))
    anonymous_side.observe("src", T0 + LOGIN_AT)
    (payload,) = anonymous_side.drain_messages()
    assert isinstance(payload, MergePayload)
    assert (payload.key, payload.source, payload.state is not None) == ("C", "anon:A", True)
    anonymous_facts = anonymous_side.drain().facts
    assert anonymous_side.open_journeys() == 0  # handed over

    if deliver == "first":
        customer_side.receive_payload(payload)
    customer_side.push(KeyedEvent("C", ev("c0", -20 * MIN, "page_view", journey="claim", customer="C")))
    customer_side.push(KeyedEvent("C", link, "anon:A"))
    customer_side.push(KeyedEvent("C", ev("call", LOGIN_AT + MIN, "contact_start", "phone", customer="C")))
    if deliver == "before_login_applied":
        customer_side.receive_payload(payload)
    customer_side.observe("src", T0 + LOGIN_AT + 5 * MIN)  # the login (and the call) are due
    if deliver == "after_login_applied":
        customer_side.receive_payload(payload)
        customer_side.receive_payload(payload)  # delivered twice (a replay): merged once
    customer_side.observe("src", END)
    if deliver == "last":
        customer_side.receive_payload(payload)
    facts = customer_side.drain().facts
    left = customer_side.customer("C")
    # all expired: nothing is left behind but the ids of applied events, which are kept
    # for RulesConfig.dedup_min_items more applied events (redelivery after a crash)
    assert left is None or (
        not left.journeys and not left.held and not left.pending_payloads and left.awaiting is None
    )
    return anonymous_facts, facts


def _summary(facts: list[Fact]) -> tuple[Any, ...]:
    return (
        records(facts),
        sorted(
            (i.irritant_id, i.kind, i.journey_id, i.occurred_at, i.event_ids)
            for i in facts
            if isinstance(i, Irritant)
        ),
        sorted((c.journey_id, c.status, c.at) for c in facts if isinstance(c, JourneyClosed)),
        {k: (a.customer_key, a.journey_id, a.late) for k, a in applied(facts).items()},
    )


@pytest.mark.parametrize("deliver", ["first", "before_login_applied", "after_login_applied", "last"])
def test_merge_result_does_not_depend_on_when_the_payload_arrives(deliver: str) -> None:
    anonymous_facts, customer_facts = _merge_across_partitions(deliver)
    assert set(applied(anonymous_facts)) == {"w1", "w2"}
    web_journey = journey_id("anon:A", "billing", "w1")
    expected_keys = {"c0": "C", "l": "C", "call": "C"}
    assert {k: a.customer_key for k, a in applied(customer_facts).items()} == expected_keys
    # the login (journey null) joins billing, the most recently active (w2 at 1 min > c0)
    assert applied(customer_facts)["l"].journey_id == web_journey
    assert applied(customer_facts)["call"].journey_id == web_journey
    assert [i.event_ids for i in irritants(customer_facts, "repeat_contact_after_web")] == [("call", "l")]
    record = records(customer_facts)[web_journey]
    assert (record.customer_key, record.event_count, record.status) == ("C", 4, "abandoned")
    assert record.ended_at == T0 + 31 * MIN
    assert _summary(customer_facts) == _summary(_merge_across_partitions("first")[1])


def test_an_anonymous_event_repeated_after_the_login_is_applied_once() -> None:
    first = ev("a1", 0, "journey_start", anon="A")
    facts = run(first, login("l", MIN), first, ev("a2", 2 * MIN, "journey_step", anon="A"))
    assert keys(facts) == {"a1": "anon:A", "l": "C", "a2": "C"}
    journey = journey_id("anon:A", "billing", "a1")
    assert set(records(facts)) == {journey}
    assert records(facts)[journey].event_count == 3


def test_a_repeated_login_payload_does_not_replace_the_history_waiting_for_its_login() -> None:
    """The login is delivered twice; both merge payloads reach the customer's partition
    before the logins do. The second (empty: the key is a tombstone by then) must not win."""
    config = RulesConfig()
    anonymous_side = JourneyEngine(config, ["src"])
    customer_side = JourneyEngine(config, ["src"])
    anonymous_side.push(KeyedEvent("anon:A", ev("w1", 0, "journey_start", anon="A")))
    for _ in range(2):
        anonymous_side.push(MergeRequest("anon:A", "C", T0 + MIN, "l"))
    anonymous_side.observe("src", T0 + MIN)
    payloads = anonymous_side.drain_messages()
    assert [isinstance(p, MergePayload) and p.state is not None for p in payloads] == [True, False]
    for payload in payloads:
        assert isinstance(payload, MergePayload)
        customer_side.receive_payload(payload)
    link = login("l", MIN)
    for item in (
        KeyedEvent("C", link, "anon:A"),
        KeyedEvent("C", link, "anon:A"),
        KeyedEvent("C", ev("x", 2 * MIN, "journey_step", customer="C")),
    ):
        customer_side.push(item)
    customer_side.observe("src", END)
    facts = customer_side.drain().facts
    web_journey = journey_id("anon:A", "billing", "w1")
    assert {k: a.journey_id for k, a in applied(facts).items()} == {"l": web_journey, "x": web_journey}
    record = records(facts)[web_journey]
    assert (record.customer_key, record.event_count, record.status) == ("C", 3, "abandoned")
    assert record.ended_at == T0 + 32 * MIN  # x's step + 30 min


def test_a_login_again_after_both_sides_were_forgotten() -> None:
    week = 7 * 24 * 60 * MIN
    facts = run(
        ev("a0", 0, "page_view", anon="A"),
        login("l1", MIN),
        login("l2", week),  # the tombstone and the customer's history are long gone
        ev("a1", week + MIN, "page_view", journey=None, anon="A"),
    )
    assert keys(facts) == {"a0": "anon:A", "l1": "C", "l2": "C", "a1": "C"}
    assert applied(facts)["a1"].journey_id == journey_id("C", "unspecified", "l2")
