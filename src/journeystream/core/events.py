"""The typed interaction event handed to the core, with channels, types and channel kinds.

Times are integer milliseconds since the Unix epoch (UTC) everywhere in the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import msgspec

# The enums of the contract, as types (the decoder's msgspec Struct checks them in C) and
# as tuples, in the order of schemas/interaction-event.v1.json.
Channel = Literal["web", "mobile_app", "chatbot", "phone", "chat", "email", "store", "social", "sms"]
EventType = Literal[
    "page_view",
    "login",
    "journey_start",
    "journey_step",
    "journey_complete",
    "journey_cancel",
    "contact_start",
    "contact_answered",
    "contact_abandoned",
    "contact_end",
    "complaint",
    "survey",
    "notification",
]
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)

# Default channel kinds (SPEC §1); configurable through ChannelKinds.
SELF_SERVICE_DIGITAL: Final = frozenset({"web", "mobile_app", "chatbot"})
ASSISTED: Final = frozenset({"phone", "chat", "email", "store", "social"})
NOTIFICATION: Final = frozenset({"sms"})


@dataclass(frozen=True, slots=True)
class ChannelKinds:
    """Which channels count as self-service digital, assisted or notification."""

    digital: frozenset[str] = SELF_SERVICE_DIGITAL
    assisted: frozenset[str] = ASSISTED
    notification: frozenset[str] = NOTIFICATION


class Event(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One valid interaction event (SPEC §1). `occurred_at` is epoch milliseconds, UTC.

    A frozen msgspec Struct rather than a frozen dataclass: same fields, positional and
    keyword construction, equality and attribute access, but built about 7x faster (the
    decoder makes one per message). Its array form (array_like: the fields in order) is how
    it travels on the internal topics (stages/envelope.py); the GC does not track it (it
    makes no reference cycle)."""

    event_id: str
    occurred_at: int
    channel: str
    type: str
    customer_id: str | None = None
    anonymous_id: str | None = None
    journey: str | None = None
    segment: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def routing_key(self) -> str:
        """The Kafka key the contract asks producers to use."""
        return self.customer_id if self.customer_id is not None else str(self.anonymous_id)
