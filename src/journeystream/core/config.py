"""Parameters of the journey and irritant rules (SPEC §2), with the spec's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from journeystream.core.events import ChannelKinds

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class EffortWeights:
    """Effort score = extra_inbound_contacts × (inbound assisted contacts beyond the first)
    + channel_switch × switches + contact_abandoned × abandoned contacts + long_wait × long
    waits + repeat_contact × repeat contacts + complaint × complaints (SPEC §2 defaults)."""

    extra_inbound_contact: int = 1
    channel_switch: int = 1
    contact_abandoned: int = 2
    long_wait: int = 1
    repeat_contact: int = 2
    complaint: int = 3


@dataclass(frozen=True, slots=True)
class RulesConfig:
    allowed_lateness_ms: int = 5_000
    abandon_after_ms: int = 30 * MINUTE_MS
    idle_timeout_ms: int = DAY_MS
    web_to_contact_window_ms: int = DAY_MS
    repeat_contact_window_ms: int = 7 * DAY_MS
    long_wait_s: float = 300.0
    dedup_window_ms: int = DAY_MS  # a repeated event_id within this much event time is dropped
    dedup_min_items: int = (
        200_000  # ... and an id is kept at least while this many events are applied after it
    )
    session_timeout_ms: int = 30 * MINUTE_MS  # a digital session ends after this much silence
    effort: EffortWeights = field(default_factory=EffortWeights)
    kinds: ChannelKinds = field(default_factory=ChannelKinds)
