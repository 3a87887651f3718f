"""The engine with a store and a bounded set of live customers, and late events.

With a store, customers clean since the previous `dirty_states()` are dropped from memory
and loaded back when needed: nothing the engine decides may depend on that. Events later
than the allowed lateness are applied in arrival order: the same arrival order gives the
same facts, run twice or across a restart from serialized state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from journeystream.core import journeys as journeys_module
from journeystream.core import state as stored
from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import AppliedEvent, Fact
from journeystream.core.identity import IdentityStage, encode_links
from journeystream.core.journeys import JourneyEngine, MergePayload, Message
from journeystream.core.pipeline import SOURCE_A, SOURCE_B, LocalPipeline
from journeystream.core.state import CustomerState, JourneyState, Session
from tests.unit.test_journey_properties import (
    CONFIG,
    END,
    LATENESS,
    hand_built,
    outcome,
    run,
    simulated,
    streams,
)

SOME = settings(max_examples=60, deadline=None)


class StoredPipeline(LocalPipeline):
    """The pipeline with a store behind the engine, flushed every `every` events, and at
    most `live` customers kept live (0: every clean customer may be dropped)."""

    def __init__(
        self, live: int, every: int, store: dict[str, bytes] | None = None, config: RulesConfig = CONFIG
    ) -> None:
        super().__init__(config)
        self.store: dict[str, bytes] = {} if store is None else store
        self.engine = JourneyEngine(config, [SOURCE_A, SOURCE_B], load=self.store.get, live_customers=live)
        self.every, self.fed, self.most_live = every, 0, 0

    def feed(self, event: Event) -> None:
        super().feed(event)
        self.fed += 1
        if self.fed % self.every == 0:
            self.flush()

    def flush(self) -> None:
        changed = self.engine.changed_customers  # what the runtime's checkpoint trigger reads
        states = self.engine.dirty_states()
        assert (changed, self.engine.changed_customers) == (len(states), 0)
        for key, value in states.items():
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value
        self.most_live = max(self.most_live, self.engine.customers_in_memory())


def open_journeys_in(pipeline: StoredPipeline) -> int:
    pipeline.flush()
    return sum(len(CustomerState.from_bytes(raw).journeys) for raw in pipeline.store.values())


@SOME
@given(streams | hand_built(), st.sampled_from([0, 1, 3]), st.integers(1, 12))
def test_dropping_clean_customers_changes_nothing(stream: tuple[Event, ...], live: int, every: int) -> None:
    expected = outcome(run(stream))
    pipeline = StoredPipeline(live, every)
    facts: list[Fact] = []
    for event in stream:
        pipeline.feed(event)
        facts += pipeline.drain()
        if pipeline.fed % 7 == 0:
            assert pipeline.engine.open_journeys() == open_journeys_in(pipeline)
    pipeline.advance(END)
    facts += pipeline.drain()
    assert outcome(facts) == expected
    assert pipeline.engine.open_journeys() == open_journeys_in(pipeline)


@SOME
@given(streams | hand_built(), st.floats(0.05, 0.95))
def test_restore_keeps_no_customer_live_and_the_run_continues_as_if_uninterrupted(
    stream: tuple[Event, ...], fraction: float
) -> None:
    split = max(1, min(len(stream) - 1, int(len(stream) * fraction)))
    expected = outcome(run(stream))
    first = LocalPipeline(CONFIG)
    facts: list[Fact] = []
    for event in stream[:split]:
        first.feed(event)
        facts += first.drain()
    cut = stream[split - 1].occurred_at
    first.advance(cut)
    facts += first.drain()
    store = {key: raw for key, raw in first.engine.dirty_states().items() if raw is not None}
    links = {anonymous: encode_links(entries) for anonymous, entries in first.identity.dirty_links().items()}

    second = StoredPipeline(live=0, every=3, store=store)
    second.identity = IdentityStage([SOURCE_A], load_link=links.get)
    held = 0
    for key, raw in store.items():
        second.engine.restore(key, raw)
        held += CustomerState.from_bytes(raw).awaiting is not None
    assert second.engine.customers_in_memory() == held  # only customers waiting for a merge
    assert second.engine.open_journeys() == first.engine.open_journeys()
    second.advance(cut)
    assert outcome(facts + run(stream[split:], second)) == expected


SHORT_DEDUP = RulesConfig(dedup_window_ms=60_000, dedup_min_items=4)


@SOME
@given(streams | hand_built(), st.sampled_from([0, 2]), st.integers(1, 6))
def test_dropped_customers_forget_their_ids_as_live_ones_do(
    stream: tuple[Event, ...], live: int, every: int
) -> None:
    """Ids are forgotten by revisits (a few items later) and wakeups: the same with a store."""
    expected: list[Fact] = []
    plain = LocalPipeline(SHORT_DEDUP)
    stored = StoredPipeline(live, every, config=SHORT_DEDUP)
    got: list[Fact] = []
    for event in (*stream, *stream):  # every event twice: some come back after their id is gone
        plain.feed(event)
        expected += plain.drain()
        stored.feed(event)
        got += stored.drain()
    plain.advance(END)
    stored.advance(END)
    assert got + stored.drain() == expected + plain.drain()


@SOME
@given(streams | hand_built(), st.integers(1, 6))
def test_a_stored_customer_is_indexed_with_the_deadline_its_objects_give(
    stream: tuple[Event, ...], every: int
) -> None:
    """`restore` reads a customer that stays in the store from its stored fields, without
    building its objects (`_stored_wakeup`): its deadline must be the one `_next_wakeup`
    gives from the objects, at the watermark of a fresh engine and at the running one's
    (with a short dedup window, ids already past it take the other branch). Private
    methods: the deadline index is the engine's own."""
    pipeline = LocalPipeline(SHORT_DEDUP)
    fresh = JourneyEngine(SHORT_DEDUP, [SOURCE_A, SOURCE_B])

    def compare() -> None:
        for raw in pipeline.engine.dirty_states().values():
            if raw is not None:
                fields = stored.stored_fields(raw)
                for engine in (pipeline.engine, fresh):
                    assert engine._stored_wakeup(fields) == engine._next_wakeup(CustomerState.from_bytes(raw))

    for n, event in enumerate(stream, 1):
        pipeline.feed(event)
        pipeline.drain()
        if n % every == 0:
            compare()
    pipeline.advance(stream[-1].occurred_at)  # everything fed is applied
    compare()


def test_the_stored_field_positions_are_where_to_bytes_writes_them() -> None:
    journey = JourneyState("j1", "claim", "c1", "standard", 10, 20, "web", "phone", ["web"])
    journey.last_process_at = 15
    state = CustomerState(
        "c1",
        journeys={"claim": journey},
        digital=[(11, "claim", "e1")],
        contacts=[(12, "claim", "e2")],
        seen={"e1": [11, 1]},
        sessions={"s1": Session("s1", "web", "claim", "standard", 5, 25, 2)},
        latest=20,
        awaiting="a1",
        held=[["m", "c1", "c1", 30, "e3", False]],
        merged_into="c9",
    )
    fields = stored.stored_fields(state.to_bytes())
    assert len(fields) == len(stored.STORED_FIELDS)
    assert fields[stored.FIELD_JOURNEYS][0][stored.JOURNEY_LAST_PROCESS_AT] == 15
    assert fields[stored.FIELD_JOURNEYS][0][stored.JOURNEY_LAST_EVENT_AT] == 20
    assert fields[stored.FIELD_DIGITAL] == [[11, "claim", "e1"]]
    assert fields[stored.FIELD_CONTACTS] == [[12, "claim", "e2"]]
    assert fields[stored.FIELD_SEEN] == {"e1": [11, 1]}
    assert fields[stored.FIELD_SESSIONS][0][stored.SESSION_LAST_AT] == 25
    assert fields[stored.FIELD_LATEST] == 20
    assert fields[stored.FIELD_AWAITING] == "a1"
    assert fields[stored.FIELD_HELD] == [["m", "c1", "c1", 30, "e3", False]]
    assert fields[stored.FIELD_MERGED_INTO] == "c9"


# ---- late events --------------------------------------------------------------------------


def late_delivery(stream: tuple[Event, ...], seed: int) -> list[Event]:
    """Delivery with delays up to 20 x the allowed lateness: many events come late."""
    rng = random.Random(seed)
    delayed = sorted(
        (event.occurred_at + rng.choice((0, 0, rng.randint(0, 20 * LATENESS))), position, event)
        for position, event in enumerate(stream)
    )
    return [event for _, _, event in delayed]


def run_with_cut(arrivals: list[Event], split: int, restart: bool, live: int = 0) -> list[Fact]:
    """Feed the arrivals; at `split` move the watermark to the highest time seen (so nothing
    waits in a buffer) and, if `restart`, continue in a new pipeline restored from the
    serialized states, the identity links and stage A's watermark (a store-backed engine
    keeping at most `live` customers)."""
    pipeline = LocalPipeline(CONFIG)
    facts: list[Fact] = []
    for index, event in enumerate(arrivals):
        if index == split:
            pipeline.advance(pipeline.source.max_seen)
            facts += pipeline.drain()
            if restart:
                pipeline = restarted_from(pipeline, live)
        pipeline.feed(event)
        facts += pipeline.drain()
    pipeline.advance(END)
    return facts + pipeline.drain()


def restarted_from(old: LocalPipeline, live: int) -> LocalPipeline:
    store = {key: raw for key, raw in old.engine.dirty_states().items() if raw is not None}
    links = {anonymous: encode_links(entries) for anonymous, entries in old.identity.dirty_links().items()}
    new = StoredPipeline(live=live, every=2, store=store)
    new.identity = IdentityStage([SOURCE_A], load_link=links.get)
    for key, raw in store.items():
        new.engine.restore(key, raw)
    new.source.max_seen, new.source.watermark = old.source.max_seen, old.source.watermark
    new.advance(old.source.watermark)
    return new


def late_facts(facts: list[Fact]) -> list[Fact]:
    return [f for f in facts if isinstance(f, AppliedEvent) and f.late]


@SOME
@given(streams | hand_built(), st.integers(0, 2**32), st.floats(0.1, 0.9), st.sampled_from([0, 2, 1000]))
def test_late_events_give_identical_facts_twice_and_across_a_restart(
    stream: tuple[Event, ...], seed: int, fraction: float, live: int
) -> None:
    arrivals = late_delivery(stream, seed)
    split = max(1, min(len(arrivals) - 1, int(len(arrivals) * fraction)))
    once = run_with_cut(arrivals, split, restart=False)
    assert run_with_cut(arrivals, split, restart=False) == once  # same order, same facts
    again = run_with_cut(arrivals, split, restart=True, live=live)
    assert late_facts(again) == late_facts(once)
    assert again == once  # every fact, in the same order
    applied = outcome(once)["applied"]
    assert len(applied) == len({e.event_id for e in stream})  # late events are applied too


def test_the_late_delivery_above_makes_many_events_late() -> None:
    stream = simulated(5, 160, 0.3)
    facts = run_with_cut(late_delivery(stream, 1), 80, restart=True, live=0)
    assert len(late_facts(facts)) > 20


class SteppedPipeline(StoredPipeline):
    """A store behind the engine, whose `keep_going` says no every other time it is asked
    (one question per deadline): each `observe` stops again and again, and between the
    stops the pipeline does what a live worker's checkpoint does (facts drained, dirty
    states stored, so customers are dropped) before it resumes."""

    def __init__(self, live: int, every: int) -> None:
        super().__init__(live, every)
        self.asked = self.stops = 0
        self.between: list[Fact] = []
        self.messages: list[Message] = []  # drained between the stops, delivered as usual
        engine = self.engine
        engine.keep_going = self._keep_going
        observe = engine.observe

        def stepped(source: str, watermark: int) -> None:
            observe(source, watermark)
            while engine.behind:
                self.stops += 1
                output = engine.drain()
                self.between += output.facts
                self.messages += output.messages
                self.flush()
                engine.resume()

        engine.observe = stepped  # type: ignore[method-assign]

    def _keep_going(self) -> bool:
        self.asked += 1
        return self.asked % 2 == 0

    def drain(self) -> list[Fact]:
        facts, self.between = self.between + super().drain(), []
        return facts

    def _deliver_messages(self) -> None:
        messages, self.messages = self.messages, []
        for message in messages:
            if isinstance(message, MergePayload):
                self.engine.receive_payload(message)
            else:
                self.engine.push(message)
        super()._deliver_messages()


@contextmanager
def a_question_per_deadline() -> Iterator[None]:
    """The engine asks `keep_going` after every deadline (not every 256)."""
    every, journeys_module.CHECK_EVERY = journeys_module.CHECK_EVERY, 1
    try:
        yield
    finally:
        journeys_module.CHECK_EVERY = every


@SOME
@given(streams | hand_built(), st.sampled_from([0, 3]), st.integers(1, 12))
def test_deadlines_fired_in_steps_give_the_facts_of_one_call(
    stream: tuple[Event, ...], live: int, every: int
) -> None:
    expected = outcome(run(stream))
    with a_question_per_deadline():
        assert outcome(run(stream, SteppedPipeline(live, every))) == expected


def test_a_simulated_stream_is_fired_in_many_steps() -> None:
    stream = simulated(seed=3, events=400, anonymous_share=0.3)
    expected = outcome(run(stream))
    pipeline = SteppedPipeline(0, 5)
    with a_question_per_deadline():
        assert outcome(run(stream, pipeline)) == expected
    assert pipeline.stops > 20
