"""What the journey engine decides, as plain values: the facts written to topics and tables,
and the inputs of KPI counting. All times are epoch milliseconds (UTC)."""

from __future__ import annotations

from typing import Any

import msgspec

from journeystream.core.events import Event

JOURNEY_STATUSES = ("open", "completed", "cancelled", "abandoned", "expired")
IRRITANT_KINDS = (
    "abandonment",
    "contact_abandoned",
    "repeat_contact_after_web",
    "repeat_contact",
    "long_wait",
    "complaint",
    "detractor",
    "high_effort",
)
UNSPECIFIED = "unspecified"
UNKNOWN_SEGMENT = "unknown"


class JourneyRecord(msgspec.Struct, frozen=True, gc=False):
    """The state of one journey at one version (SPEC §2). `ended_at` is None while open."""

    journey_id: str
    customer_key: str
    journey: str
    segment: str
    status: str
    started_at: int
    last_event_at: int
    ended_at: int | None
    event_count: int
    channels: tuple[str, ...]  # distinct channels in order of first use
    channel_switches: int
    inbound_contacts: int
    irritant_count: int
    effort_score: int
    version: int
    first_channel: str
    last_channel: str


class Irritant(msgspec.Struct, frozen=True, gc=False):
    irritant_id: str
    kind: str
    customer_key: str
    journey_id: str
    journey: str
    segment: str
    channel: str
    occurred_at: int
    event_ids: tuple[str, ...]
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class AppliedEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid event once applied: its resolved customer key, journey and segment, and
    whether it arrived later than the allowed lateness. Event-level KPIs count these."""

    event: Event
    customer_key: str
    journey_id: str
    journey: str
    segment: str
    late: bool = False


class JourneyStarted(msgspec.Struct, frozen=True, gc=False):
    """Counts at the journey's first event: its minute and channel."""

    journey_id: str
    journey: str
    segment: str
    channel: str
    at: int


class JourneyClosed(msgspec.Struct, frozen=True, gc=False):
    """Counts at the closing time's minute, on the channel of the journey's last event."""

    journey_id: str
    journey: str
    segment: str
    channel: str
    status: str  # completed | cancelled | abandoned | expired
    at: int
    channel_count: int
    inbound_contacts: int


class SessionEnded(msgspec.Struct, frozen=True, gc=False):
    """A digital session (session_id on a self-service digital channel) that went quiet;
    bounce rate = single-event sessions / sessions."""

    session_id: str
    customer_key: str
    journey: str
    segment: str
    channel: str
    at: int  # time of the session's first event
    event_count: int


Fact = JourneyRecord | Irritant | AppliedEvent | JourneyStarted | JourneyClosed | SessionEnded
