"""Customer-key resolution (SPEC §2 "Customer key"), keyed by device (anonymous id).

Anonymous-only events and logins reach this stage keyed by their anonymous id and are
resolved in event-time order: `customer_id` when present; else the customer linked to the
anonymous id by an earlier login; else `anon:<anonymous_id>`. A login links the two ids,
asks the anonymous key to hand its history over (MergeRequest), and goes on to the customer
carrying the anonymous key it merges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from journeystream.core.events import Event
from journeystream.core.journeys import Item, KeyedEvent, MergeRequest
from journeystream.core.timeline import Timeline

ANONYMOUS_PREFIX = "anon:"


def anonymous_key(anonymous_id: str) -> str:
    return ANONYMOUS_PREFIX + anonymous_id


def needs_identity(event: Event) -> bool:
    """Events whose key depends on login links: anonymous-only events, and logins."""
    return event.customer_id is None or event.type == "login"


def device_key(event: Event) -> str:
    """The key of the identity stage: the anonymous id (present on every event routed here)."""
    return str(event.anonymous_id if event.anonymous_id is not None else event.customer_id)


class IdentityStage:
    """Resolves customer keys for one partition of device-keyed events."""

    def __init__(
        self, sources: Iterable[str], load_link: Callable[[str], str | None] = lambda anon: None
    ) -> None:
        self.timeline: Timeline[Event] = Timeline(sources)
        self._load_link = load_link
        self._links: dict[str, str | None] = {}
        self._dirty: dict[str, str] = {}
        self._out: list[Item] = []
        self.late_items = 0

    def push(self, event: Event) -> None:
        if not self.timeline.push(event.occurred_at, event):
            self.late_items += 1
            self._resolve(event)  # late: resolved with the links known now

    def observe(self, source: str, watermark: int) -> None:
        if self.timeline.observe(source, watermark):
            for _, event in self.timeline.release():
                self._resolve(event)

    def drain(self) -> list[Item]:
        """Items for the customer-keyed stage, in the order they were resolved."""
        out, self._out = self._out, []
        return out

    def dirty_links(self) -> dict[str, str]:
        dirty, self._dirty = self._dirty, {}
        return dirty

    def _resolve(self, event: Event) -> None:
        anonymous_id = event.anonymous_id
        if event.customer_id is not None:
            if event.type == "login" and anonymous_id is not None:
                self._link(anonymous_id, event.customer_id)
                self._out.append(
                    MergeRequest(
                        anonymous_key(anonymous_id), event.customer_id, event.occurred_at, event.event_id
                    )
                )
                self._out.append(KeyedEvent(event.customer_id, event, anonymous_key(anonymous_id)))
            else:
                self._out.append(KeyedEvent(event.customer_id, event))
            return
        assert anonymous_id is not None  # the contract guarantees one of the two ids
        customer = self._linked(anonymous_id)
        self._out.append(KeyedEvent(customer if customer is not None else anonymous_key(anonymous_id), event))

    def _linked(self, anonymous_id: str) -> str | None:
        if anonymous_id not in self._links:
            self._links[anonymous_id] = self._load_link(anonymous_id)
        return self._links[anonymous_id]

    def _link(self, anonymous_id: str, customer_id: str) -> None:
        if self._linked(anonymous_id) != customer_id:
            self._links[anonymous_id] = customer_id
            self._dirty[anonymous_id] = customer_id
