"""Seeded, deterministic multichannel traffic with ground-truth labels (SPEC §1-§2).

`generate(config)` yields Kafka-ready messages (key, JSON value) in delivery order;
`ground_truth(config)` returns what the generator *intended* for exactly those messages:
each journey's final status and each irritant that the SPEC §2 rules must raise.

How it works, in three stages:

1. Planning. Scenarios (one customer, one journey name, e.g. "web form abandoned, then a
   call") are planned one at a time at increasing start times. A scenario is planned in
   full, then committed only if its messages fit the remaining budget, so the output has
   exactly `config.events` messages and no scenario is cut short. Journey instances and the
   event-local irritants (contact_abandoned, long_wait, complaint, detractor, high_effort,
   abandonment) are labelled here, because the scenario decides them by construction.
2. Release in event-time order. Planned events sit in a heap until no later scenario can
   start before them. The two window rules (repeat_contact_after_web, repeat_contact) look
   at the customer's whole recent history, possibly across concurrent scenarios, so they
   are labelled here, over the history released so far, which is exactly what the engine
   will have seen. The choice to send `journey: null` is also made here, only where the
   attach-to-most-recently-active-journey rule certainly picks the intended journey.
3. Delivery. A second heap holds messages back by at most `max_disorder_ms` and adds
   byte-identical duplicates shortly after their original.

Timeline: scenario starts are spaced by their size over `events_per_second`, with a gentle
feedback on the count released so far, so event time keeps pace with the message count
(sent at `events_per_second`, event time tracks the clock). A finite run ends by draining the
scenarios already started: its last messages jump ahead in event time (repeat contacts can
come days later).

Labels assume the engine sees the events in event-time order, i.e. `max_disorder_ms` at most
the engine's allowed lateness (5 s by default). A journey's label is its final status; in a
pure replay, journeys whose deadline lies after the last event's time close only once the
watermark passes it.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

import orjson

from journeystream.core.events import ASSISTED, SELF_SERVICE_DIGITAL
from journeystream.core.ids import irritant_id, journey_id

__all__ = [
    "GroundTruth",
    "SimConfig",
    "SimMessage",
    "generate",
    "generate_with_truth",
    "ground_truth",
    "send_to_kafka",
    "write_jsonl",
]

# SPEC §2 defaults the labels are computed for.
ABANDON_AFTER_MS: Final = 30 * 60_000
IDLE_TIMEOUT_MS: Final = 24 * 3_600_000
WEB_TO_CONTACT_WINDOW_MS: Final = 24 * 3_600_000
REPEAT_CONTACT_WINDOW_MS: Final = 7 * 24 * 3_600_000
LONG_WAIT_S: Final = 300
MAX_MESSAGE_BYTES: Final = 64 * 1024

# Events never land within this distance of a journey deadline, so no label depends on
# how an implementation treats a tie with the deadline.
_BOUNDARY_MARGIN_MS: Final = 2_000
_SECOND: Final = 1_000
_MINUTE: Final = 60_000
_HOUR: Final = 3_600_000
_DAY: Final = 24 * _HOUR

JOURNEYS: Final = (
    "subscription",
    "claim",
    "billing",
    "move_address",
    "contract_change",
    "technical_support",
)
_JOURNEY_WEIGHTS: Final = (25, 15, 20, 10, 12, 18)
SEGMENTS: Final = ("premium", "standard", "basic")
_SEGMENT_WEIGHTS: Final = (12, 58, 30)

_PAGES: Final = {
    "subscription": ("/offers", "/offers/compare", "/offers/fibre", "/subscribe"),
    "claim": ("/claims", "/claims/how-to", "/claims/new", "/help/claims"),
    "billing": ("/account/invoices", "/account/invoices/latest", "/help/billing", "/account/pay"),
    "move_address": ("/moving", "/moving/checklist", "/account/address"),
    "contract_change": ("/account/contract", "/offers/options", "/account/contract/change"),
    "technical_support": ("/help", "/help/outage", "/help/router", "/status"),
}
_STEPS: Final = {
    "subscription": ("choose_offer", "personal_details", "payment", "signature"),
    "claim": ("declare", "upload_documents", "bank_details", "confirm"),
    "billing": ("view_invoice", "payment_method", "dispute", "confirm"),
    "move_address": ("new_address", "move_date", "transfer_options", "confirm"),
    "contract_change": ("select_option", "quote", "terms", "confirm"),
    "technical_support": ("diagnose", "troubleshoot", "book_technician", "confirm"),
}
_COMPLAINT_REASONS: Final = (
    "long_wait",
    "billing_error",
    "unresolved_issue",
    "agent_attitude",
    "delay",
    "website_bug",
)
_NOTIFICATION_KINDS: Final = {
    "subscription": "order_confirmation",
    "claim": "claim_update",
    "billing": "invoice_ready",
    "move_address": "move_reminder",
    "contract_change": "contract_update",
    "technical_support": "appointment",
}
_USER_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Safari/604.1",
    "journeystream-app/4.2.1 (Android 14)",
)

# Scenario mix (weights). Digital ones may start as an anonymous visitor.
_SCENARIOS: Final = (
    ("digital_complete", 24),
    ("digital_cancel", 5),
    ("digital_abandon", 14),
    ("browse", 10),
    ("web_to_contact", 14),
    ("contact_first", 13),
    ("repeat_contact", 5),
    ("chatbot_escalation", 5),
    ("complaint", 4),
    ("notification_led", 6),
)
_DIGITAL_SCENARIOS: Final = frozenset(
    {"digital_complete", "digital_cancel", "digital_abandon", "browse", "web_to_contact"}
)
# These need the visitor to log in: completing, or a call that must be linked to the web use.
_NEEDS_LOGIN: Final = frozenset({"digital_complete", "web_to_contact"})
_LOGIN_SHARE: Final = 0.75
_NULL_JOURNEY_SHARE: Final = 0.05
_OFFSET_TIME_SHARE: Final = 0.05
_EXTRA_ATTRIBUTE_SHARE: Final = 0.05
_DISORDER_SHARE: Final = 0.2
_CUSTOMER_PICKS: Final = 8
_FEEDBACK_S: Final = 30.0

INVALID_REASONS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "bad_enum",
    "bad_time",
    "missing_id",
    "too_large",
    "bad_attribute",
)
_EPOCH: Final = datetime(1970, 1, 1)


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate. Every field has a default; the same config gives the same bytes."""

    seed: int = 42
    customers: int = 2000
    events: int = 10_000
    start_ms: int = 1_767_225_600_000
    events_per_second: float = 200.0
    invalid_share: float = 0.0
    duplicate_share: float = 0.0
    max_disorder_ms: int = 0
    anonymous_share: float = 0.3
    # An incident: among scenarios starting in [spike_start_ms, spike_end_ms), a share
    # `spike_share` become abandoned self-service attempts of journey `spike_journey`.
    spike_journey: str | None = None
    spike_start_ms: int = 0
    spike_end_ms: int = 0
    spike_share: float = 0.7

    def __post_init__(self) -> None:
        # Fail early on nonsense rather than producing a skewed or endless stream.
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if not self.events_per_second > 0:
            raise ValueError("events_per_second must be > 0")
        if self.max_disorder_ms < 0:
            raise ValueError("max_disorder_ms must be >= 0")
        if self.spike_journey is not None and self.spike_journey not in JOURNEYS:
            raise ValueError(f"spike_journey must be one of {', '.join(JOURNEYS)}")
        for name in ("invalid_share", "duplicate_share", "anonymous_share", "spike_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.invalid_share + self.duplicate_share >= 1.0:
            raise ValueError("invalid_share + duplicate_share must be below 1")


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka message as the simulator would send it."""

    key: bytes
    value: bytes
    occurred_at: int
    valid: bool
    invalid_reason: str | None


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the generator intended for the messages `generate` yields.

    `valid_events` counts valid messages including duplicates (`duplicates` of them are
    exact re-sends), so `distinct_event_ids == valid_events - duplicates` and
    `valid_events + invalid_messages` is the number of messages.
    """

    valid_events: int
    invalid_messages: int
    duplicates: int
    distinct_event_ids: int
    journeys: dict[str, str]
    irritants: dict[str, str]
    invalid_reasons: Counter[str]
    closures: dict[str, tuple[str, str, int]]
    """journey_id -> (journey name, closing status, closing time in ms) of every journey."""


# --------------------------------------------------------------------------- public functions


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """Messages in delivery order; deterministic for a config."""
    return _Simulation(config).messages()


def ground_truth(config: SimConfig) -> GroundTruth:
    """Labels for exactly the messages `generate(config)` yields."""
    sim = _Simulation(config)
    deque(sim.messages(), maxlen=0)  # run to the end without keeping the messages
    return sim.truth()


def generate_with_truth(config: SimConfig) -> tuple[list[SimMessage], GroundTruth]:
    """Both at once, generating only once (the labels are final after the last message)."""
    sim = _Simulation(config)
    messages = list(sim.messages())
    return messages, sim.truth()


def write_jsonl(messages: Iterable[SimMessage], path: Path) -> int:
    """One message value per line; newlines inside broken values are escaped. Returns count."""
    count = 0
    with path.open("wb") as out:
        for message in messages:
            out.write(message.value.replace(b"\r", b"\\r").replace(b"\n", b"\\n"))
            out.write(b"\n")
            count += 1
    return count


_SLICE_S: Final = 0.05
_SETTLE_EVERY: Final = 5_000


async def send_to_kafka(
    messages: Iterable[SimMessage],
    bootstrap: str,
    topic: str,
    rate: float | None,
    on_progress: Callable[[int], None] | None = None,
    *,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Produce `messages` to `topic`, at most `rate` per second (None: as fast as possible).

    `client_options` are the connection options of a secured cluster
    (`kafka_options(settings)`: security protocol, SASL, TLS); `bootstrap` wins over theirs.
    Waits for every acknowledgement, then flushes and stops the producer. Returns the count.
    """
    from aiokafka import AIOKafkaProducer  # imported here: generating needs no Kafka client

    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 or None")
    options = {**(client_options or {}), "bootstrap_servers": bootstrap}
    producer = AIOKafkaProducer(**options, linger_ms=20, acks="all")
    await producer.start()
    try:
        return await _produce_all(producer, messages, topic, rate, on_progress)
    finally:
        await producer.stop()


async def _produce_all(
    producer: Any,
    messages: Iterable[SimMessage],
    topic: str,
    rate: float | None,
    on_progress: Callable[[int], None] | None,
) -> int:
    loop = asyncio.get_running_loop()
    # Pace in small slices: a steady trickle instead of one burst per second.
    per_slice = max(1, round(rate * _SLICE_S)) if rate is not None else 500
    started = loop.time()
    pending: list[asyncio.Future[Any]] = []
    sent = 0
    for message in messages:
        pending.append(await producer.send(topic, value=message.value, key=message.key))
        sent += 1
        if len(pending) >= _SETTLE_EVERY:
            await asyncio.gather(*pending)  # bounded memory, and a failed send surfaces early
            pending.clear()
        if sent % per_slice == 0:
            if on_progress is not None:
                on_progress(sent)
            await _pace(loop, started, sent, rate)
    await producer.flush()
    await asyncio.gather(*pending)
    if on_progress is not None:
        on_progress(sent)
    return sent


async def _pace(loop: asyncio.AbstractEventLoop, started: float, sent: int, rate: float | None) -> None:
    # Sleeping towards the ideal schedule (not a fixed delay) keeps the long-run rate exact.
    delay = 0.0 if rate is None else started + sent / rate - loop.time()
    await asyncio.sleep(max(0.0, delay))


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Customer:
    id: str
    segment: str
    digital: str
    assisted: str


@dataclass(slots=True)
class _Planned:
    """One valid event, planned; serialized when released in event-time order."""

    t: int
    event_id: str
    key: str
    who: str  # customer key in force when the engine applies it ("C…" or "anon:…")
    name: str  # the journey it belongs to (resolved name)
    token: int  # journey instance it belongs to
    doc: dict[str, Any]
    want_null: bool
    keep_nulls: bool
    digital: bool
    inbound_start: bool
    merge_from: str | None = None  # login: the anonymous key merged into `who`
    duplicates: int = 0
    invalid: list[_Bad] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Bad:
    t: int
    key: str
    value: bytes
    reason: str


@dataclass(slots=True)
class _Instance:
    journey_id: str
    token: int
    started: bool = False
    last_step_t: int = 0
    last_t: int = 0


@lru_cache(maxsize=64)
def _date_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def _format_time(ms: int, offset: bool) -> str:
    """RFC 3339, millisecond precision, `Z` or (same instant) `+02:00`."""
    local = ms + 2 * _HOUR if offset else ms
    day, of_day = divmod(local, _DAY)
    seconds, millis = divmod(of_day, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    suffix = "+02:00" if offset else "Z"
    return f"{_date_text(day)}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}{suffix}"


_JOURNEY_CUM: Final = tuple(accumulate(_JOURNEY_WEIGHTS))
_SCENARIO_NAMES: Final = tuple(name for name, _ in _SCENARIOS)
_SCENARIO_CUM: Final = tuple(accumulate(weight for _, weight in _SCENARIOS))


def _weighted(rng: random.Random, items: tuple[str, ...], cumulative: tuple[int, ...]) -> str:
    """Like rng.choices(items, cum_weights=...)[0], without its per-call overhead."""
    return items[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


def _matches(a: str, b: str) -> bool:
    return a == b or a == "unspecified" or b == "unspecified"


def _dump(doc: dict[str, Any], keep_nulls: bool) -> bytes:
    # Producers differ: some send null optional fields, some leave them out.
    if not keep_nulls:
        doc = {k: v for k, v in doc.items() if v is not None and v != {}}
    return orjson.dumps(doc)


class _Simulation:
    """All mutable state of one run; `messages()` drives the three stages."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.customers = self._population()
        self._event_seq = 0
        self._bad_seq = 0
        self._anon_seq = 0
        self._token_seq = 0
        self._heap_seq = 0
        self._timeline: list[tuple[int, int, _Planned | _Bad]] = []
        self._delivery: list[tuple[int, int, SimMessage]] = []
        # Planning state: when each (customer, journey name) is free again, when each
        # customer's last scenario ends, and event times still pending per customer key.
        self.name_free: dict[tuple[str, str], int] = {}
        self.busy_until: dict[str, int] = {}
        self.pending_times: dict[str, set[int]] = {}
        # Release state: per customer key, recent digital events and inbound contacts.
        self._digital: dict[str, list[tuple[int, str]]] = {}
        self._contacts: dict[str, list[tuple[int, str]]] = {}
        self._last_token: dict[str, int] = {}
        # Labels.
        self.journeys: dict[str, str] = {}
        self.irritants: dict[str, str] = {}
        self.closures: dict[str, tuple[str, str, int]] = {}
        self.invalid_reasons: Counter[str] = Counter()
        self.valid_count = 0
        self.duplicate_count = 0
        self._released = 0

    # ----- population and ids

    def _population(self) -> list[_Customer]:
        rng = self.rng
        people = []
        for i in range(1, self.config.customers + 1):
            segment = rng.choices(SEGMENTS, _SEGMENT_WEIGHTS)[0]
            digital = "web" if rng.random() < 0.65 else "mobile_app"
            roll = rng.random()
            # Premium customers lean on the phone; basic ones on chat and email.
            phone_share = 0.75 if segment == "premium" else 0.55
            assisted = "phone" if roll < phone_share else ("chat" if roll < 0.9 else "email")
            people.append(_Customer(f"C{i:06d}", segment, digital, assisted))
        return people

    def next_event_id(self) -> str:
        self._event_seq += 1
        return f"ev-{self.config.seed}-{self._event_seq}"

    def next_bad_id(self) -> str:
        self._bad_seq += 1
        return f"bad-{self.config.seed}-{self._bad_seq}"

    def next_anon(self) -> str:
        self._anon_seq += 1
        return f"anon-{self.rng.getrandbits(32):08x}{self._anon_seq:06x}"

    def next_token(self) -> int:
        self._token_seq += 1
        return self._token_seq

    def between(self, low: int, high: int) -> int:
        """Uniform integer in low..high (cheaper than Random.randint)."""
        return low + int(self.rng.random() * (high - low + 1))

    # ----- stage 1: planning

    def messages(self) -> Iterator[SimMessage]:
        remaining = self.config.events
        t0 = self.config.start_ms
        while remaining > 0:
            builder = self._plan(t0, remaining)
            used = self._commit(builder)
            remaining -= used
            t0 += self._spacing(used, t0)
            yield from self._release_before(t0)
        yield from self._release_before(None)

    def _spacing(self, used: int, t0: int) -> int:
        """Time to the next scenario start.

        Spacing proportional to the scenario's size gives ~events_per_second on average. A
        gentle feedback on what has been released so far compensates for the ramp-up (a
        scenario's events spread over minutes, some over days), so event time keeps pace
        with the message count: paced at `events_per_second`, event time tracks the clock.
        """
        eps = self.config.events_per_second
        ahead = self._released - eps * (t0 - self.config.start_ms) / 1000.0
        factor = min(4.0, max(0.25, 2.0 ** (ahead / (eps * _FEEDBACK_S))))
        return int(used / eps * 1000.0 * factor * (0.5 + self.rng.random()))

    def _plan(self, t0: int, remaining: int) -> _Builder:
        builder = self._plan_scenario(t0)
        if builder.message_count() <= remaining:
            return builder
        # The drawn scenario does not fit: end with short anonymous browsing sessions so
        # the run has exactly `events` messages and no scenario is cut.
        size = min(remaining, self.between(1, 5))
        filler = _Builder(self, self._journey_name(), t0, None, self.next_anon(), login=False, extras=False)
        _browse_only(filler, size)
        return filler

    def _journey_name(self) -> str:
        return _weighted(self.rng, JOURNEYS, _JOURNEY_CUM)

    def _plan_scenario(self, t0: int) -> _Builder:
        rng = self.rng
        kind = _weighted(rng, _SCENARIO_NAMES, _SCENARIO_CUM)
        name = self._journey_name()
        if self._in_spike(t0) and rng.random() < self.config.spike_share:
            kind, name = "digital_abandon", str(self.config.spike_journey)
        if kind == "notification_led" and name == "subscription":
            name = "billing"  # a notification presupposes an existing customer relationship
        anon: str | None = None
        login = False
        if kind in _DIGITAL_SCENARIOS and rng.random() < self.config.anonymous_share:
            anon = self.next_anon()
            login = kind in _NEEDS_LOGIN or rng.random() < _LOGIN_SHARE
        customer = self._pick_customer(name, t0) if anon is None or login else None
        if customer is None:
            # Nobody suitable is free: an unidentified visitor or caller instead.
            anon = anon or self.next_anon()
            login = False
            if kind in _NEEDS_LOGIN:
                kind = "digital_abandon" if kind == "web_to_contact" else kind
        builder = _Builder(self, name, t0, customer, anon, login=login, extras=True)
        _SCENARIO_FUNCTIONS[kind](builder)
        return builder

    def _in_spike(self, t0: int) -> bool:
        config = self.config
        return config.spike_journey is not None and config.spike_start_ms <= t0 < config.spike_end_ms

    def _pick_customer(self, name: str, t0: int) -> _Customer | None:
        """A customer whose journey `name` is closed at t0, preferably one not busy.

        A customer already in another scenario is acceptable (people do two things at once);
        the labels stay exact because cross-scenario rules are evaluated at release.
        """
        fallback: _Customer | None = None
        for _ in range(_CUSTOMER_PICKS):
            customer = self.customers[int(self.rng.random() * len(self.customers))]
            if self.name_free.get((customer.id, name), t0 - 1) >= t0:
                continue
            if self.busy_until.get(customer.id, t0 - 1) < t0:
                return customer
            fallback = fallback or customer
        return fallback

    def _commit(self, builder: _Builder) -> int:
        closes_at = builder.finish()
        self.journeys.update(builder.journeys)
        self.irritants.update(builder.irritants)
        self.closures.update(builder.closures)
        if builder.customer is not None:
            cid = builder.customer.id
            self.name_free[(cid, builder.name)] = closes_at + _BOUNDARY_MARGIN_MS
            self.busy_until[cid] = max(self.busy_until.get(cid, 0), builder.t)
        for planned in builder.events:
            self.pending_times.setdefault(planned.who, set()).add(planned.t)
            self._push_timeline(planned.t, planned)
            for bad in planned.invalid:
                self._push_timeline(bad.t, bad)
        return builder.message_count()

    def _push_timeline(self, t: int, item: _Planned | _Bad) -> None:
        self._heap_seq += 1
        heapq.heappush(self._timeline, (t, self._heap_seq, item))

    # ----- stage 2: release in event-time order

    def _release_before(self, limit: int | None) -> Iterator[SimMessage]:
        timeline = self._timeline
        while timeline and (limit is None or timeline[0][0] < limit):
            t, _, item = heapq.heappop(timeline)
            self._released += 1
            if isinstance(item, _Bad):
                self.invalid_reasons[item.reason] += 1
                message = SimMessage(item.key.encode(), item.value, item.t, False, item.reason)
                self._deliver(message, 0)
            else:
                self._released += item.duplicates
                self._deliver(self._release(item), item.duplicates)
            yield from self._delivered_up_to(t)
        if limit is None:
            yield from self._delivered_up_to(None)

    def _release(self, p: _Planned) -> SimMessage:
        """Apply the cross-scenario rules over the history released so far, then serialize."""
        if p.merge_from is not None:
            self._merge_history(p.merge_from, p.who)
        if p.inbound_start:
            self._window_rules(p)
            self._remember(self._contacts, p.who, p.t, p.name, REPEAT_CONTACT_WINDOW_MS)
        if p.digital:
            self._remember(self._digital, p.who, p.t, p.name, WEB_TO_CONTACT_WINDOW_MS)
        # `journey: null` attaches to the most recently active open journey: that is this
        # journey for certain only if the customer's previous event was on it.
        if p.want_null and self._last_token.get(p.who) == p.token:
            p.doc["journey"] = None
        self._last_token[p.who] = p.token
        times = self.pending_times[p.who]
        times.discard(p.t)
        if not times:
            del self.pending_times[p.who]
        self.valid_count += 1
        return SimMessage(p.key.encode(), _dump(p.doc, p.keep_nulls), p.t, True, None)

    def _window_rules(self, p: _Planned) -> None:
        for kind, history, window in (
            ("repeat_contact_after_web", self._digital, WEB_TO_CONTACT_WINDOW_MS),
            ("repeat_contact", self._contacts, REPEAT_CONTACT_WINDOW_MS),
        ):
            for seen_t, seen_name in reversed(history.get(p.who, ())):
                if p.t - seen_t > window:
                    break
                if _matches(seen_name, p.name):
                    self.irritants[irritant_id(kind, p.event_id)] = kind
                    break

    @staticmethod
    def _remember(
        history: dict[str, list[tuple[int, str]]], who: str, t: int, name: str, window: int
    ) -> None:
        entries = history.setdefault(who, [])
        entries.append((t, name))
        if len(entries) > 256:  # keep memory flat on long runs
            entries[:] = [e for e in entries if t - e[0] <= window]

    def _merge_history(self, anon_key: str, who: str) -> None:
        # SPEC §2: on login the anonymous recent digital activity counts for the customer.
        for history in (self._digital, self._contacts):
            moved = history.pop(anon_key, None)
            if moved:
                history[who] = sorted(history.get(who, []) + moved)

    # ----- stage 3: bounded disorder and duplicates

    def _deliver(self, message: SimMessage, duplicates: int) -> None:
        max_disorder = self.config.max_disorder_ms
        delay = 0
        if max_disorder > 0 and self.rng.random() < _DISORDER_SHARE:
            delay = self.between(1, max_disorder)
        self._push_delivery(message.occurred_at + delay, message)
        for _ in range(duplicates):
            # A re-send follows its original, within the disorder bound.
            extra = self.between(0, max_disorder - delay) if max_disorder > delay else 0
            self._push_delivery(message.occurred_at + delay + extra, message)
            self.valid_count += 1
            self.duplicate_count += 1

    def _push_delivery(self, due: int, message: SimMessage) -> None:
        self._heap_seq += 1
        heapq.heappush(self._delivery, (due, self._heap_seq, message))

    def _delivered_up_to(self, t: int | None) -> Iterator[SimMessage]:
        # Safe: everything released later has an event time (hence a due time) >= t.
        delivery = self._delivery
        while delivery and (t is None or delivery[0][0] <= t):
            yield heapq.heappop(delivery)[2]

    def truth(self) -> GroundTruth:
        return GroundTruth(
            valid_events=self.valid_count,
            invalid_messages=sum(self.invalid_reasons.values()),
            duplicates=self.duplicate_count,
            distinct_event_ids=self.valid_count - self.duplicate_count,
            journeys=dict(self.journeys),
            irritants=dict(self.irritants),
            invalid_reasons=Counter(self.invalid_reasons),
            closures=dict(self.closures),
        )


class _Builder:
    """Plans one scenario: one actor, one journey name, events at increasing times.

    It follows the journey's instances as SPEC §2 defines them (a start/step arms the
    30-minute abandonment deadline, a journey without a start expires after 24 h idle, an
    event after closure opens a new instance), so every label is known by construction.
    """

    def __init__(
        self,
        sim: _Simulation,
        name: str,
        t0: int,
        customer: _Customer | None,
        anon: str | None,
        *,
        login: bool,
        extras: bool,
    ) -> None:
        self.sim = sim
        self.rng = sim.rng
        self.name = name
        self.t = t0
        self.customer = customer
        self.anon = anon
        self.login_planned = login
        self.logged_in = anon is None
        self.who = customer.id if anon is None and customer is not None else f"anon:{anon}"
        self.extras = extras
        self.events: list[_Planned] = []
        self.journeys: dict[str, str] = {}
        self.irritants: dict[str, str] = {}
        self.closures: dict[str, tuple[str, str, int]] = {}
        self.instance: _Instance | None = None
        self.sessions: dict[str, str] = {}
        self._own_times: set[int] = set()
        self._extra_messages = 0
        self._closed_at = t0

    # ----- channels of this actor

    @property
    def digital(self) -> str:
        return self.customer.digital if self.customer is not None else "web"

    @property
    def assisted(self) -> str:
        return self.customer.assisted if self.customer is not None else "phone"

    def message_count(self) -> int:
        return len(self.events) + self._extra_messages

    # ----- time

    def after(self, low_s: float, high_s: float) -> None:
        """Advance the scenario clock by a uniform delay (seconds, ms resolution)."""
        self.t += self.sim.between(int(low_s * _SECOND), int(high_s * _SECOND))

    def _placed(self, t: int) -> int:
        """The event time actually used: clear of deadlines and of this customer's other
        events (same-millisecond events of one customer would depend on arrival order)."""
        instance = self.instance
        if instance is not None:
            deadline = (
                instance.last_step_t + ABANDON_AFTER_MS
                if instance.started
                else instance.last_t + IDLE_TIMEOUT_MS
            )
            if abs(t - deadline) < _BOUNDARY_MARGIN_MS:
                t = deadline + _BOUNDARY_MARGIN_MS
        taken = self.sim.pending_times.get(self.who)
        while t in self._own_times or (taken is not None and t in taken):
            t += 1
        return t

    # ----- journey instances

    def _close_if_due(self, t: int) -> None:
        instance = self.instance
        if instance is None:
            return
        if instance.started and t > instance.last_step_t + ABANDON_AFTER_MS:
            self._close_abandoned(instance)
        elif not instance.started and t > instance.last_t + IDLE_TIMEOUT_MS:
            self._close(instance, "expired", instance.last_t + IDLE_TIMEOUT_MS)

    def _close_abandoned(self, instance: _Instance) -> None:
        self._close(instance, "abandoned", instance.last_step_t + ABANDON_AFTER_MS)
        self.irritants[irritant_id("abandonment", instance.journey_id)] = "abandonment"

    def _close(self, instance: _Instance, status: str, at: int) -> None:
        self.journeys[instance.journey_id] = status
        self.closures[instance.journey_id] = (self.name, status, at)
        self.instance = None
        self._closed_at = at

    def finish(self) -> int:
        """Close what is still open as it will close; returns when the journey name is free."""
        instance = self.instance
        if instance is not None:
            if instance.started:
                self._close_abandoned(instance)
            else:
                self._close(instance, "expired", instance.last_t + IDLE_TIMEOUT_MS)
        return max(self._closed_at, self.t)

    # ----- events

    def emit(
        self,
        etype: str,
        channel: str,
        attrs: dict[str, Any] | None = None,
        *,
        agent: str | None = None,
        ids: tuple[str | None, str | None] | None = None,
        merge_from: str | None = None,
    ) -> _Planned:
        t = self._placed(self.t)
        self._close_if_due(t)
        event_id = self.sim.next_event_id()
        opener = self.instance is None
        if self.instance is None:
            self.instance = _Instance(journey_id(self.who, self.name, event_id), self.sim.next_token())
        instance = self.instance
        customer_id, anonymous_id = ids if ids is not None else self._ids(channel)
        attributes = dict(attrs or {})
        if channel in SELF_SERVICE_DIGITAL and self.rng.random() < _EXTRA_ATTRIBUTE_SHARE:
            attributes["ua"] = self.rng.choice(_USER_AGENTS)  # unknown keys are allowed
        doc: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": _format_time(t, self.rng.random() < _OFFSET_TIME_SHARE),
            "customer_id": customer_id,
            "anonymous_id": anonymous_id,
            "channel": channel,
            "type": etype,
            "journey": self.name,
            "segment": self._segment(customer_id),
            "session_id": self._session(channel),
            "agent_id": agent,
            "attributes": attributes,
        }
        planned = _Planned(
            t=t,
            event_id=event_id,
            key=customer_id or str(anonymous_id),
            who=self.who,
            name=self.name,
            token=instance.token,
            doc=doc,
            want_null=(
                not opener
                and etype not in ("journey_start", "login")
                and self.rng.random() < _NULL_JOURNEY_SHARE
            ),
            keep_nulls=self.rng.random() < 0.5,
            digital=channel in SELF_SERVICE_DIGITAL,
            inbound_start=(
                etype == "contact_start"
                and channel in ASSISTED
                and attributes.get("direction", "inbound") == "inbound"
            ),
            merge_from=merge_from,
        )
        self.events.append(planned)
        self._own_times.add(t)
        self.t = t
        self._apply(instance, etype, t)
        self._label_event(planned, etype, attributes)
        if self.extras:
            self._add_extras(planned)
        return planned

    def _ids(self, channel: str) -> tuple[str | None, str | None]:
        if not self.logged_in or self.customer is None:
            return None, self.anon
        # After login, digital events sometimes still carry the cookie id too.
        keep_anon = self.anon is not None and channel in SELF_SERVICE_DIGITAL
        return self.customer.id, self.anon if keep_anon and self.rng.random() < 0.5 else None

    def _segment(self, customer_id: str | None) -> str | None:
        if customer_id is None or self.customer is None or self.rng.random() < 0.08:
            return None
        return self.customer.segment

    def _session(self, channel: str) -> str | None:
        if channel not in SELF_SERVICE_DIGITAL and channel != "chat":
            return None
        if channel not in self.sessions:
            self.sessions[channel] = f"s-{self.rng.getrandbits(40):010x}"
        return self.sessions[channel]

    def _apply(self, instance: _Instance, etype: str, t: int) -> None:
        instance.last_t = t
        if etype in ("journey_start", "journey_step"):
            instance.started = True
            instance.last_step_t = t
        elif etype == "journey_complete":
            self._close(instance, "completed", t)
        elif etype == "journey_cancel":
            self._close(instance, "cancelled", t)

    def _label_event(self, planned: _Planned, etype: str, attrs: dict[str, Any]) -> None:
        """The irritants that depend on this event alone (SPEC §2)."""
        kinds: list[str] = []
        if etype == "contact_abandoned":
            kinds.append("contact_abandoned")
        if etype in ("contact_answered", "contact_abandoned") and attrs["wait_s"] > LONG_WAIT_S:
            kinds.append("long_wait")
        if etype == "complaint":
            kinds.append("complaint")
        if etype == "survey":
            if attrs.get("nps", 10) <= 6:
                kinds.append("detractor")
            if attrs.get("ces", 1) >= 5:
                kinds.append("high_effort")
        for kind in kinds:
            self.irritants[irritant_id(kind, planned.event_id)] = kind

    def _add_extras(self, planned: _Planned) -> None:
        config = self.sim.config
        if not (config.invalid_share or config.duplicate_share):
            return
        valid_share = 1.0 - config.invalid_share - config.duplicate_share
        # Expected extras per valid event, so that the shares hold over the whole output.
        planned.duplicates = self._poisson_ish(config.duplicate_share / valid_share)
        for _ in range(self._poisson_ish(config.invalid_share / valid_share)):
            planned.invalid.append(_invalid_message(self.sim, planned))
        self._extra_messages += planned.duplicates + len(planned.invalid)

    def _poisson_ish(self, mean: float) -> int:
        whole = int(mean)
        return whole + (1 if self.rng.random() < mean - whole else 0)

    # ----- building blocks shared by scenarios

    def page_views(self, channel: str, count: int) -> None:
        pages = _PAGES[self.name]
        for i in range(count):
            if i:
                self.after(4, 90)
            page = self.rng.choice(pages)
            if channel == "chatbot":
                page = f"bot/{self.name}/{self.rng.choice(_STEPS[self.name])}"
            self.emit("page_view", channel, {"page": page})

    def login(self, channel: str) -> None:
        """The anonymous visitor identifies: from now on the customer's key applies."""
        assert self.customer is not None and self.anon is not None
        self.after(5, 60)
        anon_key = self.who
        self.logged_in = True
        self.who = self.customer.id
        self.emit("login", channel, ids=(self.customer.id, self.anon), merge_from=anon_key)

    def steps(self, channel: str, count: int, agent: str | None = None) -> None:
        names = _STEPS[self.name]
        for i in range(count):
            self.after(20, 240)
            self.emit("journey_step", channel, {"step": names[min(i, len(names) - 1)]}, agent=agent)

    def start(self, channel: str, agent: str | None = None) -> None:
        self.after(5, 90)
        self.emit("journey_start", channel, agent=agent)

    def complete(self, channel: str, agent: str | None = None) -> None:
        self.after(10, 180)
        attrs: dict[str, Any] = {}
        if self.name == "subscription":
            attrs["amount"] = round(9.99 + self.rng.random() * 80, 2)
        self.emit("journey_complete", channel, attrs, agent=agent)

    def cancel(self, channel: str, agent: str | None = None) -> None:
        self.after(10, 300)
        self.emit("journey_cancel", channel, agent=agent)

    def agent(self) -> str:
        return f"A{self.sim.between(1, 250):04d}"

    def wait_s(self, channel: str) -> int:
        """Queue wait: mostly short, a tail above the 300 s long-wait threshold."""
        if channel == "email":
            return self.sim.between(600, 4 * 3600)  # mail is answered in hours
        roll = self.rng.random()
        if roll < 0.02:
            wait = LONG_WAIT_S  # exactly the threshold: not a long wait (strictly above)
        elif roll < 0.70:
            wait = self.sim.between(5, 120)
        elif roll < 0.88:
            wait = self.sim.between(121, 300)
        else:
            wait = self.sim.between(301, 1200)
        if channel == "store":
            wait = min(wait, 900)
        premium = self.customer is not None and self.customer.segment == "premium"
        return wait // 2 if premium and roll >= 0.02 else wait  # premium queue priority

    def contact(
        self,
        channel: str,
        *,
        resolve_share: float = 0.75,
        complaint_share: float = 0.06,
        agent_step_share: float = 0.0,
        process: bool = False,
    ) -> str:
        """An inbound assisted contact; returns "resolved", "unresolved" or "abandoned".

        With `process`, the agent starts the journey's process during the call.
        """
        attrs = {"direction": "inbound"} if self.rng.random() < 0.6 else {}
        if self.rng.random() < 0.05:
            attrs["queue"] = self.name  # an extra attribute the contract keeps as is
        self.emit("contact_start", channel, attrs)
        wait = self.wait_s(channel)
        self.t += wait * _SECOND
        gives_up = 0.45 if wait > 240 else 0.12
        if channel not in ("email", "store") and self.rng.random() < gives_up:
            self.emit("contact_abandoned", channel, {"wait_s": wait})
            return "abandoned"
        agent = self.agent()
        self.emit("contact_answered", channel, {"wait_s": wait}, agent=agent)
        answered_t = self.t
        if process:
            self.start(channel, agent)
            self.steps(channel, 1, agent)
        elif self.rng.random() < agent_step_share:
            self.after(30, 240)
            self.emit("journey_step", channel, {"step": "agent_assisted"}, agent=agent)
        if self.rng.random() < complaint_share:
            self.after(20, 300)
            self.emit("complaint", channel, {"reason": self.rng.choice(_COMPLAINT_REASONS)}, agent=agent)
        self.after(60, 900)
        resolved = self.rng.random() < resolve_share
        handle = (self.t - answered_t) // _SECOND
        self.emit("contact_end", channel, {"handle_s": handle, "resolved": resolved}, agent=agent)
        return "resolved" if resolved else "unresolved"

    def outbound_callback(self) -> str:
        """The centre calls back (outbound: not a repeat contact)."""
        self.emit("contact_start", "phone", {"direction": "outbound"})
        self.after(5, 40)
        agent = self.agent()
        ring = self.sim.between(5, 40)
        self.emit("contact_answered", "phone", {"wait_s": ring}, agent=agent)
        answered_t = self.t
        self.after(120, 900)
        resolved = self.rng.random() < 0.7
        self.emit(
            "contact_end",
            "phone",
            {"handle_s": (self.t - answered_t) // _SECOND, "resolved": resolved},
            agent=agent,
        )
        return "resolved" if resolved else "unresolved"

    def survey(self, channel: str, happy: bool) -> None:
        """At least one score; unhappy customers give low NPS and high effort."""
        self.after(10, 120)
        rng = self.rng
        attrs: dict[str, Any] = {}
        if rng.random() < 0.75:
            attrs["nps"] = self.sim.between(6, 10) if happy else self.sim.between(0, 7)
        if rng.random() < 0.5:
            attrs["ces"] = self.sim.between(1, 5) if happy else self.sim.between(3, 7)
        if not attrs or rng.random() < 0.4:
            attrs["csat"] = self.sim.between(3, 5) if happy else self.sim.between(1, 3)
        self.emit("survey", channel, attrs)

    def notify(self) -> None:
        self.emit("notification", "sms", {"kind": _NOTIFICATION_KINDS[self.name]})


# --------------------------------------------------------------------------- scenarios


def _browse_then_login(b: _Builder, channel: str) -> None:
    b.page_views(channel, b.sim.between(1, 4))
    if b.login_planned:
        b.login(channel)


def _start_online(b: _Builder, channel: str, steps: int) -> None:
    """Browse and start the process online. A visitor who will log in does so before or
    right after the start: an anonymous start must count for the customer after the merge."""
    b.page_views(channel, b.sim.between(1, 4))
    late_login = b.rng.random() < 0.4
    if b.login_planned and not late_login:
        b.login(channel)
    b.start(channel)
    if b.login_planned and late_login:
        b.login(channel)
    b.steps(channel, steps)


def _digital(b: _Builder, outcome: str) -> None:
    """Self-service: browse, maybe log in, then complete / cancel / abandon the process."""
    channel = b.digital
    if outcome == "browse":
        _browse_then_login(b, channel)
        return
    _start_online(b, channel, b.sim.between(2, 4) if outcome == "complete" else b.sim.between(1, 3))
    if outcome == "complete":
        b.complete(channel)
    elif outcome == "cancel":
        b.cancel(channel)
    elif b.logged_in and b.rng.random() < 0.3:
        b.after(5 * 60, 25 * 60)  # a reminder before the abandonment deadline
        b.notify()


def _scenario_digital_complete(b: _Builder) -> None:
    _digital(b, "complete")


def _scenario_digital_cancel(b: _Builder) -> None:
    _digital(b, "cancel")


def _scenario_digital_abandon(b: _Builder) -> None:
    _digital(b, "abandon")


def _scenario_browse(b: _Builder) -> None:
    _digital(b, "browse")


def _browse_only(b: _Builder, count: int) -> None:
    b.page_views(b.digital, count)


def _after_contact(b: _Builder, channel: str, result: str) -> None:
    """Survey, then the agent finishes the process (or not: the journey is abandoned)."""
    if b.rng.random() < 0.35:
        b.survey(channel if channel != "store" else "sms", happy=result == "resolved")
    if result == "resolved" and b.instance is not None and b.instance.started:
        if b.rng.random() < 0.85:
            b.complete(channel, b.agent())
        else:
            b.cancel(channel, b.agent())


def _scenario_web_to_contact(b: _Builder) -> None:
    """Failure demand: the web process stalls and the customer calls or chats."""
    channel = b.digital
    _start_online(b, channel, b.sim.between(1, 3))
    b.after(30, 900)
    assisted = "chat" if b.assisted == "chat" else "phone"
    result = b.contact(assisted, agent_step_share=0.6)
    if result == "abandoned":
        roll = b.rng.random()
        if roll < 0.5:
            b.after(60, 900)  # calls again: a repeat contact
            result = b.contact(assisted, agent_step_share=0.6, complaint_share=0.15)
        elif roll < 0.75:
            b.after(300, 3600)
            result = b.outbound_callback()
    _after_contact(b, assisted, result)


def _scenario_contact_first(b: _Builder) -> None:
    """The customer goes straight to an agent; sometimes the agent runs the process."""
    channel = b.assisted if b.rng.random() < 0.8 else b.rng.choice(("store", "social"))
    process = b.rng.random() < 0.4
    result = b.contact(channel, process=process)
    if result == "abandoned" and b.rng.random() < 0.3:
        b.after(120, 3 * 3600)
        result = b.contact(channel, process=process)
    _after_contact(b, channel, result)


def _repeat_gap_ms(b: _Builder) -> int:
    # Mostly the same day; some the next days (within the 7-day repeat window).
    roll = b.rng.random()
    if roll < 0.55:
        return b.sim.between(1 * _HOUR, 20 * _HOUR)
    if roll < 0.85:
        return b.sim.between(26 * _HOUR, 3 * _DAY)
    return b.sim.between(3 * _DAY, 6 * _DAY + 12 * _HOUR)


def _scenario_repeat_contact(b: _Builder) -> None:
    """An unresolved contact, then another one on the same journey hours or days later."""
    if b.rng.random() < 0.4:
        b.page_views(b.digital, b.sim.between(1, 3))
        b.after(60, 1800)
    first = b.assisted
    b.contact(first, resolve_share=0.1)
    b.t += _repeat_gap_ms(b)
    second = first if b.rng.random() < 0.6 else b.rng.choice(("phone", "chat", "email", "store"))
    process = b.rng.random() < 0.3
    result = b.contact(second, complaint_share=0.3, process=process)
    _after_contact(b, second, result)


def _scenario_chatbot_escalation(b: _Builder) -> None:
    """The chatbot cannot help; the conversation goes to a human agent on chat."""
    b.page_views("chatbot", b.sim.between(2, 4))
    b.after(10, 120)
    result = b.contact("chat", complaint_share=0.05)
    _after_contact(b, "chat", result)


def _scenario_complaint(b: _Builder) -> None:
    """A written complaint by email or on social media, answered later."""
    channel = "email" if b.rng.random() < 0.6 else "social"
    b.emit("contact_start", channel, {"direction": "inbound"})
    b.after(30, 600)
    agent = b.agent()
    b.emit("complaint", channel, {"reason": b.rng.choice(_COMPLAINT_REASONS)}, agent=agent)
    wait = b.wait_s(channel)
    b.t = b.t + wait * _SECOND
    b.emit("contact_answered", channel, {"wait_s": wait}, agent=agent)
    answered_t = b.t
    b.after(120, 1200)
    resolved = b.rng.random() < 0.5
    b.emit(
        "contact_end", channel, {"handle_s": (b.t - answered_t) // _SECOND, "resolved": resolved}, agent=agent
    )
    if b.rng.random() < 0.5:
        b.survey("email", happy=resolved)


def _scenario_notification_led(b: _Builder) -> None:
    """An SMS (invoice, appointment…) brings the customer online, sometimes to the phone."""
    b.notify()
    b.after(120, 2 * 3600)
    b.page_views(b.digital, b.sim.between(1, 3))
    if b.rng.random() < 0.4:
        b.after(30, 1200)
        result = b.contact(b.assisted)
        _after_contact(b, b.assisted, result)


_SCENARIO_FUNCTIONS: Final[dict[str, Callable[[_Builder], None]]] = {
    "digital_complete": _scenario_digital_complete,
    "digital_cancel": _scenario_digital_cancel,
    "digital_abandon": _scenario_digital_abandon,
    "browse": _scenario_browse,
    "web_to_contact": _scenario_web_to_contact,
    "contact_first": _scenario_contact_first,
    "repeat_contact": _scenario_repeat_contact,
    "chatbot_escalation": _scenario_chatbot_escalation,
    "complaint": _scenario_complaint,
    "notification_led": _scenario_notification_led,
}


# --------------------------------------------------------------------------- invalid messages


def _invalid_message(sim: _Simulation, planned: _Planned) -> _Bad:
    """A deliberately broken message near `planned`, built from a copy of its event."""
    reason = sim.rng.choice(INVALID_REASONS)
    doc = dict(planned.doc)
    doc["event_id"] = sim.next_bad_id()
    value = _BREAKERS[reason](sim.rng, doc)
    return _Bad(planned.t, planned.key, value, reason)


def _not_json(rng: random.Random, doc: dict[str, Any]) -> bytes:
    raw = orjson.dumps(doc)
    return rng.choice(
        (
            raw[: len(raw) // 2],  # truncated in transit
            b"\xff\xfe" + raw[:40],  # not UTF-8
            b"event_id=" + str(doc["event_id"]).encode() + b"\ntype=page_view\n",  # wrong format
        )
    )


def _not_object(rng: random.Random, doc: dict[str, Any]) -> bytes:
    return rng.choice((orjson.dumps([doc]), b'"page_view"', b"42", b"null"))


def _missing_field(rng: random.Random, doc: dict[str, Any]) -> bytes:
    if rng.random() < 0.2:
        doc.update(type="journey_start", journey=None)  # journey_start needs a journey
    else:
        del doc[rng.choice(("event_id", "occurred_at", "channel", "type"))]
    return orjson.dumps(doc)


def _bad_enum(rng: random.Random, doc: dict[str, Any]) -> bytes:
    if rng.random() < 0.5:
        doc["channel"] = rng.choice(("fax", "WEB", "telegram", "ivr"))
    else:
        doc["type"] = rng.choice(("click", "call_started", "PAGE_VIEW"))
    return orjson.dumps(doc)


def _bad_time(rng: random.Random, doc: dict[str, Any]) -> bytes:
    doc["occurred_at"] = rng.choice(
        (
            "yesterday",
            "2026-13-45T99:00:00Z",
            "",
            "2026-01-01 10:00:00",
            "01/02/2026 10:00",
        )
    )
    return orjson.dumps(doc)


def _missing_id(rng: random.Random, doc: dict[str, Any]) -> bytes:
    doc["customer_id"] = None
    if rng.random() < 0.5:
        doc["anonymous_id"] = None
    else:
        del doc["anonymous_id"]
    if doc["type"] == "login":
        doc["type"] = "page_view"
        doc["attributes"] = {"page": "/"}
    return orjson.dumps(doc)


def _too_large(rng: random.Random, doc: dict[str, Any]) -> bytes:
    doc["attributes"] = {"page": "/search", "blob": "x" * (MAX_MESSAGE_BYTES + rng.randint(1, 4096))}
    return orjson.dumps(doc)


def _bad_attribute(rng: random.Random, doc: dict[str, Any]) -> bytes:
    if rng.random() < 0.5:
        doc.update(type="survey", attributes={"comment": "no score given"})
    else:
        doc.update(type="contact_answered", attributes={"wait_s": -rng.randint(1, 120)})
    return orjson.dumps(doc)


_BREAKERS: Final[dict[str, Callable[[random.Random, dict[str, Any]], bytes]]] = {
    "not_json": _not_json,
    "not_object": _not_object,
    "missing_field": _missing_field,
    "bad_enum": _bad_enum,
    "bad_time": _bad_time,
    "missing_id": _missing_id,
    "too_large": _too_large,
    "bad_attribute": _bad_attribute,
}
