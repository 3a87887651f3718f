"""The journey engine: customer-keyed, event-time ordered, deterministic (SPEC §2).

It receives items for customer keys (events with their resolved key, merge requests sent
to anonymous keys at login) and watermarks from its upstream sources. Items are applied
per customer in event-time order; journey deadlines fire once the watermark has passed
them. Every decision is a pure function of the items and watermarks, so replaying the
same input gives the same facts and the same ids.

Login merges cross partitions: the anonymous key's owner receives a MergeRequest at the
login's time, hands its state over in a MergePayload addressed to the customer, and
forwards any later item; the customer holds its items from the login on until the payload
is there. The result does not depend on when the payload arrives.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from journeystream.core import irritants as rules
from journeystream.core import state as stored
from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import (
    UNKNOWN_SEGMENT,
    UNSPECIFIED,
    AppliedEvent,
    Fact,
    Irritant,
    JourneyClosed,
    JourneyRecord,
    JourneyStarted,
    SessionEnded,
)
from journeystream.core.ids import irritant_id, journey_id
from journeystream.core.state import CustomerState, JourneyState, Session, event_from_list, event_to_list
from journeystream.core.timeline import Timeline

FAR_FUTURE = 2**62
# The only event types an event-local irritant rule looks at (irritants.py): repeat contacts
# (contact_start), waits (contact_answered / contact_abandoned), complaints, surveys.
_IRRITANT_TYPES = frozenset({"contact_start", "contact_answered", "contact_abandoned", "complaint", "survey"})


class KeyedEvent(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="e"):
    """An event for a resolved customer key; a login carries the anonymous key to merge."""

    key: str
    event: Event
    merge_from: str | None = None


class MergeRequest(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="r"):
    """To an anonymous key: hand your state over to `into` as of the login at `at`."""

    key: str
    into: str
    at: int
    login_event_id: str


class MergePayload(msgspec.Struct, frozen=True, gc=False):
    """To a customer key: the state of anonymous key `source` (None if it had none)."""

    key: str
    source: str
    state: bytes | None


Item = KeyedEvent | MergeRequest
Origin = tuple[str, int]
"""(customer key, fact sequence of that key) of a counted fact."""
Message = KeyedEvent | MergePayload  # what the engine sends to other customer keys


def item_time(item: Item) -> int:
    return item.event.occurred_at if isinstance(item, KeyedEvent) else item.at


@dataclass(slots=True)
class Output:
    facts: list[Fact] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    # Per fact: (key, sequence) of the customer key that emitted it, None for journey records
    # (state, not occurrences). Sequences grow per key, in the key's event-time order.
    origins: list[Origin | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Erased:
    """What `JourneyEngine.erase` removed."""

    key: str
    existed: bool  # a stored or live state was there
    linked: tuple[str, ...]  # anonymous keys merged (or being merged) into this key
    items_dropped: int  # items it held for a merge, or still buffered for it


def _no_store(key: str) -> bytes | None:
    return None


def _always() -> bool:
    return True


CHECK_EVERY = 256
"""Deadlines fired (or revisits made) between two `keep_going` questions."""


LIVE_CUSTOMERS = 20_000
"""Default bound of the customers an engine with a store keeps as live objects."""


class JourneyEngine:
    """The customer-keyed stage for one partition (or for everything, in a replay).

    With a store (`load` reads what `dirty_states()` returned, once the caller wrote it), the
    engine keeps at most about `live_customers` customers as Python objects: in
    `dirty_states()`, customers that were already clean at the previous call (so their
    stored state has had a whole checkpoint to be written) and hold nothing for a merge are
    dropped, least recently changed first, and loaded back through `load` when an item,
    payload, wakeup or revisit needs them. Only (deadline, key) stays in the wakeup heap.
    `restore` indexes a stored customer's deadline without keeping it. Without a store
    (replay) every customer stays live.
    """

    def __init__(
        self,
        config: RulesConfig,
        sources: Iterable[str],
        load: Callable[[str], bytes | None] = _no_store,
        live_customers: int = LIVE_CUSTOMERS,
    ) -> None:
        self.config = config
        self.timeline: Timeline[Item] = Timeline(sources)
        self._load = load
        self._evicts = load is not _no_store
        self._live_customers = live_customers
        self._customers: dict[str, CustomerState] = {}
        # clean customers (stored as they are), in the order they became clean: taken by the
        # previous dirty_states() call (may be dropped) and by the last one (not yet)
        # (OrderedDicts: taking the oldest stays O(1) after many deletions, unlike a dict's)
        self._clean_before: OrderedDict[str, None] = OrderedDict()
        self._clean_last: OrderedDict[str, None] = OrderedDict()
        self._open_journeys = 0  # open journeys of every customer, live or dropped
        self._dropped_journeys: dict[str, int] = {}  # dropped key -> its open journeys (> 0)
        self._dropped_seen: dict[str, int] = {}  # dropped key -> the oldest time of its ids
        self._restored_at: dict[str, int] = {}  # restored, not loaded yet -> applied count then
        self._dirty: set[str] = set()
        self._awaiting: set[str] = set()  # keys holding items until a merge payload arrives
        self._wakeups: list[tuple[int, str]] = []
        self._wake_at: dict[str, int] = {}
        self._touched: dict[str, JourneyState] = {}
        self._applied = 0  # events applied by this engine since it started (dedup retention)
        self._revisits: deque[tuple[int, str]] = deque()  # (applied count, key): check its ids again
        self._out = Output()
        self.late_events = 0
        self.late_items = 0
        self.duplicates = 0
        self.keep_going: Callable[[], bool] = _always
        """Asked now and then while deadlines fire after a watermark moved: False stops the
        work there (`behind`), for the caller to go on with `resume` once it has done its
        own (a live worker's heartbeats: a jump of days fires every stored customer's
        deadlines at once). Nothing else may reach the engine in between, so the facts are
        those of one uninterrupted call."""
        self.behind = False

    # ---- inputs -------------------------------------------------------------------------

    def push(self, item: Item) -> None:
        """An item read from the customer-keyed stream."""
        if not self.timeline.push(item_time(item), item):
            self.late_items += 1
            self._apply_item(item, late=True)

    def observe(self, source: str, watermark: int) -> None:
        """A watermark announced by an upstream partition: apply what is now in order."""
        if not self.timeline.observe(source, watermark):
            return
        for _, item in self.timeline.release():
            self._apply_item(item, late=False)
        self.behind = True
        self._catch_up()

    def resume(self) -> bool:
        """Go on with the deadlines and revisits an `observe` stopped short of (`keep_going`
        said so); True once none is left."""
        if self.behind:
            self._catch_up()
        return not self.behind

    def _catch_up(self) -> None:
        if self._fire_wakeups(self.timeline.watermark) and self._revisit():
            self.behind = False

    def receive_payload(self, payload: MergePayload) -> None:
        """A merge payload: applied on arrival (the waiting customer holds its items)."""
        state = self._customer(payload.key)
        if payload.source in state.merged_from:
            return  # delivered twice (a replay after a crash): merged already
        if state.awaiting == payload.source:
            self._merge(state, payload.source, payload.state)
            self._release_held(state)
        elif state.pending_payloads.get(payload.source) is None:
            # a repeated login's empty payload must not replace the history waiting here
            state.pending_payloads[payload.source] = _as_text(payload.state)
        self._changed(state)

    def restore(self, key: str, raw: bytes) -> None:
        """Index a stored customer (after a restart) so its deadlines fire."""
        data = stored.stored_fields(raw)
        if self._evicts and data[stored.FIELD_AWAITING] is None and not data[stored.FIELD_HELD]:
            self._index_stored(key, data)
            return
        state = CustomerState.from_fields(data)
        _renumber_seen(state, self._applied)  # applied before this start: retained as if just applied
        state.lowest_applied = None
        self._revisits.append((self._applied + self.config.dedup_min_items, key))
        self._open_journeys += len(state.journeys)
        self._schedule(state)
        self._customers[key] = state
        if state.awaiting is not None:
            self._awaiting.add(key)

    def _index_stored(self, key: str, data: list[Any]) -> None:
        """What `restore` keeps of a customer that stays in the store, read from its stored
        fields without building its objects (a million of them at start): its deadline, its
        open journeys, its oldest id. Loaded back (its ids renumbered so) when needed."""
        applied = self._applied
        self._revisits.append((applied + self.config.dedup_min_items, key))
        self._restored_at[key] = applied
        journeys = len(data[stored.FIELD_JOURNEYS])
        if journeys:
            self._open_journeys += journeys
            self._dropped_journeys[key] = journeys
        seen = data[stored.FIELD_SEEN]
        if seen:
            self._dropped_seen[key] = min(seen.values())[0]
        due = self._stored_wakeup(data)
        if due != FAR_FUTURE:
            self._wake_at[key] = due
            heapq.heappush(self._wakeups, (due, key))

    # ---- outputs ------------------------------------------------------------------------

    def drain(self) -> Output:
        """Facts and messages produced since the last drain; journey records at their
        latest version (one per journey touched)."""
        out, self._out = self._out, Output()
        records = [journey.record() for journey in self._touched.values()]
        out.facts.extend(records)
        out.origins.extend([None] * len(records))
        self._touched.clear()
        return out

    def drain_messages(self) -> list[Message]:
        """Only the messages (merge payloads, forwarded items) produced so far."""
        messages, self._out.messages = self._out.messages, []
        return messages

    @property
    def changed_customers(self) -> int:
        """Customers changed since the last `dirty_states()`: live until then, whatever the
        bound on live customers."""
        return len(self._dirty)

    def dirty_states(self) -> dict[str, bytes | None]:
        """Serialized state of every customer changed since the last call (None = delete)."""
        if self._evicts:
            self._drop_clean()
        snapshot: dict[str, bytes | None] = {}
        clean = self._clean_last
        for key in self._dirty:
            state = self._customers.get(key)
            if state is None:
                snapshot[key] = None
            else:
                snapshot[key] = state.to_bytes()
                clean[key] = None
        self._dirty.clear()
        return snapshot

    def _drop_clean(self) -> None:
        """Drop live customers clean since before the last dirty_states() call, oldest first,
        down to the bound; then the last call's clean customers become droppable."""
        customers, candidates = self._customers, self._clean_before
        excess = len(customers) - self._live_customers
        while excess > 0 and candidates:
            key, _ = candidates.popitem(last=False)
            state = customers.get(key)
            if state is None or state.awaiting is not None or state.held:
                continue
            del customers[key]
            self._note_dropped(state)
            excess -= 1
        candidates.update(self._clean_last)
        self._clean_last = OrderedDict()

    def complete_before(self) -> int:
        """Every counted fact before this time has been output: the watermark, held back by
        the oldest item a customer holds while it waits for a merge payload (those items'
        facts come once the payload is there, after the watermark has moved on)."""
        complete = self.timeline.watermark
        for key in self._awaiting:
            state = self._customers.get(key)
            if state is not None and state.held:
                complete = min(complete, min(_held_time(encoded) for encoded in state.held))
        return complete

    def customers_in_memory(self) -> int:
        """Customers held as live objects (with a store, the others are dropped)."""
        return len(self._customers)

    def open_journeys(self) -> int:
        """Open journeys of every customer of this engine, live or dropped (a counter)."""
        return self._open_journeys

    def customer(self, key: str) -> CustomerState | None:
        """Read access for tests and diagnostics."""
        state = self._customers.get(key)
        if state is None:
            raw = None if key in self._dirty else self._load(key)
            return CustomerState.from_bytes(raw) if raw is not None else None
        return state

    # ---- erasure ------------------------------------------------------------------------

    def erase(self, key: str) -> Erased:
        """Forget a customer key (GDPR erasure): its state (journeys, sessions, dedup ids,
        held items, tombstone), its place in every index, its journeys not yet output, and
        the items for it still waiting in the reorder buffer. The next `dirty_states()`
        deletes it from the store. Facts it already emitted stay in the output (their rows
        are deleted after they are written; the KPI cells count them, anonymously)."""
        state = self._customers.pop(key, None)
        if state is not None:
            self._open_journeys -= len(state.journeys)
        else:
            if key not in self._dirty:  # changed since the last flush: deleted here already
                raw = self._load(key)
                state = CustomerState.from_bytes(raw) if raw is not None else None
            self._open_journeys -= self._dropped_journeys.pop(key, 0)
        self._dropped_seen.pop(key, None)
        self._restored_at.pop(key, None)
        self._wake_at.pop(key, None)  # its heap entry is skipped as superseded
        self._clean_before.pop(key, None)
        self._clean_last.pop(key, None)
        self._awaiting.discard(key)
        self._dirty.add(key)
        for touched in [j for j, journey in self._touched.items() if journey.customer_key == key]:
            del self._touched[touched]
        dropped = self.timeline.discard(lambda item: item.key == key)
        if state is None:
            return Erased(key, False, (), dropped)
        linked = {*state.merged_from, *state.pending_payloads}
        if state.awaiting is not None:
            linked.add(state.awaiting)
        return Erased(key, True, tuple(sorted(linked)), dropped + len(state.held))

    # ---- items --------------------------------------------------------------------------

    def _apply_item(self, item: Item, late: bool) -> None:
        state = self._customer(item.key)
        if state.merged_into is not None and isinstance(item, KeyedEvent):
            if item.event.event_id in state.seen:
                # applied here before the merge (read again after a crash): its effects went
                # over in the merge payload; forwarded, the customer could apply it twice
                self.duplicates += 1
                return
            # this anonymous key was merged at login: the item belongs to the customer now
            self._out.messages.append(KeyedEvent(state.merged_into, item.event, item.merge_from))
            return
        if state.awaiting is not None:
            state.held.append(_encode_item(item, late))
            self._changed(state)
            return
        at = item_time(item)
        scheduled = self._wake_at.get(state.key)
        if scheduled is None or scheduled < at:
            self._fire_due(state, at)
        else:
            # no deadline of this customer is due (its wakeup is the earliest of them, and it
            # was computed after the customer last changed): only the history may need pruning
            self._tidy(state, at)
        if isinstance(item, MergeRequest):
            self._hand_over(state, item)
        else:
            self._apply_event(state, item, late)
        self._changed(state)

    def _apply_event(self, state: CustomerState, item: KeyedEvent, late: bool) -> None:
        event = item.event
        if event.event_id in state.seen:
            self.duplicates += 1
            return
        if item.merge_from is not None and item.merge_from not in state.merged_from:
            payload = state.pending_payloads.pop(item.merge_from, _MISSING)
            if payload is _MISSING:
                # the login waits for the anonymous history; it is applied right after the merge
                state.awaiting = item.merge_from
                state.held.append(_encode_item(item, late))
                self._awaiting.add(state.key)
                return
            self._merge(state, item.merge_from, _as_bytes(payload))
        state.seen[event.event_id] = (event.occurred_at, self._applied)
        if state.oldest_seen is not None and event.occurred_at < state.oldest_seen:
            state.oldest_seen = event.occurred_at
        self._revisits.append((self._applied + self.config.dedup_min_items, state.key))
        self._applied += 1
        self.late_events += late
        self._apply_to_journey(state, event, late)

    def _apply_to_journey(self, state: CustomerState, event: Event, late: bool) -> None:
        config, t = self.config, event.occurred_at
        if event.segment is not None:
            state.segment = event.segment
        segment = event.segment or state.segment or UNKNOWN_SEGMENT
        name = event.journey or self._most_recent_journey(state) or UNSPECIFIED
        journey = state.journeys.get(name) or self._open(state, name, event, segment)
        inbound = rules.is_inbound_assisted_contact(event, config)
        self._count_event(state, journey, event, segment, inbound)
        if event.type in _IRRITANT_TYPES:
            self._raise_irritants(state, journey, event, segment, inbound)
        if event.channel in config.kinds.digital:
            state.digital.append((t, name, event.event_id))
            if state.oldest_digital is not None and t < state.oldest_digital:
                state.oldest_digital = t
            self._track_session(state, event, name, segment)
        if inbound:
            state.contacts.append((t, name, event.event_id))
            if state.oldest_contact is not None and t < state.oldest_contact:
                state.oldest_contact = t
        if t > state.latest:
            state.latest = t
        self._emit(state, AppliedEvent(event, state.key, journey.journey_id, name, segment, late), t)
        if event.type == "journey_complete":
            self._close(state, journey, "completed", t)
        elif event.type == "journey_cancel":
            self._close(state, journey, "cancelled", t)

    def _open(self, state: CustomerState, name: str, event: Event, segment: str) -> JourneyState:
        journey = JourneyState(
            journey_id=journey_id(state.key, name, event.event_id),
            journey=name,
            customer_key=state.key,
            segment=segment,
            started_at=event.occurred_at,
            last_event_at=event.occurred_at,
            first_channel=event.channel,
            last_channel=event.channel,
            channels=[],
        )
        state.journeys[name] = journey
        self._open_journeys += 1
        self._emit(
            state,
            JourneyStarted(journey.journey_id, name, segment, event.channel, event.occurred_at),
            event.occurred_at,
        )
        return journey

    def _count_event(
        self, state: CustomerState, journey: JourneyState, event: Event, segment: str, inbound: bool
    ) -> None:
        if journey.event_count and event.channel != journey.last_channel:
            journey.channel_switches += 1
        if event.channel not in journey.channels:
            journey.channels.append(event.channel)
        journey.event_count += 1
        journey.last_channel = event.channel
        t = event.occurred_at
        if t > journey.last_event_at:
            journey.last_event_at = t
        journey.segment = segment
        state.touch += 1
        journey.touched = state.touch
        if event.type in ("journey_start", "journey_step") and (
            not journey.last_process_at or t > journey.last_process_at
        ):
            journey.last_process_at = t
        if inbound:
            journey.inbound_contacts += 1
        elif event.type == "contact_abandoned":
            journey.contacts_abandoned += 1
        elif event.type == "complaint":
            journey.complaints += 1
        self._bump(journey)

    def _raise_irritants(
        self, state: CustomerState, journey: JourneyState, event: Event, segment: str, inbound: bool
    ) -> None:
        """The event-local irritant rules, for the event types that can raise one (see
        _IRRITANT_TYPES); `inbound` is rules.is_inbound_assisted_contact(event)."""
        config, name = self.config, journey.journey
        after_web = rules.repeat_contact_after_web(event, name, state.digital, config) if inbound else None
        if after_web is not None:
            self._irritant(
                state,
                journey,
                "repeat_contact_after_web",
                event,
                segment,
                {"gap_ms": event.occurred_at - after_web[0]},
                after_web[2],
            )
        repeated = rules.repeat_contact(event, name, state.contacts, config) if inbound else None
        if repeated is not None:
            journey.repeat_contacts += 1
            self._irritant(
                state,
                journey,
                "repeat_contact",
                event,
                segment,
                {"gap_ms": event.occurred_at - repeated[0]},
                repeated[2],
            )
        wait = rules.long_wait(event, config)
        if wait is not None:
            journey.long_waits += 1
            self._irritant(state, journey, "long_wait", event, segment, wait)
        if event.type == "contact_abandoned":
            self._irritant(
                state,
                journey,
                "contact_abandoned",
                event,
                segment,
                {"wait_s": event.attributes.get("wait_s")},
            )
        elif event.type == "complaint":
            self._irritant(
                state, journey, "complaint", event, segment, {"reason": event.attributes.get("reason")}
            )
        for kind, details in (
            ("detractor", rules.detractor(event)),
            ("high_effort", rules.high_effort(event)),
        ):
            if details is not None:
                self._irritant(state, journey, kind, event, segment, details)

    def _irritant(
        self,
        state: CustomerState,
        journey: JourneyState,
        kind: str,
        event: Event,
        segment: str,
        details: dict[str, Any],
        earlier_event_id: str | None = None,
    ) -> None:
        ids = (event.event_id,) if earlier_event_id is None else (event.event_id, earlier_event_id)
        journey.irritant_count += 1
        self._bump(journey)
        self._emit(
            state,
            Irritant(
                irritant_id(kind, event.event_id),
                kind,
                state.key,
                journey.journey_id,
                journey.journey,
                segment,
                event.channel,
                event.occurred_at,
                ids,
                details,
            ),
            event.occurred_at,
        )

    def _track_session(self, state: CustomerState, event: Event, journey: str, segment: str) -> None:
        if event.session_id is None:
            return
        session = state.sessions.get(event.session_id)
        if session is None:
            state.sessions[event.session_id] = Session(
                event.session_id, event.channel, journey, segment, event.occurred_at, event.occurred_at, 1
            )
            return
        session.event_count += 1
        if event.occurred_at > session.last_at:
            session.last_at = event.occurred_at

    # ---- deadlines ----------------------------------------------------------------------

    def _revisit(self) -> bool:
        """Prune the ids of customers whose applied-items retention has passed; False if
        `keep_going` stopped it first."""
        revisits, keep_going = self._revisits, self.keep_going
        done = 0
        while revisits and revisits[0][0] <= self._applied:
            done += 1
            if done % CHECK_EVERY == 0 and not keep_going():
                return False
            _, key = revisits.popleft()
            state = self._customers.get(key)
            if state is None and self._evicts and key not in self._dirty:
                oldest = self._dropped_seen.get(key)
                if oldest is None or oldest >= self.timeline.watermark - self.config.dedup_window_ms:
                    continue  # dropped with no id old in event time: nothing to prune
                state = self._loaded(key)
            if state is not None and state.awaiting is None and state.seen:
                self._fire_due(state, self.timeline.watermark)
                self._changed(state)
        return True

    def _fire_wakeups(self, watermark: int) -> bool:
        """Every deadline before the watermark; False if `keep_going` stopped it first."""
        wakeups, keep_going = self._wakeups, self.keep_going
        done = 0
        while wakeups and wakeups[0][0] < watermark:
            done += 1
            if done % CHECK_EVERY == 0 and not keep_going():
                return False
            due, key = heapq.heappop(wakeups)
            if self._wake_at.get(key) != due:
                continue  # superseded by a later schedule
            del self._wake_at[key]
            state = self._customer(key)
            if state.awaiting is None:
                self._fire_due(state, watermark)
                self._changed(state)
                if self._wake_at.get(key, FAR_FUTURE) < watermark:
                    raise AssertionError(f"wakeup of {key!r} did not move past the watermark")
        return True

    def _fire_due(self, state: CustomerState, before: int) -> None:
        """Everything of this customer due strictly before `before`, in time order: journey
        deadlines (abandoned / expired), session ends, and pruning of old history."""
        if state.journeys:
            while True:
                due, journey = self._next_journey_deadline(state)
                if journey is None or due >= before:
                    break
                status = "abandoned" if journey.last_process_at is not None else "expired"
                self._close(state, journey, status, due)
                if status == "abandoned":
                    self._irritant_abandonment(state, journey, due)
        if state.sessions:
            timeout = self.config.session_timeout_ms
            for session in [s for s in state.sessions.values() if s.last_at + timeout < before]:
                del state.sessions[session.session_id]
                self._emit(
                    state,
                    SessionEnded(
                        session.session_id,
                        state.key,
                        session.journey,
                        session.segment,
                        session.channel,
                        session.first_at,
                        session.event_count,
                    ),
                    session.last_at + timeout,
                )
        self._tidy(state, before)

    def _tidy(self, state: CustomerState, before: int) -> None:
        """Pruning of old history, the tombstone and the segment, as of `before` (the part of
        _fire_due that the wakeup schedule does not cover)."""
        self._prune(state, before)
        if (
            state.merged_into is not None
            and state.latest + self.config.idle_timeout_ms < before
            and not state.seen
        ):
            # stragglers are no longer expected, and no id it handed over can come back
            # from a redelivery any more (see dedup_min_items): forget the tombstone
            state.merged_into = None
        if state.segment is not None and not (
            state.journeys
            or state.digital
            or state.contacts
            or state.sessions
            or state.held
            or state.awaiting
            or state.merged_into
        ):
            # nothing of the customer is left: forget its segment now, as deleting the state
            # would, so the segment does not depend on whether a wakeup ran before this item
            state.segment = None

    def _next_journey_deadline(self, state: CustomerState) -> tuple[int, JourneyState | None]:
        best: tuple[int, JourneyState | None] = (FAR_FUTURE, None)
        for journey in state.journeys.values():
            due = self._deadline(journey)
            if due < best[0]:
                best = (due, journey)
        return best

    def _deadline(self, journey: JourneyState) -> int:
        if journey.last_process_at is not None:
            return journey.last_process_at + self.config.abandon_after_ms
        return journey.last_event_at + self.config.idle_timeout_ms

    def _irritant_abandonment(self, state: CustomerState, journey: JourneyState, at: int) -> None:
        self._emit(
            state,
            Irritant(
                irritant_id("abandonment", journey.journey_id),
                "abandonment",
                state.key,
                journey.journey_id,
                journey.journey,
                journey.segment,
                journey.last_channel,
                at,
                (),
                {"deadline": at},
            ),
            at,
        )

    def _close(self, state: CustomerState, journey: JourneyState, status: str, at: int) -> None:
        journey.status = status
        journey.ended_at = at
        if status == "abandoned":
            journey.irritant_count += 1
        self._bump(journey)
        del state.journeys[journey.journey]
        self._open_journeys -= 1
        self._emit(
            state,
            JourneyClosed(
                journey.journey_id,
                journey.journey,
                journey.segment,
                journey.last_channel,
                status,
                at,
                len(journey.channels),
                journey.inbound_contacts,
            ),
            at,
        )

    def _emit(self, state: CustomerState, fact: Fact, at: int) -> None:
        """Output a counted fact with its origin. The key's sequence grows by one per fact
        and never below at × 1000, so it keeps growing when a deleted state is recreated."""
        seq = state.fact_seq + 1
        state.fact_seq = seq if seq > at * 1000 else at * 1000
        self._out.facts.append(fact)
        self._out.origins.append((state.key, state.fact_seq))

    def _prune(self, state: CustomerState, before: int) -> None:
        # A history is rebuilt only when its oldest entry (cached on the state) is out of its
        # window: per item, this is a few comparisons, not a pass over the history.
        config = self.config
        if state.digital:
            cutoff = before - config.web_to_contact_window_ms
            if _oldest_digital(state) < cutoff:
                state.digital = [h for h in state.digital if h[0] >= cutoff]
                state.oldest_digital = None
        if state.contacts:
            cutoff = before - config.repeat_contact_window_ms
            if _oldest_contact(state) < cutoff:
                state.contacts = [h for h in state.contacts if h[0] >= cutoff]
                state.oldest_contact = None
        # an applied event id is forgotten once it is old in event time AND enough items were
        # applied since: after a crash, items are delivered again by offset, and in a fast
        # catch-up a few seconds of input can span days of event time
        seen = state.seen
        if not seen:
            return
        horizon = before - config.dedup_window_ms
        if _oldest_seen(state) >= horizon:
            return
        recent = self._applied - config.dedup_min_items
        lowest = state.lowest_applied
        if lowest is None:
            lowest = state.lowest_applied = min(entry[1] for entry in seen.values())
        if lowest > recent:
            return  # every old id waits for enough items to be applied after it
        if any(t < horizon and applied <= recent for t, applied in seen.values()):
            state.seen = {
                event_id: entry
                for event_id, entry in seen.items()
                if entry[0] >= horizon or entry[1] > recent
            }
            state.oldest_seen = state.lowest_applied = None

    def _next_wakeup(self, state: CustomerState) -> int:
        config = self.config
        due = FAR_FUTURE
        if state.journeys:
            abandon_after, idle_timeout = config.abandon_after_ms, config.idle_timeout_ms
            for journey in state.journeys.values():
                process_at = journey.last_process_at
                at = (
                    process_at + abandon_after
                    if process_at is not None
                    else journey.last_event_at + idle_timeout
                )
                if at < due:
                    due = at
        if state.sessions:
            timeout = config.session_timeout_ms
            for session in state.sessions.values():
                if session.last_at + timeout < due:
                    due = session.last_at + timeout
        if state.digital:
            oldest = state.oldest_digital
            if oldest is None:
                oldest = _oldest_digital(state)
            if oldest + config.web_to_contact_window_ms < due:
                due = oldest + config.web_to_contact_window_ms
        if state.contacts:
            oldest = state.oldest_contact
            if oldest is None:
                oldest = _oldest_contact(state)
            if oldest + config.repeat_contact_window_ms < due:
                due = oldest + config.repeat_contact_window_ms
        # ids already old in event time wait for their revisit (by applied items), not a deadline
        watermark = self.timeline.watermark
        if state.seen:
            window = config.dedup_window_ms
            oldest = state.oldest_seen
            if oldest is None:
                oldest = _oldest_seen(state)
            if oldest + window >= watermark:
                if oldest + window < due:
                    due = oldest + window
            else:
                pending = [t + window for t, _ in state.seen.values() if t + window >= watermark]
                if pending:
                    due = min(due, min(pending))
        if state.merged_into is not None and state.latest + config.idle_timeout_ms >= watermark:
            due = min(due, state.latest + config.idle_timeout_ms)  # forget the tombstone a day later
        return due

    def _stored_wakeup(self, data: list[Any]) -> int:
        """`_next_wakeup` of a stored state's fields (`stored.stored_fields`), the same rules
        read from the lists (a test holds the two in agreement)."""
        config = self.config
        due = FAR_FUTURE
        for journey in data[stored.FIELD_JOURNEYS]:
            process_at = journey[stored.JOURNEY_LAST_PROCESS_AT]
            at = (
                process_at + config.abandon_after_ms
                if process_at is not None
                else journey[stored.JOURNEY_LAST_EVENT_AT] + config.idle_timeout_ms
            )
            if at < due:
                due = at
        for session in data[stored.FIELD_SESSIONS]:
            at = session[stored.SESSION_LAST_AT] + config.session_timeout_ms
            if at < due:
                due = at
        digital = data[stored.FIELD_DIGITAL]
        if digital:
            due = min(due, min(digital)[0] + config.web_to_contact_window_ms)
        contacts = data[stored.FIELD_CONTACTS]
        if contacts:
            due = min(due, min(contacts)[0] + config.repeat_contact_window_ms)
        watermark = self.timeline.watermark
        seen = data[stored.FIELD_SEEN]
        if seen:
            window = config.dedup_window_ms
            oldest: int = min(seen.values())[0]
            if oldest + window >= watermark:
                due = min(due, oldest + window)
            else:
                pending = [t + window for t, _ in seen.values() if t + window >= watermark]
                if pending:
                    due = min(due, min(pending))
        latest: int = data[stored.FIELD_LATEST]
        if data[stored.FIELD_MERGED_INTO] is not None and latest + config.idle_timeout_ms >= watermark:
            due = min(due, latest + config.idle_timeout_ms)
        return due

    def _schedule(self, state: CustomerState) -> None:
        due = self._next_wakeup(state)
        if due == FAR_FUTURE:
            self._wake_at.pop(state.key, None)
            return
        if self._wake_at.get(state.key) != due:
            self._wake_at[state.key] = due
            heapq.heappush(self._wakeups, (due, state.key))

    # ---- login merges -------------------------------------------------------------------

    def _hand_over(self, state: CustomerState, request: MergeRequest) -> None:
        """At the login's time: send this anonymous key's state to the customer, keep a
        tombstone that forwards later items."""
        # merged before (a repeated login): nothing is left to hand over
        payload = None if state.merged_into is not None else _handover_bytes(state)
        self._out.messages.append(MergePayload(request.into, state.key, payload))
        self._open_journeys -= len(state.journeys)
        _become_tombstone(state, request.into, request.at)
        self._awaiting.discard(state.key)
        # the tombstone keeps the ids it handed over: until they are forgotten, a redelivered
        # item of this key is still forwarded, never taken for a new anonymous visitor
        _renumber_seen(state, self._applied)
        state.lowest_applied = None
        self._revisits.append((self._applied + self.config.dedup_min_items, state.key))

    def _merge(self, state: CustomerState, source: str, payload: bytes | None) -> None:
        state.merged_from.append(source)
        if payload is None:
            return
        anonymous = CustomerState.from_bytes(payload)
        for journey in sorted(anonymous.journeys.values(), key=lambda j: (j.last_event_at, j.touched)):
            self._adopt(state, journey)
        state.digital = sorted(state.digital + anonymous.digital)
        state.contacts = sorted(state.contacts + anonymous.contacts)
        state.seen.update({event_id: (entry[0], self._applied) for event_id, entry in anonymous.seen.items()})
        state.oldest_digital = state.oldest_contact = state.oldest_seen = state.lowest_applied = None
        self._revisits.append((self._applied + self.config.dedup_min_items, state.key))
        for session in anonymous.sessions.values():
            state.sessions.setdefault(session.session_id, session)
        if state.segment is None:
            state.segment = anonymous.segment
        state.latest = max(state.latest, anonymous.latest)

    def _adopt(self, state: CustomerState, journey: JourneyState) -> None:
        journey.customer_key = state.key
        state.touch += 1
        journey.touched = state.touch
        existing = state.journeys.get(journey.journey)
        if existing is None:
            state.journeys[journey.journey] = journey
            self._open_journeys += 1
            self._bump(journey)
            return
        # both sides have it open: one journey under the earlier-started id (SPEC §2)
        kept, absorbed = sorted((existing, journey), key=lambda j: (j.started_at, j.journey_id))
        _combine(kept, absorbed)
        absorbed.status, absorbed.ended_at = "merged", max(kept.last_event_at, absorbed.last_event_at)
        self._bump(absorbed)
        state.journeys[kept.journey] = kept
        self._bump(kept)

    def _release_held(self, state: CustomerState) -> None:
        state.awaiting = None
        self._awaiting.discard(state.key)
        held, state.held = state.held, []
        for position, encoded in enumerate(held):
            item, late = _decode_item(encoded)
            self._apply_item(item, late)
            if state.awaiting is not None:
                # a second login among the held items waits in turn; the rest stays behind it
                state.held.extend(held[position + 1 :])
                return
        if self.timeline.watermark > state.latest:
            self._fire_due(state, self.timeline.watermark)

    # ---- bookkeeping --------------------------------------------------------------------

    def _customer(self, key: str) -> CustomerState:
        state = self._customers.get(key)
        if state is None:
            # a key changed since the last flush is not in the store yet (deleted here):
            # loading it would bring back the stale stored state
            state = None if key in self._dirty else self._loaded(key)
            if state is None:
                state = self._customers[key] = CustomerState(key)
        return state

    def _note_dropped(self, state: CustomerState) -> None:
        """What the engine still needs to know of a customer it does not hold."""
        if state.journeys:
            self._dropped_journeys[state.key] = len(state.journeys)
        if state.seen:
            self._dropped_seen[state.key] = _oldest_seen(state)

    def _loaded(self, key: str) -> CustomerState | None:
        """A customer from the store, made live again (None if the store has none)."""
        raw = self._load(key)
        if raw is None:
            return None
        state = CustomerState.from_bytes(raw)
        self._dropped_seen.pop(key, None)
        restored = self._restored_at.pop(key, None)
        if restored is not None:
            _renumber_seen(state, restored)  # as restore() renumbered them
        if self._dropped_journeys.pop(key, None) is None:
            # not counted yet: never held by this engine, or dropped (or restored) without
            # open journeys, as it still is
            self._open_journeys += len(state.journeys)
        self._customers[key] = state
        self._clean_before[key] = None  # as stored: droppable until it changes
        return state

    def _changed(self, state: CustomerState) -> None:
        self._dirty.add(state.key)
        self._clean_before.pop(state.key, None)
        self._clean_last.pop(state.key, None)
        if state.is_empty():
            del self._customers[state.key]
            self._wake_at.pop(state.key, None)
            return
        self._schedule(state)

    def _bump(self, journey: JourneyState) -> None:
        journey.version += 1
        journey.effort_score = rules.effort_score(
            journey.inbound_contacts,
            journey.channel_switches,
            journey.contacts_abandoned,
            journey.long_waits,
            journey.repeat_contacts,
            journey.complaints,
            self.config,
        )
        self._touched[journey.journey_id] = journey

    def _most_recent_journey(self, state: CustomerState) -> str | None:
        if not state.journeys:
            return None
        return max(state.journeys.values(), key=lambda j: (j.last_event_at, j.touched)).journey


def _combine(kept: JourneyState, absorbed: JourneyState) -> None:
    kept.started_at = min(kept.started_at, absorbed.started_at)
    if absorbed.last_event_at > kept.last_event_at:
        kept.last_channel = absorbed.last_channel  # the channel of the combined last event
    kept.last_event_at = max(kept.last_event_at, absorbed.last_event_at)
    kept.event_count += absorbed.event_count
    kept.channels += [c for c in absorbed.channels if c not in kept.channels]
    kept.channel_switches += absorbed.channel_switches
    kept.inbound_contacts += absorbed.inbound_contacts
    kept.contacts_abandoned += absorbed.contacts_abandoned
    kept.long_waits += absorbed.long_waits
    kept.repeat_contacts += absorbed.repeat_contacts
    kept.complaints += absorbed.complaints
    kept.irritant_count += absorbed.irritant_count
    if absorbed.last_process_at is not None:
        kept.last_process_at = max(kept.last_process_at or absorbed.last_process_at, absorbed.last_process_at)
    kept.version = max(kept.version, absorbed.version)


def _oldest_digital(state: CustomerState) -> int:
    """The oldest time in a non-empty digital history (cached on the state)."""
    oldest = state.oldest_digital
    if oldest is None:
        oldest = state.oldest_digital = min(state.digital)[0]
    return oldest


def _oldest_contact(state: CustomerState) -> int:
    oldest = state.oldest_contact
    if oldest is None:
        oldest = state.oldest_contact = min(state.contacts)[0]
    return oldest


def _renumber_seen(state: CustomerState, applied: int) -> None:
    """Every id of `state.seen` counted as applied at number `applied`."""
    seen = state.seen
    for event_id, (at, _) in seen.items():
        seen[event_id] = (at, applied)  # an existing key: the dict's size does not change


def _oldest_seen(state: CustomerState) -> int:
    oldest = state.oldest_seen
    if oldest is None:
        oldest = state.oldest_seen = min(state.seen.values())[0]
    return oldest


def _become_tombstone(state: CustomerState, into: str, at: int) -> None:
    """What is left of an anonymous key once merged: where to forward later items."""
    state.journeys, state.digital, state.contacts, state.sessions = {}, [], [], {}
    state.oldest_digital = state.oldest_contact = None
    state.held, state.pending_payloads, state.awaiting = [], {}, None
    state.merged_into = into
    state.latest = max(state.latest, at)


def _handover_bytes(state: CustomerState) -> bytes | None:
    if not (state.journeys or state.digital or state.contacts or state.seen or state.sessions):
        return None
    return state.to_bytes()


_MISSING: Any = object()


def _as_text(payload: bytes | None) -> str | None:
    """Payloads are JSON (UTF-8): kept as text inside the JSON state."""
    return None if payload is None else payload.decode()


def _as_bytes(payload: str | None) -> bytes | None:
    return None if payload is None else payload.encode()


def _encode_item(item: Item, late: bool) -> list[Any]:
    if isinstance(item, KeyedEvent):
        return ["e", item.key, event_to_list(item.event), item.merge_from, late]
    return ["m", item.key, item.into, item.at, item.login_event_id, late]


def _held_time(data: list[Any]) -> int:
    """The event time of an encoded held item (see _encode_item)."""
    return int(data[2][1]) if data[0] == "e" else int(data[3])


def _decode_item(data: list[Any]) -> tuple[Item, bool]:
    if data[0] == "e":
        return KeyedEvent(data[1], event_from_list(data[2]), data[3]), bool(data[4])
    return MergeRequest(data[1], data[2], data[3], data[4]), bool(data[5])


__all__ = [
    "Item",
    "JourneyEngine",
    "JourneyRecord",
    "KeyedEvent",
    "MergePayload",
    "MergeRequest",
    "Message",
    "Output",
    "item_time",
]
