"""Customer-key resolution (SPEC §2 "Customer key"), keyed by device (anonymous id).

Anonymous-only events and logins reach this stage keyed by their anonymous id and are
resolved in event-time order: `customer_id` when present; else the customer linked to the
anonymous id by an earlier login; else `anon:<anonymous_id>`. A login links the two ids,
asks the anonymous key to hand its history over (MergeRequest), and goes on to the customer
carrying the anonymous key it merges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson

from journeystream.core.events import Event
from journeystream.core.journeys import Item, KeyedEvent, MergeRequest
from journeystream.core.state import dumps_exact
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


Links = list[tuple[int, str]]  # (login time, customer id), in time order


def encode_links(links: Links) -> bytes:
    return dumps_exact(links)


def decode_links(raw: bytes) -> Links:
    return [(int(at), str(customer)) for at, customer in orjson.loads(raw)]


class IdentityStage:
    """Resolves customer keys for one partition of device-keyed events.

    A link applies to the events after its login's time, not to every event processed
    after the link was made: after a restart, events from before the login may be read
    again while the stored link already exists, and they must still resolve as anonymous.
    """

    def __init__(
        self, sources: Iterable[str], load_link: Callable[[str], bytes | None] = lambda anon: None
    ) -> None:
        self.timeline: Timeline[Event] = Timeline(sources)
        self._load_link = load_link
        self._links: dict[str, Links] = {}
        self._dirty: dict[str, Links | None] = {}  # None: erased
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

    def dirty_links(self) -> dict[str, Links | None]:
        dirty, self._dirty = self._dirty, {}
        return dirty

    def erase(self, anonymous_id: str) -> tuple[bool, int]:
        """Forget an anonymous id (GDPR erasure): its login links, and its events still
        waiting in the reorder buffer. Returns whether it had links, and how many events
        were dropped."""
        had_links = bool(self._links_of(anonymous_id))
        self._links[anonymous_id] = []
        self._dirty[anonymous_id] = None
        dropped = self.timeline.discard(lambda event: event.anonymous_id == anonymous_id)
        return had_links, dropped

    def _resolve(self, event: Event) -> None:
        anonymous_id = event.anonymous_id
        if event.customer_id is not None:
            if event.type == "login" and anonymous_id is not None:
                self._link(anonymous_id, event.customer_id, event.occurred_at)
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
        customer = self.linked(anonymous_id, event.occurred_at)
        self._out.append(KeyedEvent(customer if customer is not None else anonymous_key(anonymous_id), event))

    def linked(self, anonymous_id: str, at: int) -> str | None:
        """The customer the anonymous id was linked to by the last login before `at`."""
        customer = None
        for login_at, linked_to in self._links_of(anonymous_id):
            if login_at >= at:
                break
            customer = linked_to
        return customer

    def _links_of(self, anonymous_id: str) -> Links:
        links = self._links.get(anonymous_id)
        if links is None:
            raw = self._load_link(anonymous_id)
            links = self._links[anonymous_id] = decode_links(raw) if raw is not None else []
        return links

    def _link(self, anonymous_id: str, customer_id: str, at: int) -> None:
        links = self._links_of(anonymous_id)
        if (at, customer_id) not in links:
            links.append((at, customer_id))
            links.sort()
            self._dirty[anonymous_id] = links
