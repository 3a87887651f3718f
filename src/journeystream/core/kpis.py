"""KPI counting (SPEC §3): per event-time minute × channel × journey × segment counters,
their merge and roll-up to any window, and the derived rates that alert rules use.

Shaped like a windowed aggregator (init / add / merge / result): `contributions` turns one
fact into counter increments for one cell, `KpiAccumulator` applies them (plus the distinct
customer sets, which are not plain sums), `merge` and `rollup` combine cells, and the rate
functions and `METRICS` compute results. Windows are half-open, [start, end), in integer
epoch milliseconds (UTC). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Final

import msgspec

from journeystream.core.events import EVENT_TYPES, ChannelKinds
from journeystream.core.facts import (
    IRRITANT_KINDS,
    AppliedEvent,
    Fact,
    Irritant,
    JourneyClosed,
    JourneyRecord,
    JourneyStarted,
    SessionEnded,
)

MINUTE_MS: Final = 60_000

CellKey = tuple[int, str, str, str]
"""(minute start ms, channel, journey, segment)."""

# Upper bounds (seconds, inclusive like Prometheus `le`) of the wait-time histogram buckets.
# 300 is a bound so the long_wait irritant (wait_s > 300) lines up with a bucket edge.
WAIT_BUCKETS_S: Final[tuple[float, ...]] = (0, 10, 20, 30, 60, 120, 180, 300, 600, 1200, math.inf)
WAIT_BUCKET_PREFIX: Final = "wait_bucket_"
"""Contribution field name prefix for one histogram bucket: `wait_bucket_3` is wait_buckets[3]."""

CLOSED_STATUSES: Final = ("completed", "cancelled", "abandoned", "expired")


def minute_of(ms: int) -> int:
    """Start of the UTC minute holding `ms` (floors, also for times before 1970)."""
    return ms - ms % MINUTE_MS


def _empty_buckets() -> list[int]:
    return [0] * len(WAIT_BUCKETS_S)


@dataclass(slots=True)
class KpiCounts:
    """Every §3 counter of one cell, or of a roll-up of cells.

    `customers` is the number of distinct customers *within one minute cell*. It is not
    summable: merging or rolling up cells adds the per-cell numbers, so a customer active in
    three minutes counts three times. That is why it is not in `METRICS`.
    `wait_buckets[i]` counts waits w with WAIT_BUCKETS_S[i-1] < w <= WAIT_BUCKETS_S[i]
    (non-cumulative), so histograms merge by adding and quantiles are estimated afterwards.
    """

    events: int = 0
    customers: int = 0
    journeys_started: int = 0
    journeys_completed: int = 0
    journeys_abandoned: int = 0
    journeys_cancelled: int = 0
    journeys_expired: int = 0
    inbound_contacts: int = 0
    contacts_answered: int = 0
    contacts_abandoned: int = 0
    wait_sum_s: float = 0.0
    wait_count: int = 0
    wait_buckets: list[int] = field(default_factory=_empty_buckets)
    handle_sum_s: float = 0.0
    handle_count: int = 0
    resolved_contacts: int = 0
    irritant_abandonment: int = 0
    irritant_contact_abandoned: int = 0
    irritant_repeat_contact_after_web: int = 0
    irritant_repeat_contact: int = 0
    irritant_long_wait: int = 0
    irritant_complaint: int = 0
    irritant_detractor: int = 0
    irritant_high_effort: int = 0
    nps_responses: int = 0
    nps_promoters: int = 0
    nps_detractors: int = 0
    ces_sum: float = 0.0
    ces_count: int = 0
    csat_sum: float = 0.0
    csat_count: int = 0
    closed_journeys_multichannel: int = 0
    completed_without_assisted: int = 0
    digital_sessions: int = 0
    bounced_sessions: int = 0
    late_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, one key per field."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["wait_buckets"] = list(self.wait_buckets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KpiCounts:
        """Inverse of `as_dict`; unknown keys are errors, missing keys default to zero."""
        unknown = set(data) - set(COUNTER_FIELDS) - {"wait_buckets"}
        if unknown:
            raise ValueError(f"unknown KPI fields: {sorted(unknown)}")
        counts = cls()
        for name in COUNTER_FIELDS:
            if name in data:
                kind = int if isinstance(getattr(counts, name), int) else float
                setattr(counts, name, kind(data[name]))
        if "wait_buckets" in data:
            buckets = [int(n) for n in data["wait_buckets"]]
            if len(buckets) != len(WAIT_BUCKETS_S):
                raise ValueError(f"wait_buckets: expected {len(WAIT_BUCKETS_S)} counts, got {len(buckets)}")
            counts.wait_buckets = buckets
        return counts


COUNTER_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(KpiCounts) if f.name != "wait_buckets")
"""Every scalar counter of KpiCounts (all fields but the histogram)."""

_PLAIN_TYPES: Final = frozenset(EVENT_TYPES) - {
    "contact_start",
    "contact_answered",
    "contact_abandoned",
    "contact_end",
    "survey",
}
"""Event types whose applied event counts `events` (and `late_events`) only."""
_FLOAT_FIELDS: Final = frozenset(f.name for f in fields(KpiCounts) if f.type in ("float", float))
"""The counters holding sums of floats (their order of addition is kept)."""
_IRRITANT_FIELDS: Final = {kind: f"irritant_{kind}" for kind in IRRITANT_KINDS}
assert set(_IRRITANT_FIELDS.values()) <= set(COUNTER_FIELDS), "one KpiCounts field per irritant kind"


# -- aggregator: init / add / merge --------------------------------------------------------


# Counters of which every fact raises at least one: their sum grows with each fact counted
# into a cell, so it versions the cell's cumulative row (a replayed prefix gives the same
# version and the same counts).
FACT_FIELDS: Final = (
    "events",
    "journeys_started",
    *(f"journeys_{status}" for status in ("completed", "abandoned", "cancelled", "expired")),
    *_IRRITANT_FIELDS.values(),
    "digital_sessions",
)


def cell_version(counts: KpiCounts) -> int:
    """How many facts were counted into a cell: the version of its cumulative row."""
    return sum(int(getattr(counts, name)) for name in FACT_FIELDS)


def init() -> KpiCounts:
    """A cell with every counter at zero."""
    return KpiCounts()


def merge(a: KpiCounts, b: KpiCounts) -> KpiCounts:
    """A new KpiCounts adding `a` and `b` field by field (histograms bucket by bucket).
    `customers` is added too, so after a merge it over-counts customers seen in both."""
    merged = KpiCounts(**{name: getattr(a, name) + getattr(b, name) for name in COUNTER_FIELDS})
    merged.wait_buckets = [x + y for x, y in zip(a.wait_buckets, b.wait_buckets, strict=True)]
    return merged


def apply(counts: KpiCounts, field_name: str, amount: float) -> None:
    """Add one contribution to `counts` in place (a counter or a `wait_bucket_<i>`)."""
    if field_name.startswith(WAIT_BUCKET_PREFIX):
        counts.wait_buckets[int(field_name.removeprefix(WAIT_BUCKET_PREFIX))] += int(amount)
        return
    current = getattr(counts, field_name)
    # Keep count fields integers: the rows written to the store are typed.
    setattr(counts, field_name, current + (int(amount) if isinstance(current, int) else amount))


def wait_bucket_index(wait_s: float) -> int:
    """Index of the histogram bucket that holds `wait_s` (upper bounds inclusive)."""
    for index, bound in enumerate(WAIT_BUCKETS_S):
        if wait_s <= bound:
            return index
    return len(WAIT_BUCKETS_S) - 1  # NaN never happens (decoder), but must land somewhere


def wait_quantile(counts: list[int] | tuple[int, ...], q: float) -> float | None:
    """Estimate the q-quantile (0 ≤ q ≤ 1) of waits from histogram bucket counts, interpolating
    linearly inside the bucket as Prometheus' histogram_quantile does; a quantile in the +Inf
    bucket reports the highest finite bound. None when the histogram is empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(counts):
        if count > 0 and cumulative + count >= rank:
            upper = WAIT_BUCKETS_S[index]
            lower = WAIT_BUCKETS_S[index - 1] if index > 0 else 0.0
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return WAIT_BUCKETS_S[-2]  # unreachable: rank <= total


# -- contributions: which cell each fact counts in ----------------------------------------

Contribution = tuple[CellKey, str, float]


def contributions(fact: Fact, kinds: ChannelKinds) -> list[Contribution]:
    """The (cell, field, amount) increments one fact makes (SPEC §3 attribution).
    Distinct customers are not here: they need a set per cell (see KpiAccumulator)."""
    if isinstance(fact, AppliedEvent):
        return _event_contributions(fact, kinds)
    if isinstance(fact, Irritant):
        return _irritant_contributions(fact)
    if isinstance(fact, JourneyStarted):
        return [((minute_of(fact.at), fact.channel, fact.journey, fact.segment), "journeys_started", 1)]
    if isinstance(fact, JourneyClosed):
        return _closed_contributions(fact)
    if isinstance(fact, SessionEnded):
        return _session_contributions(fact)
    return []  # a JourneyRecord is state, not an occurrence: its start/close facts count


def cell_of(applied: AppliedEvent) -> CellKey:
    """The cell of an event: its own minute and channel, its resolved journey and segment."""
    event = applied.event
    return (minute_of(event.occurred_at), event.channel, applied.journey, applied.segment)


def _event_contributions(applied: AppliedEvent, kinds: ChannelKinds) -> list[Contribution]:
    event = applied.event
    attrs = event.attributes
    found: list[tuple[str, float]] = [("events", 1)]
    if applied.late:
        found.append(("late_events", 1))
    if event.type == "contact_start":
        if event.channel in kinds.assisted and attrs.get("direction", "inbound") != "outbound":
            found.append(("inbound_contacts", 1))
    elif event.type in ("contact_answered", "contact_abandoned"):
        found.append(("contacts_answered" if event.type == "contact_answered" else "contacts_abandoned", 1))
        found.extend(_wait_parts(_number(attrs, "wait_s")))
    elif event.type == "contact_end":
        found.extend(_end_parts(attrs))
    elif event.type == "survey":
        found.extend(_survey_parts(attrs))
    cell = cell_of(applied)
    return [(cell, name, amount) for name, amount in found]


def _wait_parts(wait_s: float | None) -> list[tuple[str, float]]:
    if wait_s is None:
        return []  # an answer without a wait still counts as answered, not as a wait
    return [
        ("wait_sum_s", wait_s),
        ("wait_count", 1),
        (f"{WAIT_BUCKET_PREFIX}{wait_bucket_index(wait_s)}", 1),
    ]


def _end_parts(attrs: dict[str, Any]) -> list[tuple[str, float]]:
    parts: list[tuple[str, float]] = []
    handle_s = _number(attrs, "handle_s")
    if handle_s is not None:
        parts += [("handle_sum_s", handle_s), ("handle_count", 1)]
    if attrs.get("resolved") is True:
        parts.append(("resolved_contacts", 1))
    return parts


def _survey_parts(attrs: dict[str, Any]) -> list[tuple[str, float]]:
    parts: list[tuple[str, float]] = []
    nps = _number(attrs, "nps")
    if nps is not None:
        parts.append(("nps_responses", 1))
        if nps >= 9:
            parts.append(("nps_promoters", 1))
        elif nps <= 6:
            parts.append(("nps_detractors", 1))
    for score in ("ces", "csat"):
        value = _number(attrs, score)
        if value is not None:
            parts += [(f"{score}_sum", value), (f"{score}_count", 1)]
    return parts


def _number(attrs: dict[str, Any], name: str) -> float | None:
    value = attrs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _irritant_contributions(irritant: Irritant) -> list[Contribution]:
    name = _IRRITANT_FIELDS.get(irritant.kind)
    if name is None:
        raise ValueError(f"irritant {irritant.irritant_id}: unknown kind {irritant.kind!r}")
    cell = (minute_of(irritant.occurred_at), irritant.channel, irritant.journey, irritant.segment)
    return [(cell, name, 1)]


def _closed_contributions(closed: JourneyClosed) -> list[Contribution]:
    if closed.status not in CLOSED_STATUSES:
        raise ValueError(f"journey {closed.journey_id}: {closed.status!r} is not a closed status")
    cell = (minute_of(closed.at), closed.channel, closed.journey, closed.segment)
    found: list[Contribution] = [(cell, f"journeys_{closed.status}", 1)]
    if closed.channel_count >= 2:
        found.append((cell, "closed_journeys_multichannel", 1))
    if closed.status == "completed" and closed.inbound_contacts == 0:
        found.append((cell, "completed_without_assisted", 1))
    return found


def _session_contributions(session: SessionEnded) -> list[Contribution]:
    cell = (minute_of(session.at), session.channel, session.journey, session.segment)
    found: list[Contribution] = [(cell, "digital_sessions", 1)]
    if session.event_count == 1:
        found.append((cell, "bounced_sessions", 1))
    return found


# -- accumulator ---------------------------------------------------------------------------

SNAPSHOT_VERSION: Final = 2


class KpiAccumulator:
    """The counts of every touched cell, and per customer key what was counted for it.

    `pop_dirty` returns the *full current counts* of the cells changed since its last call
    (not deltas), so a writer can replace the stored row of each cell idempotently.

    Per customer key, a mark holds the last fact sequence counted (see `add`) and the recent
    cells the key was active in (distinct customers per cell). Keeping them per key rather
    than per cell keeps every stored value small however busy a cell gets. A million
    customers keep a mark each: the marks refer to one shared key tuple per cell
    (`_cell_keys`), not a tuple (and three strings) of their own.
    """

    def __init__(self, kinds: ChannelKinds | None = None) -> None:
        self.kinds = kinds if kinds is not None else ChannelKinds()
        self._cells: dict[CellKey, KpiCounts] = {}
        self._marks: dict[str, CustomerMark] = {}
        self._marks_by_minute: dict[int, set[str]] = {}  # minute -> keys whose mark refers to it
        self._cell_keys: dict[CellKey, CellKey] = {}  # the one key tuple of each cell the marks use
        self._dirty: set[CellKey] = set()
        self._dirty_marks: set[str] = set()
        self.floor_ms: int | None = None  # cells before it were evicted and are not counted again
        self.too_late = 0  # contributions refused because their cell was evicted
        self.replayed = 0  # facts skipped because they were counted already

    def add(self, fact: Fact, origin: tuple[str, int] | None = None) -> None:
        """Count one fact. With its origin (customer key, sequence), a fact whose sequence was
        already counted for that key is skipped: after a crash the counts saved may be ahead
        of the customer states, and the facts replayed are then not doubled."""
        if origin is not None:
            key, seq = origin
            mark = self._marks.get(key)
            if mark is not None and mark.seq is not None and seq <= mark.seq:
                self.replayed += 1
                return
            self._mark(key).seq = seq
            self._index(key, minute_of(seq // 1000))
        floor = self.floor_ms
        for cell, name, amount in contributions(fact, self.kinds):
            if floor is not None and cell[0] < floor:
                # Its cumulative row is already stored and forgotten here: a cell restarted
                # from zero would be an older version of that row, so the fact is refused.
                self.too_late += 1
                continue
            apply(self._cell(cell), name, amount)
        if isinstance(fact, AppliedEvent):
            cell = cell_of(fact)
            if floor is None or cell[0] >= floor:
                self._add_customer(cell, fact.customer_key)

    def add_many(
        self, facts: Iterable[Fact], origins: Iterable[tuple[str, int] | None] | None = None
    ) -> None:
        """Count a batch: the same result as `add` one fact at a time, but the increments are
        first summed per (cell, counter), then applied once each. Integer counters add in any
        order; float sums keep their per-cell order (the same rounding as one at a time).
        An applied event's own counters (events, late events, a new distinct customer) are
        tallied per cell, in one small list, and its customer mark is updated as it comes."""
        pairs: Iterable[tuple[Fact, tuple[str, int] | None]] = (
            ((fact, None) for fact in facts) if origins is None else zip(facts, origins, strict=True)
        )
        tallies: dict[CellKey, list[int]] = {}  # cell -> [events, late events, new customers]
        counts: dict[tuple[CellKey, str], int] = {}
        sums: dict[tuple[CellKey, str], list[float]] = {}
        floor, kinds, marks = self.floor_ms, self.kinds, self._marks
        dirty_marks, by_minute, cell_keys = self._dirty_marks, self._marks_by_minute, self._cell_keys
        indexed_key, indexed_minute = "", -1  # the last indexed (two names: no tuple per fact)
        replayed = too_late = 0
        last_customer: str | None = None
        mark = CustomerMark()  # the mark of last_customer
        for fact, origin in pairs:
            if origin is not None:
                # self._mark(key).seq = seq; self._index(key, minute_of(seq // 1000)), inlined
                key, seq = origin
                found = marks.get(key)
                if found is None:
                    found = marks[key] = CustomerMark()
                elif found.seq is not None and seq <= found.seq:
                    replayed += 1
                    continue
                dirty_marks.add(key)
                found.seq = seq
                at = seq // 1000
                minute = at - at % MINUTE_MS
                if indexed_minute != minute or indexed_key != key:
                    indexed_key, indexed_minute = key, minute
                    keys = by_minute.get(minute)
                    if keys is None:
                        by_minute[minute] = {key}
                    else:
                        keys.add(key)
            if type(fact) is AppliedEvent:
                event = fact.event
                at = event.occurred_at
                cell = (at - at % MINUTE_MS, event.channel, fact.journey, fact.segment)  # cell_of
                plain = event.type in _PLAIN_TYPES  # counts `events` (and `late_events`) only
                if floor is not None and cell[0] < floor:
                    too_late += (2 if fact.late else 1) if plain else len(contributions(fact, kinds))
                    continue
                tally = tallies.get(cell)
                if tally is None:
                    tally = tallies[cell] = [0, 0, 0]
                tally[0] += 1
                if fact.late:
                    tally[1] += 1
                if not plain:
                    # the counters past `events` and `late_events`, which lead the list
                    for _, name, amount in contributions(fact, kinds)[2 if fact.late else 1 :]:
                        if name in _FLOAT_FIELDS:
                            sums.setdefault((cell, name), []).append(amount)
                        else:
                            counts[(cell, name)] = counts.get((cell, name), 0) + int(amount)
                # self._add_customer(cell, fact.customer_key), inlined
                customer = fact.customer_key
                if customer != last_customer:
                    last_customer = customer
                    dirty_marks.add(customer)
                    found = marks.get(customer)
                    if found is None:
                        found = marks[customer] = CustomerMark()
                    mark = found
                if cell not in mark.cells:
                    mark.cells = _with_cell(mark.cells, cell_keys.setdefault(cell, cell))
                    keys = by_minute.get(cell[0])
                    if keys is None:
                        by_minute[cell[0]] = {customer}
                    else:
                        keys.add(customer)
                    tally[2] += 1
                continue
            if type(fact) is JourneyRecord:
                continue  # state, not an occurrence: counts nothing
            for cell, name, amount in contributions(fact, kinds):
                if floor is not None and cell[0] < floor:
                    too_late += 1
                    continue
                if name in _FLOAT_FIELDS:
                    sums.setdefault((cell, name), []).append(amount)
                else:
                    counts[(cell, name)] = counts.get((cell, name), 0) + int(amount)
        self.replayed += replayed
        self.too_late += too_late
        cells, dirty = self._cells, self._dirty
        for cell, (events, late, customers) in tallies.items():
            counts_of = cells.get(cell)
            if counts_of is None:
                counts_of = cells[cell] = KpiCounts()
            dirty.add(cell)
            counts_of.events += events
            counts_of.late_events += late
            counts_of.customers += customers
        for (cell, name), count in counts.items():
            counts_of = cells.get(cell)
            if counts_of is None:
                counts_of = cells[cell] = KpiCounts()
            dirty.add(cell)
            if name.startswith(WAIT_BUCKET_PREFIX):
                counts_of.wait_buckets[int(name.removeprefix(WAIT_BUCKET_PREFIX))] += count
            else:
                setattr(counts_of, name, getattr(counts_of, name) + count)
        for (cell, name), amounts in sums.items():
            counts_of = self._cell(cell)
            total = getattr(counts_of, name)
            for amount in amounts:
                total += amount
            setattr(counts_of, name, total)

    def cells(self) -> list[tuple[CellKey, KpiCounts]]:
        """Copies of every cell, ordered by key."""
        return [(key, _copy(self._cells[key])) for key in sorted(self._cells)]

    def pop_dirty(self) -> list[tuple[CellKey, KpiCounts]]:
        """Copies of the cells changed since the last call, ordered by key; clears the mark."""
        dirty = sorted(self._dirty)
        self._dirty.clear()
        return [(key, _copy(self._cells[key])) for key in dirty]

    def pop_dirty_live(self) -> list[tuple[CellKey, KpiCounts]]:
        """`pop_dirty` without the copies: the cells' own counts, to be read (a row, a stored
        value) before anything is counted again, never kept or changed."""
        dirty = sorted(self._dirty)
        self._dirty.clear()
        cells = self._cells
        return [(key, cells[key]) for key in dirty]

    def pop_dirty_marks(self) -> dict[str, list[Any] | None]:
        """The customer marks changed since the last call (None: forgotten), to persist.
        Cells are tuples here (the same JSON as `mark_state`'s lists)."""
        dirty, self._dirty_marks = self._dirty_marks, set()
        marks = self._marks
        changed: dict[str, list[Any] | None] = {}
        for key in sorted(dirty):
            mark = marks.get(key)
            changed[key] = None if mark is None else [mark.seq, sorted(mark.cells)]
        return changed

    def evict(self, before_ms: int) -> int:
        """Forget cells whose minute starts before `before_ms` (bounded memory); returns how
        many. Later facts for those minutes are refused (`too_late`). Marks forget those
        cells too, and a mark with no cell left and an older sequence is dropped: sequences
        are at least the fact time x 1000, so a fact it could still refuse would be too late."""
        old = [key for key in self._cells if key[0] < before_ms]
        for key in old:
            del self._cells[key]
            self._dirty.discard(key)
        for key in [key for key in self._cell_keys if key[0] < before_ms]:
            del self._cell_keys[key]
        for minute in [m for m in self._marks_by_minute if m < before_ms]:
            for customer in self._marks_by_minute.pop(minute):
                self._prune_mark(customer, before_ms)
        self.floor_ms = before_ms if self.floor_ms is None else max(self.floor_ms, before_ms)
        return len(old)

    def __len__(self) -> int:
        """Cells held."""
        return len(self._cells)

    def forget(self, customer: str) -> bool:
        """Drop a customer key's mark (an erasure): the counts stay, anonymous; a later fact
        of the key counts it again among a cell's distinct customers, as a new customer.
        Returns whether there was a mark."""
        if self._marks.pop(customer, None) is None:
            return False
        self._dirty_marks.add(customer)  # persisted as a deletion
        return True

    def evicted_keys(self, before_ms: int) -> list[CellKey]:
        """The cells `evict(before_ms)` would forget, ordered by key."""
        return sorted(key for key in self._cells if key[0] < before_ms)

    def cell_state(self, key: CellKey) -> dict[str, Any]:
        """One cell's persistent state; see `load_cell`."""
        return self._cells[key].as_dict()

    def load_cell(self, key: CellKey, state: dict[str, Any]) -> None:
        """Restore one cell saved by `cell_state` (not marked dirty: it is stored already)."""
        self._cells[key] = KpiCounts.from_dict(state)

    def mark_state(self, key: str) -> list[Any] | None:
        """One customer mark's persistent state, None if the mark is gone; see `load_mark`."""
        mark = self._marks.get(key)
        if mark is None:
            return None
        return [mark.seq, sorted([*cell] for cell in mark.cells)]

    def load_mark(self, key: str, state: list[Any]) -> None:
        """Restore one customer mark saved by `mark_state`."""
        self.load_marks(((key, state),))

    def load_marks(self, marks: Iterable[tuple[str, list[Any]]]) -> None:
        """Restore customer marks saved by `mark_state`, in one loop: a restart loads one
        per customer active within the horizon (a million, for a large contact centre)."""
        saved, by_minute, cell_keys = self._marks, self._marks_by_minute, self._cell_keys
        for key, (seq, cells) in marks:
            keys = [cell_keys.setdefault(cell, cell) for cell in ((m, c, j, s) for m, c, j, s in cells)]
            saved[key] = CustomerMark(seq, _cells_of(keys))
            minutes = {cell[0] for cell in cells}
            if seq is not None:
                minutes.add(minute_of(seq // 1000))
            for minute in minutes:
                customers = by_minute.get(minute)
                if customers is None:
                    customers = by_minute[minute] = set()
                customers.add(key)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able state (for persistence); `restore` reads it back."""
        return {
            "version": SNAPSHOT_VERSION,
            "cells": [[*key, self._cells[key].as_dict()] for key in sorted(self._cells)],
            "marks": {key: self.mark_state(key) for key in sorted(self._marks)},
            "dirty": [list(key) for key in sorted(self._dirty)],
        }

    @classmethod
    def restore(cls, data: dict[str, Any], kinds: ChannelKinds | None = None) -> KpiAccumulator:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"KPI snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
        accumulator = cls(kinds)
        for minute, channel, journey, segment, counts in data["cells"]:
            key: CellKey = (int(minute), str(channel), str(journey), str(segment))
            accumulator._cells[key] = KpiCounts.from_dict(counts)
        for customer, state in data["marks"].items():
            accumulator.load_mark(customer, state)
        for minute, channel, journey, segment in data["dirty"]:
            key = (int(minute), str(channel), str(journey), str(segment))
            if key in accumulator._cells:
                accumulator._dirty.add(key)
        return accumulator

    def _cell(self, key: CellKey) -> KpiCounts:
        self._dirty.add(key)
        counts = self._cells.get(key)
        if counts is None:
            counts = self._cells[key] = init()
        return counts

    def _mark(self, key: str) -> CustomerMark:
        self._dirty_marks.add(key)
        mark = self._marks.get(key)
        if mark is None:
            mark = self._marks[key] = CustomerMark()
        return mark

    def _add_customer(self, cell: CellKey, customer_key: str) -> None:
        mark = self._mark(customer_key)
        if cell not in mark.cells:
            mark.cells = _with_cell(mark.cells, self._cell_keys.setdefault(cell, cell))
            self._index(customer_key, cell[0])
            self._cell(cell).customers += 1

    def _index(self, customer: str, minute: int) -> None:
        self._marks_by_minute.setdefault(minute, set()).add(customer)

    def _prune_mark(self, customer: str, before_ms: int) -> None:
        mark = self._marks.get(customer)
        if mark is None:
            return
        kept = _cells_of([cell for cell in mark.cells if cell[0] >= before_ms])
        if len(kept) != len(mark.cells):
            mark.cells = kept
            self._dirty_marks.add(customer)
        if not kept and (mark.seq is None or mark.seq < before_ms * 1000):
            del self._marks[customer]
            self._dirty_marks.add(customer)


class CustomerMark(msgspec.Struct, gc=False):
    """What the accumulator counted for one customer key: the last fact sequence, and the
    cells the key was active in (each counts the key once among its distinct customers).
    A tuple while they are few, as they mostly are (one, for most keys): an empty set alone
    is 216 bytes, times a million customers; a set beyond SMALL_MARK cells, where a scan
    would cost more than it saves. A msgspec Struct untracked by the cyclic GC: one per
    customer active within the horizon (a million of them) would otherwise be walked by
    every full collection; it makes no reference cycle."""

    seq: int | None = None
    cells: tuple[CellKey, ...] | set[CellKey] = ()


SMALL_MARK = 8


def _with_cell(
    cells: tuple[CellKey, ...] | set[CellKey], cell: CellKey
) -> tuple[CellKey, ...] | set[CellKey]:
    """`cells` with `cell` added (not in it yet): a new tuple, or the set itself."""
    if type(cells) is set:
        cells.add(cell)
        return cells
    return (*cells, cell) if len(cells) < SMALL_MARK else {*cells, cell}


def _cells_of(cells: list[CellKey]) -> tuple[CellKey, ...] | set[CellKey]:
    return tuple(cells) if len(cells) <= SMALL_MARK else set(cells)


def _copy(counts: KpiCounts) -> KpiCounts:
    return merge(counts, init())


# -- roll-up -------------------------------------------------------------------------------


def rollup(
    cells: Iterable[tuple[CellKey, KpiCounts]],
    start_ms: int,
    end_ms: int,
    channel: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
) -> KpiCounts:
    """Sum of the cells whose minute lies in [start_ms, end_ms) and that match every filter
    given (None = any)."""
    total = init()
    for (minute, cell_channel, cell_journey, cell_segment), counts in cells:
        if not start_ms <= minute < end_ms:
            continue
        if channel is not None and cell_channel != channel:
            continue
        if journey is not None and cell_journey != journey:
            continue
        if segment is not None and cell_segment != segment:
            continue
        total = merge(total, counts)
    return total


# -- derived rates -------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _decided(c: KpiCounts) -> int:
    """Journeys that reached a customer decision: completed, abandoned or cancelled."""
    return c.journeys_completed + c.journeys_abandoned + c.journeys_cancelled


def _closed(c: KpiCounts) -> int:
    return _decided(c) + c.journeys_expired


def _handled(c: KpiCounts) -> int:
    return c.contacts_answered + c.contacts_abandoned


def abandonment_rate(c: KpiCounts) -> float | None:
    return _ratio(c.journeys_abandoned, _decided(c))


def completion_rate(c: KpiCounts) -> float | None:
    return _ratio(c.journeys_completed, _decided(c))


def contact_abandonment_rate(c: KpiCounts) -> float | None:
    return _ratio(c.contacts_abandoned, _handled(c))


def failure_demand_rate(c: KpiCounts) -> float | None:
    return _ratio(c.irritant_repeat_contact_after_web, c.inbound_contacts)


def repeat_contact_rate(c: KpiCounts) -> float | None:
    return _ratio(c.irritant_repeat_contact, c.inbound_contacts)


def digital_containment(c: KpiCounts) -> float | None:
    return _ratio(c.completed_without_assisted, c.journeys_completed)


def cross_channel_share(c: KpiCounts) -> float | None:
    return _ratio(c.closed_journeys_multichannel, _closed(c))


def nps(c: KpiCounts) -> float | None:
    return _ratio(100 * (c.nps_promoters - c.nps_detractors), c.nps_responses)


def avg_ces(c: KpiCounts) -> float | None:
    return _ratio(c.ces_sum, c.ces_count)


def avg_csat(c: KpiCounts) -> float | None:
    return _ratio(c.csat_sum, c.csat_count)


def avg_wait_s(c: KpiCounts) -> float | None:
    return _ratio(c.wait_sum_s, c.wait_count)


def avg_handle_s(c: KpiCounts) -> float | None:
    return _ratio(c.handle_sum_s, c.handle_count)


def bounce_rate(c: KpiCounts) -> float | None:
    return _ratio(c.bounced_sessions, c.digital_sessions)


def long_wait_rate(c: KpiCounts) -> float | None:
    return _ratio(c.irritant_long_wait, _handled(c))


# -- metric registry (what alert rules may name) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    """A number computed from KpiCounts. A rate is numerator / denominator and has no value
    when the denominator is 0; a counter has no denominator. Alert rules apply `min_volume`
    to the denominator."""

    name: str
    description: str
    numerator: Callable[[KpiCounts], float]
    denominator: Callable[[KpiCounts], float] | None = None

    @property
    def is_rate(self) -> bool:
        return self.denominator is not None

    def value(self, counts: KpiCounts) -> float | None:
        if self.denominator is None:
            return float(self.numerator(counts))
        return _ratio(self.numerator(counts), self.denominator(counts))

    def volume(self, counts: KpiCounts) -> float | None:
        """The denominator (None for a counter)."""
        return None if self.denominator is None else float(self.denominator(counts))


def _counter(name: str) -> Callable[[KpiCounts], float]:
    def read(c: KpiCounts) -> float:
        return float(getattr(c, name))

    return read


_RATES: Final = (
    Metric(
        "abandonment_rate",
        "abandoned / (completed + abandoned + cancelled) journeys",
        lambda c: c.journeys_abandoned,
        _decided,
    ),
    Metric(
        "completion_rate",
        "completed / (completed + abandoned + cancelled) journeys",
        lambda c: c.journeys_completed,
        _decided,
    ),
    Metric(
        "contact_abandonment_rate",
        "contacts abandoned / (answered + abandoned)",
        lambda c: c.contacts_abandoned,
        _handled,
    ),
    Metric(
        "failure_demand_rate",
        "repeat_contact_after_web irritants / inbound assisted contacts",
        lambda c: c.irritant_repeat_contact_after_web,
        lambda c: c.inbound_contacts,
    ),
    Metric(
        "repeat_contact_rate",
        "repeat_contact irritants / inbound assisted contacts",
        lambda c: c.irritant_repeat_contact,
        lambda c: c.inbound_contacts,
    ),
    Metric(
        "digital_containment",
        "completed journeys without inbound assisted contact / completed journeys",
        lambda c: c.completed_without_assisted,
        lambda c: c.journeys_completed,
    ),
    Metric(
        "cross_channel_share",
        "closed journeys with 2+ channels / closed journeys (incl. expired)",
        lambda c: c.closed_journeys_multichannel,
        _closed,
    ),
    Metric(
        "nps",
        "(promoters - detractors) / responses × 100",
        lambda c: 100 * (c.nps_promoters - c.nps_detractors),
        lambda c: c.nps_responses,
    ),
    Metric("avg_ces", "mean CES (1..7, 7 = most effort)", lambda c: c.ces_sum, lambda c: c.ces_count),
    Metric("avg_csat", "mean CSAT (1..5)", lambda c: c.csat_sum, lambda c: c.csat_count),
    Metric(
        "avg_wait_s",
        "mean wait before answer or abandon, seconds",
        lambda c: c.wait_sum_s,
        lambda c: c.wait_count,
    ),
    Metric("avg_handle_s", "mean handle time, seconds", lambda c: c.handle_sum_s, lambda c: c.handle_count),
    Metric(
        "bounce_rate",
        "single-event digital sessions / digital sessions",
        lambda c: c.bounced_sessions,
        lambda c: c.digital_sessions,
    ),
    Metric(
        "long_wait_rate",
        "long_wait irritants / (answered + abandoned contacts)",
        lambda c: c.irritant_long_wait,
        _handled,
    ),
)

# `customers` is left out on purpose: summed over cells it is not a distinct count.
_COUNTERS: Final = tuple(
    Metric(name, f"counter {name}", _counter(name)) for name in COUNTER_FIELDS if name != "customers"
)

METRICS: Final[dict[str, Metric]] = {metric.name: metric for metric in (*_COUNTERS, *_RATES)}
"""Every counter and rate an alert rule may name, by name."""
