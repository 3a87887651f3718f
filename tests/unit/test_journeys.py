"""Journey decisions (SPEC §2): lifecycle and deadlines, irritants at their window bounds,
effort score, deduplication and event-time ordering, through the in-process pipeline.

Every expected value below is worked out from the SPEC by hand, not read off the program.
"""

from __future__ import annotations

from typing import Any

import pytest

from journeystream.core.config import EffortWeights, RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import (
    AppliedEvent,
    Fact,
    Irritant,
    JourneyClosed,
    JourneyRecord,
    JourneyStarted,
)
from journeystream.core.ids import irritant_id, journey_id
from journeystream.core.pipeline import LocalPipeline

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
END = 2**61  # a watermark beyond every deadline


def ev(
    event_id: str,
    at: int,
    type_: str,
    channel: str = "web",
    journey: str | None = "billing",
    customer: str | None = "C",
    segment: str | None = None,
    **attributes: Any,
) -> Event:
    """An event `at` ms after T0."""
    return Event(
        event_id=event_id,
        occurred_at=T0 + at,
        channel=channel,
        type=type_,
        customer_id=customer,
        journey=journey,
        segment=segment,
        attributes=attributes,
    )


class Run:
    """A LocalPipeline fed event by event, with every fact it produced (drained each step)."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.pipeline = LocalPipeline(config or RulesConfig())
        self.facts: list[Fact] = []

    def feed(self, *events: Event) -> Run:
        for event in events:
            self.pipeline.feed(event)
            self.facts += self.pipeline.drain()
        return self

    def advance(self, watermark: int) -> Run:
        self.pipeline.advance(watermark)
        self.facts += self.pipeline.drain()
        return self

    def records(self) -> dict[str, JourneyRecord]:
        latest: dict[str, JourneyRecord] = {}
        for fact in self.facts:
            if isinstance(fact, JourneyRecord):
                if fact.journey_id in latest:
                    assert fact.version > latest[fact.journey_id].version
                latest[fact.journey_id] = fact
        return latest

    def irritants(self, kind: str | None = None) -> list[Irritant]:
        return [f for f in self.facts if isinstance(f, Irritant) and kind in (None, f.kind)]

    def closed(self) -> list[JourneyClosed]:
        return [f for f in self.facts if isinstance(f, JourneyClosed)]

    def started(self) -> list[JourneyStarted]:
        return [f for f in self.facts if isinstance(f, JourneyStarted)]

    def applied(self) -> dict[str, AppliedEvent]:
        out: dict[str, AppliedEvent] = {}
        for fact in self.facts:
            if isinstance(fact, AppliedEvent):
                assert fact.event.event_id not in out, "an event was applied twice"
                out[fact.event.event_id] = fact
        return out


def run(*events: Event, until: int | None = END, config: RulesConfig | None = None) -> Run:
    result = Run(config).feed(*events)
    return result.advance(until) if until is not None else result


def jid(event_id: str, journey: str = "billing", key: str = "C") -> str:
    return journey_id(key, journey, event_id)


# ---- lifecycle --------------------------------------------------------------------------


def test_journey_opens_at_its_first_event() -> None:
    result = run(
        ev("e1", 0, "page_view", "web"),
        ev("e2", MIN, "journey_start", "phone"),
        until=T0 + 2 * MIN,
    )
    assert result.started() == [JourneyStarted(jid("e1"), "billing", "unknown", "web", T0)]
    (record,) = result.records().values()
    assert record.journey_id == jid("e1")
    assert record.customer_key == "C"
    assert record.status == "open"
    assert (record.started_at, record.last_event_at, record.ended_at) == (T0, T0 + MIN, None)
    assert record.event_count == 2
    assert (record.first_channel, record.last_channel) == ("web", "phone")
    assert result.closed() == []


def test_null_journey_attaches_to_the_most_recently_active_open_journey() -> None:
    result = run(
        ev("e1", 0, "journey_start", journey="billing"),
        ev("e2", 1 * MIN, "journey_start", journey="claim"),
        ev("e3", 2 * MIN, "page_view", journey=None),  # claim was active last
        ev("e4", 3 * MIN, "journey_step", journey="billing"),
        ev("e5", 4 * MIN, "page_view", journey=None),  # now billing
        until=T0 + 5 * MIN,
    )
    applied = result.applied()
    assert (applied["e3"].journey, applied["e3"].journey_id) == ("claim", jid("e2", "claim"))
    assert (applied["e5"].journey, applied["e5"].journey_id) == ("billing", jid("e1"))
    records = result.records()
    assert records[jid("e1")].event_count == 3
    assert records[jid("e2", "claim")].event_count == 2


def test_null_journey_without_an_open_journey_is_unspecified() -> None:
    result = run(
        ev("e1", 0, "page_view", journey=None),
        ev("e2", 1 * MIN, "journey_start", journey="claim"),
        ev("e3", 2 * MIN, "journey_complete", journey="claim"),
        # claim is closed: the most recently active *open* journey is unspecified
        ev("e4", 3 * MIN, "page_view", journey=None),
        until=T0 + 4 * MIN,
    )
    applied = result.applied()
    unspecified = jid("e1", "unspecified")
    assert (applied["e1"].journey, applied["e1"].journey_id) == ("unspecified", unspecified)
    assert applied["e4"].journey_id == unspecified
    assert result.records()[unspecified].event_count == 2

    lone = run(ev("x1", 0, "complaint", "email", journey=None, customer="D", reason="r"), until=T0)
    assert lone.applied()["x1"].journey == "unspecified"
    assert lone.irritants("complaint")[0].journey == "unspecified"


def test_completed_and_cancelled() -> None:
    result = run(
        ev("a1", 0, "journey_start", customer="C1"),
        ev("b1", 0, "journey_start", "mobile_app", journey="claim", customer="C2"),
        ev("a2", 5 * MIN, "journey_complete", customer="C1", amount=12.5),
        ev("b2", 6 * MIN, "journey_cancel", "phone", journey="claim", customer="C2"),
    )
    records = result.records()
    completed = records[jid("a1", key="C1")]
    cancelled = records[jid("b1", "claim", key="C2")]
    assert (completed.status, completed.ended_at, completed.event_count) == ("completed", T0 + 5 * MIN, 2)
    assert (cancelled.status, cancelled.ended_at, cancelled.event_count) == ("cancelled", T0 + 6 * MIN, 2)
    assert sorted((c.journey_id, c.status, c.at, c.channel) for c in result.closed()) == sorted(
        [
            (completed.journey_id, "completed", T0 + 5 * MIN, "web"),
            (cancelled.journey_id, "cancelled", T0 + 6 * MIN, "phone"),
        ]
    )
    assert result.irritants() == []  # closed in time: never abandoned


def test_abandoned_exactly_at_last_start_or_step_plus_30_minutes() -> None:
    deadline = T0 + 10 * MIN + 30 * MIN  # the last step, not the later page view, counts
    result = run(
        ev("e1", 0, "journey_start"),
        ev("e2", 10 * MIN, "journey_step", step="details"),
        ev("e3", 35 * MIN, "page_view", "mobile_app"),
        until=deadline,
    )
    # the watermark is at the deadline: a completion at the deadline could still come
    assert result.closed() == []
    assert result.records()[jid("e1")].status == "open"

    result.advance(deadline + 1)
    j = jid("e1")
    assert result.closed() == [
        JourneyClosed(j, "billing", "unknown", "mobile_app", "abandoned", deadline, 2, 0)
    ]
    record = result.records()[j]
    assert (record.status, record.ended_at, record.irritant_count) == ("abandoned", deadline, 1)
    (irritant,) = result.irritants()
    assert irritant.irritant_id == irritant_id("abandonment", j)
    assert (irritant.kind, irritant.customer_key, irritant.journey_id, irritant.journey) == (
        "abandonment",
        "C",
        j,
        "billing",
    )
    assert irritant.occurred_at == deadline
    assert irritant.channel == "mobile_app"  # the journey's last channel


def test_complete_exactly_at_the_deadline_still_completes() -> None:
    result = run(
        ev("e1", 0, "journey_start"),
        ev("e2", 10 * MIN, "journey_step"),
        ev("e3", 40 * MIN, "journey_complete"),
    )
    (record,) = result.records().values()
    assert (record.journey_id, record.status, record.ended_at) == (jid("e1"), "completed", T0 + 40 * MIN)
    assert record.event_count == 3
    assert result.irritants() == []


def test_complete_one_ms_after_the_deadline_abandons_and_opens_a_new_journey() -> None:
    deadline = T0 + 40 * MIN
    result = run(
        ev("e1", 0, "journey_start"),
        ev("e2", 10 * MIN, "journey_step"),
        ev("e3", 40 * MIN + 1, "journey_complete"),
    )
    records = result.records()
    assert set(records) == {jid("e1"), jid("e3")}
    first, second = records[jid("e1")], records[jid("e3")]
    assert (first.status, first.ended_at, first.event_count) == ("abandoned", deadline, 2)
    assert (second.status, second.started_at, second.ended_at) == ("completed", deadline + 1, deadline + 1)
    assert second.event_count == 1
    assert [(i.kind, i.journey_id, i.occurred_at) for i in result.irritants()] == [
        ("abandonment", jid("e1"), deadline)
    ]
    assert [(s.journey_id, s.at) for s in result.started()] == [(jid("e1"), T0), (jid("e3"), deadline + 1)]
    assert result.applied()["e3"].journey_id == jid("e3")


def test_expired_after_24_hours_without_a_process() -> None:
    last = T0 + HOUR + 10 * MIN
    result = run(
        ev("e1", 0, "page_view", "web"),
        ev("e2", HOUR, "contact_start", "phone"),
        ev("e3", HOUR + 10 * MIN, "contact_end", "phone", handle_s=300, resolved=True),
        until=last + DAY,
    )
    assert result.closed() == []
    result.advance(last + DAY + 1)
    j = jid("e1")
    assert result.closed() == [JourneyClosed(j, "billing", "unknown", "phone", "expired", last + DAY, 2, 1)]
    assert result.records()[j].status == "expired"
    assert result.irritants("abandonment") == []  # never started a process: not abandoned


def test_an_event_exactly_24_hours_later_keeps_the_journey_open() -> None:
    result = run(
        ev("e1", 0, "page_view"),
        ev("e2", DAY, "page_view"),  # idle for exactly the timeout: still the same journey
        ev("e3", 2 * DAY + 1, "page_view"),  # idle one ms longer: a new journey
    )
    records = result.records()
    assert records[jid("e1")].event_count == 2
    assert (records[jid("e1")].status, records[jid("e1")].ended_at) == ("expired", T0 + 2 * DAY)
    assert records[jid("e3")].event_count == 1


def test_after_closing_the_next_event_opens_a_new_journey_with_a_deterministic_id() -> None:
    events = (
        ev("e1", 0, "journey_start"),
        ev("e2", MIN, "journey_complete"),
        ev("e3", 2 * MIN, "page_view"),
    )
    result = run(*events)
    records = result.records()
    assert set(records) == {jid("e1"), jid("e3")}
    assert records[jid("e1")].status == "completed"
    assert records[jid("e3")].status == "expired"
    assert result.applied()["e3"].journey_id == jid("e3")
    assert run(*events).records() == records  # same input, same ids and records


def test_cancel_is_not_an_abandonment() -> None:
    result = run(
        ev("a1", 0, "journey_start", customer="C1"),
        ev("a2", 29 * MIN, "journey_cancel", customer="C1"),
        ev("b1", 0, "journey_start", customer="C2"),
    )
    statuses = {c.journey_id: c.status for c in result.closed()}
    assert statuses == {jid("a1", key="C1"): "cancelled", jid("b1", key="C2"): "abandoned"}
    assert [(i.kind, i.customer_key) for i in result.irritants()] == [("abandonment", "C2")]


JOURNEY = (
    ev("e1", 0, "page_view", "web"),
    ev("e2", 1 * MIN, "journey_start", "web"),
    ev("e3", 2 * MIN, "contact_start", "phone"),  # inbound by default
    ev("e4", 3 * MIN, "contact_end", "phone", handle_s=60, resolved=False),
    ev("e5", 4 * MIN, "contact_start", "phone", direction="outbound"),
    ev("e6", 5 * MIN, "contact_start", "email", direction="inbound"),
    ev("e7", 6 * MIN, "journey_complete", "web"),
)


def test_channels_switches_inbound_contacts_and_event_count() -> None:
    result = run(*JOURNEY)
    record = result.records()[jid("e1")]
    assert record.channels == ("web", "phone", "email")
    # web web phone phone phone email web: three changes between consecutive events
    assert record.channel_switches == 3
    assert record.inbound_contacts == 2  # the outbound call does not count
    assert record.event_count == 7
    assert (record.first_channel, record.last_channel) == ("web", "web")
    assert record.status == "completed"
    # e3: after web; e6: after web and repeat of e3
    assert sorted((i.kind, i.event_ids) for i in result.irritants()) == [
        ("repeat_contact", ("e6", "e3")),
        ("repeat_contact_after_web", ("e3", "e2")),
        ("repeat_contact_after_web", ("e6", "e2")),
    ]
    assert record.irritant_count == 3
    # 1 contact beyond the first + 3 switches + 2 × 1 repeat contact
    assert record.effort_score == 6
    (closed,) = result.closed()
    assert (closed.status, closed.channel, closed.channel_count, closed.inbound_contacts) == (
        "completed",
        "web",
        3,
        2,
    )


def test_versions_increase_monotonically() -> None:
    result = run(*JOURNEY)
    versions = [f.version for f in result.facts if isinstance(f, JourneyRecord)]
    assert len(versions) >= 7  # drained after every event: one record per change
    assert versions == sorted(set(versions))
    assert versions[0] >= 1
    assert result.records()[jid("e1")].version == versions[-1]


def test_segment_is_the_events_else_the_last_seen_else_unknown() -> None:
    result = run(
        ev("a1", 0, "journey_start", customer="C1", segment="premium"),
        ev("a2", MIN, "journey_step", customer="C1"),
        ev("b1", 0, "journey_start", customer="C2"),
        until=T0 + 2 * MIN,
    )
    applied = result.applied()
    assert [applied[e].segment for e in ("a1", "a2", "b1")] == ["premium", "premium", "unknown"]
    assert result.records()[jid("a1", key="C1")].segment == "premium"


# ---- irritants --------------------------------------------------------------------------


@pytest.mark.parametrize(("gap", "fires"), [(0, True), (DAY, True), (DAY + 1, False)])
def test_repeat_contact_after_web_window_is_24_hours_inclusive(gap: int, fires: bool) -> None:
    result = run(ev("w", 0, "page_view", "web"), ev("c", gap, "contact_start", "phone"))
    found = result.irritants("repeat_contact_after_web")
    if not fires:
        assert found == []
        return
    # within the idle timeout (inclusive) the call is still on the web journey
    assert found == [
        Irritant(
            irritant_id("repeat_contact_after_web", "c"),
            "repeat_contact_after_web",
            "C",
            jid("w"),
            "billing",
            "unknown",
            "phone",
            T0 + gap,
            ("c", "w"),
            found[0].details,
        )
    ]


@pytest.mark.parametrize(("gap", "fires"), [(0, True), (7 * DAY, True), (7 * DAY + 1, False)])
def test_repeat_contact_window_is_7_days_inclusive(gap: int, fires: bool) -> None:
    result = run(ev("c1", 0, "contact_start", "phone"), ev("c2", gap, "contact_start", "chat"))
    found = result.irritants("repeat_contact")
    assert result.irritants("repeat_contact_after_web") == []  # no digital use
    second = result.applied()["c2"].journey_id
    if not fires:
        assert found == []
        assert result.records()[second].effort_score == 0
        return
    (irritant,) = found
    assert irritant.irritant_id == irritant_id("repeat_contact", "c2")
    assert (irritant.customer_key, irritant.journey_id, irritant.channel) == ("C", second, "chat")
    assert (irritant.occurred_at, irritant.event_ids) == (T0 + gap, ("c2", "c1"))
    # after a day the first contact's journey has expired: the repeat lands on a new one
    assert second == (jid("c1") if gap == 0 else jid("c2"))
    record = result.records()[second]
    assert record.irritant_count == 1
    # a repeat contact weighs 2; on one journey (gap 0) add 1 for the second inbound contact
    # and 1 for the switch phone > chat
    assert record.effort_score == (2 + 1 + 1 if gap == 0 else 2)


def test_one_contact_raises_both_repeat_kinds() -> None:
    result = run(
        ev("w", 0, "page_view", "web"),
        ev("c1", HOUR, "contact_start", "phone"),
        ev("c2", 2 * HOUR, "contact_start", "chat"),
    )
    assert sorted((i.kind, i.event_ids, i.irritant_id) for i in result.irritants()) == sorted(
        [
            ("repeat_contact_after_web", ("c1", "w"), irritant_id("repeat_contact_after_web", "c1")),
            ("repeat_contact_after_web", ("c2", "w"), irritant_id("repeat_contact_after_web", "c2")),
            ("repeat_contact", ("c2", "c1"), irritant_id("repeat_contact", "c2")),
        ]
    )


@pytest.mark.parametrize(
    ("earlier", "later", "fires"),
    [
        ("billing", "billing", True),
        (None, "billing", True),  # the web use was on `unspecified`
        ("billing", None, True),  # the call attaches to the open billing journey
        ("claim", "billing", False),
    ],
)
def test_matching_journeys(earlier: str | None, later: str | None, fires: bool) -> None:
    after_web = run(
        ev("w", 0, "page_view", "web", journey=earlier),
        ev("c", MIN, "contact_start", "phone", journey=later),
    )
    repeat = run(
        ev("c1", 0, "contact_start", "phone", journey=earlier),
        ev("c2", MIN, "contact_start", "phone", journey=later),
    )
    assert [i.event_ids for i in after_web.irritants("repeat_contact_after_web")] == (
        [("c", "w")] if fires else []
    )
    assert [i.event_ids for i in repeat.irritants("repeat_contact")] == ([("c2", "c1")] if fires else [])


def test_an_unspecified_call_matches_any_earlier_journey() -> None:
    result = run(
        ev("w", 0, "page_view", "web", journey="claim"),
        ev("x", MIN, "journey_complete", "web", journey="claim"),  # nothing left open
        ev("c", 2 * MIN, "contact_start", "phone", journey=None),  # -> unspecified
    )
    assert result.applied()["c"].journey == "unspecified"
    assert [i.event_ids for i in result.irritants("repeat_contact_after_web")] == [("c", "x")]


def test_outbound_and_non_assisted_contacts_raise_no_repeat() -> None:
    result = run(
        ev("w", 0, "page_view", "web"),
        ev("o", MIN, "contact_start", "phone", direction="outbound"),
        ev("bot", 2 * MIN, "contact_start", "chatbot"),  # self-service, not assisted
        ev("n", 3 * MIN, "notification", "sms", kind="reminder"),
        ev("c", 4 * MIN, "contact_start", "phone"),
    )
    # only the inbound call fires, after web (the chatbot is digital) and not as a repeat
    assert [(i.kind, i.event_ids) for i in result.irritants()] == [("repeat_contact_after_web", ("c", "bot"))]
    assert result.records()[jid("w")].inbound_contacts == 1


@pytest.mark.parametrize(("wait", "fires"), [(300, False), (300.5, True), (301, True), (0, False)])
def test_long_wait_is_strictly_above_300_seconds(wait: float, fires: bool) -> None:
    result = run(ev("s", 0, "contact_start", "phone"), ev("a", MIN, "contact_answered", "phone", wait_s=wait))
    found = result.irritants("long_wait")
    assert [(i.irritant_id, i.event_ids, i.channel) for i in found] == (
        [(irritant_id("long_wait", "a"), ("a",), "phone")] if fires else []
    )
    assert result.records()[jid("s")].effort_score == (1 if fires else 0)


def test_contact_abandoned_fires_every_time_and_long_wait_too_when_long() -> None:
    result = run(
        ev("s1", 0, "contact_start", "phone", journey="claim"),
        ev("a1", MIN, "contact_abandoned", "phone", journey="claim", wait_s=10),
        ev("s2", 2 * MIN, "contact_start", "phone", journey="claim", direction="outbound"),
        ev("a2", 3 * MIN, "contact_abandoned", "phone", journey="claim", wait_s=301),
    )
    assert sorted((i.kind, i.irritant_id) for i in result.irritants()) == sorted(
        [
            ("contact_abandoned", irritant_id("contact_abandoned", "a1")),
            ("contact_abandoned", irritant_id("contact_abandoned", "a2")),
            ("long_wait", irritant_id("long_wait", "a2")),
        ]
    )
    record = result.records()[jid("s1", "claim")]
    assert record.irritant_count == 3
    assert record.effort_score == 2 * 2 + 1  # two abandoned contacts, one long wait


def test_complaint_on_any_channel() -> None:
    result = run(ev("k", 0, "complaint", "social", reason="late delivery"))
    (irritant,) = result.irritants()
    assert (irritant.irritant_id, irritant.kind, irritant.channel, irritant.event_ids) == (
        irritant_id("complaint", "k"),
        "complaint",
        "social",
        ("k",),
    )
    assert irritant.details["reason"] == "late delivery"
    assert result.records()[jid("k")].effort_score == 3


@pytest.mark.parametrize(("nps", "fires"), [(0, True), (6, True), (7, False), (10, False)])
def test_detractor_is_nps_at_most_6(nps: int, fires: bool) -> None:
    result = run(ev("s", 0, "survey", "email", nps=nps))
    assert [(i.kind, i.irritant_id) for i in result.irritants()] == (
        [("detractor", irritant_id("detractor", "s"))] if fires else []
    )


@pytest.mark.parametrize(("ces", "fires"), [(1, False), (4, False), (5, True), (7, True)])
def test_high_effort_is_ces_at_least_5(ces: int, fires: bool) -> None:
    result = run(ev("s", 0, "survey", "web", ces=ces, csat=3))
    assert [(i.kind, i.irritant_id) for i in result.irritants()] == (
        [("high_effort", irritant_id("high_effort", "s"))] if fires else []
    )


def test_one_survey_can_be_detractor_and_high_effort() -> None:
    result = run(ev("s", 0, "survey", "web", nps=3, ces=6))
    assert sorted((i.kind, i.irritant_id) for i in result.irritants()) == [
        ("detractor", irritant_id("detractor", "s")),
        ("high_effort", irritant_id("high_effort", "s")),
    ]
    assert result.records()[jid("s")].irritant_count == 2
    assert result.records()[jid("s")].effort_score == 0  # surveys are not part of the score


# ---- effort score -----------------------------------------------------------------------

EFFORT_JOURNEY = (
    ev("f1", 0, "journey_start", "web"),
    ev("f2", 1 * MIN, "contact_start", "phone"),
    ev("f3", 2 * MIN, "contact_abandoned", "phone", wait_s=400),
    ev("f4", 3 * MIN, "contact_start", "phone"),
    ev("f5", 4 * MIN, "contact_answered", "phone", wait_s=10),
    ev("f6", 5 * MIN, "complaint", "email", reason="x"),
    ev("f7", 6 * MIN, "journey_complete", "web"),
)


def test_effort_score_with_default_weights() -> None:
    record = run(*EFFORT_JOURNEY).records()[jid("f1")]
    # inbound contacts 2 -> 1 beyond the first (×1); switches web>phone, phone>email, email>web
    # (×1); 1 abandoned contact (×2); 1 long wait, f3's 400 s (×1); 1 repeat contact, f4 (×2);
    # 1 complaint (×3)
    assert record.effort_score == 1 + 3 + 2 + 1 + 2 + 3
    # f2 after web; f3 abandoned + long wait; f4 after web + repeat; f6 complaint
    assert record.irritant_count == 6


def test_effort_score_weights_are_configurable() -> None:
    weights = EffortWeights(
        extra_inbound_contact=1,
        channel_switch=10,
        contact_abandoned=100,
        long_wait=1_000,
        repeat_contact=10_000,
        complaint=100_000,
    )
    record = run(*EFFORT_JOURNEY, config=RulesConfig(effort=weights)).records()[jid("f1")]
    # each digit is one count: complaints 1, repeats 1, long waits 1, abandoned 1, switches 3,
    # extra contacts 1
    assert record.effort_score == 111_131


# ---- deduplication ----------------------------------------------------------------------


def test_a_repeated_event_id_is_applied_once() -> None:
    step = ev("e2", MIN, "journey_step")
    complaint = ev("e3", 2 * MIN, "complaint", "email", reason="x")
    result = run(ev("e1", 0, "journey_start"), step, step, complaint, complaint, until=T0 + 3 * MIN)
    applied = [f.event.event_id for f in result.facts if isinstance(f, AppliedEvent)]
    assert applied == ["e1", "e2", "e3"]
    record = result.records()[jid("e1")]
    assert record.event_count == 3
    assert record.effort_score == 3 + 1  # one complaint, one switch web>email
    assert len(result.irritants("complaint")) == 1
    assert result.pipeline.engine.duplicates == 2


def test_a_repeat_delivered_much_later_is_still_dropped() -> None:
    first = ev("e1", 0, "journey_start")
    result = run(first, ev("e2", 10 * MIN, "journey_step"), first, until=T0 + 20 * MIN)
    assert [f.event.event_id for f in result.facts if isinstance(f, AppliedEvent)] == ["e1", "e2"]
    assert result.records()[jid("e1")].event_count == 2


# ---- time -------------------------------------------------------------------------------

ORDERED = (
    ev("a", 0, "journey_start", journey="billing"),
    ev("b", 1 * SEC, "journey_start", journey="claim"),
    ev("c", 3 * SEC, "page_view", journey=None),
    ev("e", 5 * SEC, "page_view", journey=None),
    ev("d", 10 * SEC, "journey_step", journey="billing"),
)


def _outcome(result: Run) -> tuple[Any, ...]:
    applied = {k: (a.journey_id, a.journey, a.late) for k, a in result.applied().items()}
    return applied, result.records(), result.irritants(), result.closed()


def test_disorder_within_the_allowed_lateness_gives_the_in_order_result() -> None:
    a, b, c, e, d = ORDERED
    in_order = run(*ORDERED)
    # c arrives 2 s after b (later time); e arrives exactly 5 s after d
    disordered = run(a, c, b, d, e)
    assert _outcome(disordered) == _outcome(in_order)
    applied = disordered.applied()
    assert applied["c"].journey == "claim"  # claim (b, 1 s) was the most recent at 3 s
    assert applied["e"].journey == "claim"  # not billing, whose step d comes at 10 s
    assert not any(f.late for f in applied.values())
    assert disordered.pipeline.engine.late_events == 0


def test_an_event_beyond_the_lateness_is_applied_best_effort_and_marked_late() -> None:
    result = run(
        ev("x", 10 * SEC, "journey_start"),
        ev("z", 5 * SEC, "page_view"),  # exactly 5 s behind: in time
        ev("y", 5 * SEC - 1, "page_view"),  # 5.001 s behind: late
        until=T0 + 11 * SEC,
    )
    applied = result.applied()
    assert (applied["x"].late, applied["z"].late, applied["y"].late) == (False, False, True)
    # x and z still wait in the reorder buffer when y comes: y, the earliest, opens the journey
    assert applied["x"].journey_id == applied["z"].journey_id == applied["y"].journey_id == jid("y")
    record = result.records()[jid("y")]
    assert (record.event_count, record.started_at, record.last_event_at) == (
        3,
        T0 + 5 * SEC - 1,
        T0 + 10 * SEC,
    )
    assert result.pipeline.engine.late_events == 1


def test_equal_times_are_applied_in_arrival_order() -> None:
    opened = ev("o", 0, "journey_start", journey="claim")
    view = ev("v", MIN, "page_view", journey=None)
    start = ev("s", MIN, "journey_start", journey="billing")
    assert run(opened, view, start, until=T0 + MIN).applied()["v"].journey == "claim"
    assert run(opened, start, view, until=T0 + MIN).applied()["v"].journey == "billing"


def test_journeys_never_expire_without_a_watermark_moving() -> None:
    old = 978_307_200_000  # 2001-01-01: the wall clock is decades past every deadline
    start = Event("s", old, "web", "journey_start", customer_id="C", journey="billing")
    other = Event("o", old + 10 * SEC, "web", "page_view", customer_id="D", journey="billing")
    result = Run().feed(start, other)
    assert "s" in result.applied()  # applied (the watermark passed it) but not closed
    assert result.closed() == []
    assert result.pipeline.engine.open_journeys() == 1
    result.advance(old + 30 * MIN)
    assert result.closed() == []
    result.advance(old + 30 * MIN + 1)
    assert [(c.status, c.at) for c in result.closed()] == [("abandoned", old + 30 * MIN)]


def test_segment_memory_does_not_depend_on_when_the_watermark_moved() -> None:
    # C's whole history lapses at 24 h (its journey expires, its dedup memory ends). x comes
    # 5 s after e2 (within the lateness), so delivering x first must change nothing.
    e1 = ev("e1", 0, "page_view", segment="gold")
    e2 = ev("e2", DAY + 3 * SEC, "page_view")
    x = ev("x", DAY + 8 * SEC, "page_view", customer="D")
    in_order, x_first = run(e1, e2, x), run(e1, x, e2)
    assert _outcome(x_first) == _outcome(in_order)
    assert x_first.applied()["e2"].segment == in_order.applied()["e2"].segment
    assert not x_first.applied()["e2"].late
