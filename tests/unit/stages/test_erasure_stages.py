"""Erasure inside the stages (issue 12), without Kafka: the engine forgets a key whether it
is live, dropped to the store or only buffered; the identity stage forgets an anonymous id's
links; a control request reaches the journey partition of its key, which cascades to the
anonymous ids merged into it; every part is reported; the state changes are deletions."""

from __future__ import annotations

from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.identity import IdentityStage, decode_links, encode_links
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload, MergeRequest
from journeystream.stages.control import ControlProcessor, EraseRequest, erase_request, parse, report_value
from journeystream.stages.effects import Effects, ErasurePart, InputRecord
from journeystream.stages.envelope import Erase, Watermark, encode_message, pack, unpack
from journeystream.stages.identity import LINKS, IdentityProcessor
from journeystream.stages.journeys import CUSTOMERS, KPI_CELLS, JourneyProcessor
from journeystream.stages.kpicells import mark_store_key
from journeystream.stages.routing import Partitioner
from journeystream.stages.topology import Topology

T0 = 1_700_000_000_000
TOPOLOGY = Topology("in", "rejected", "by-device", "by-customer", "journeys", "irritants", 3, "control")
SOURCES = TOPOLOGY.sources("A") + TOPOLOGY.sources("B")


def _event(
    event_id: str, at: int, customer: str | None, anonymous: str | None = None, kind: str = "page_view"
) -> Event:
    return Event(event_id, at, "web", kind, customer_id=customer, anonymous_id=anonymous)


def _watermark(engine: JourneyEngine, at: int) -> None:
    for source in SOURCES:
        engine.observe(source, at)


def _flush(engine: JourneyEngine, store: dict[str, bytes]) -> dict[str, bytes | None]:
    changes = engine.dirty_states()
    for key, value in changes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
    return changes


def test_the_engine_forgets_a_live_customer_and_a_new_event_starts_afresh() -> None:
    store: dict[str, bytes] = {}
    engine = JourneyEngine(RulesConfig(), SOURCES, load=store.get)
    engine.push(KeyedEvent("C1", _event("e1", T0, "C1")))
    engine.push(KeyedEvent("C2", _event("e2", T0, "C2")))
    _watermark(engine, T0 + 1)
    _flush(engine, store)
    engine.drain()
    assert engine.open_journeys() == 2

    erased = engine.erase("C1")
    assert erased.existed and erased.linked == () and erased.items_dropped == 0
    assert engine.open_journeys() == 1
    assert _flush(engine, store) == {"C1": None}
    assert "C1" not in store and "C2" in store
    assert engine.customer("C1") is None

    # the same event id again is no duplicate any more: the dedup ids went with the state
    engine.push(KeyedEvent("C1", _event("e1", T0 + 10, "C1")))
    _watermark(engine, T0 + 20)
    state = engine.customer("C1")
    assert state is not None and list(state.seen) == ["e1"] and engine.duplicates == 0


def test_the_engine_forgets_a_customer_dropped_to_the_store_and_its_buffered_items() -> None:
    store: dict[str, bytes] = {}
    engine = JourneyEngine(RulesConfig(), SOURCES, load=store.get, live_customers=0)
    engine.push(KeyedEvent("C1", _event("e1", T0, "C1")))
    _watermark(engine, T0 + 1)
    for _ in range(3):  # written, then clean for a whole flush: dropped from memory
        _flush(engine, store)
    assert engine.customers_in_memory() == 0 and engine.open_journeys() == 1
    engine.push(KeyedEvent("C1", _event("e2", T0 + 100, "C1")))  # still in the reorder buffer

    erased = engine.erase("C1")
    assert erased.existed and erased.items_dropped == 1
    assert engine.open_journeys() == 0 and len(engine.timeline) == 0
    assert _flush(engine, store) == {"C1": None}
    _watermark(engine, T0 + 200)
    assert engine.customer("C1") is None  # the buffered item was not applied after all
    assert engine.erase("C1").existed is False  # idempotent


def _visit_then_login(engine: JourneyEngine) -> None:
    """Visitor a1 views a page, then logs in as C1: anon:a1 is merged into C1."""
    engine.push(KeyedEvent("anon:a1", _event("e1", T0, None, "a1")))
    _watermark(engine, T0 + 1)
    engine.push(MergeRequest("anon:a1", "C1", T0 + 5, "login"))
    engine.push(KeyedEvent("C1", _event("login", T0 + 5, "C1", "a1", "login"), "anon:a1"))
    _watermark(engine, T0 + 10)
    for payload in engine.drain_messages():
        assert isinstance(payload, MergePayload)
        engine.receive_payload(payload)


def test_erasing_a_customer_names_the_anonymous_keys_merged_into_it() -> None:
    engine = JourneyEngine(RulesConfig(), SOURCES)
    _visit_then_login(engine)
    state = engine.customer("C1")
    assert state is not None and state.merged_from == ["anon:a1"]
    assert engine.erase("C1").linked == ("anon:a1",)
    tombstone = engine.erase("anon:a1")
    assert tombstone.existed and tombstone.linked == ()


def test_the_identity_stage_forgets_an_anonymous_ids_links() -> None:
    stored = {"a1": encode_links([(T0, "C1")])}
    stage = IdentityStage(["A0"], load_link=stored.get)
    assert stage.linked("a1", T0 + 1) == "C1"
    stage.push(_event("e9", T0 + 50, None, "a1"))  # waiting for the watermark
    assert stage.erase("a1") == (True, 1)
    assert stage.linked("a1", T0 + 1) is None
    assert stage.dirty_links() == {"a1": None}
    stage.observe("A0", T0 + 100)
    assert stage.drain() == []
    assert stage.erase("a1") == (False, 0)
    assert decode_links(stored["a1"]) == [(T0, "C1")]  # the store's copy goes at the checkpoint


def test_the_erase_message_travels_in_envelopes() -> None:
    message = Erase("C1", "req-1", True)
    envelope = next(pack([encode_message(message), encode_message(Watermark("A0", 5))]))
    assert unpack(envelope) == [message, Watermark("A0", 5)]


def test_control_requests_and_reports() -> None:
    key, value = erase_request("req-1", "anon:a1")
    assert key == b"anon:a1" and parse(value) == EraseRequest("req-1", "anon:a1")
    part = ErasurePart("req-1", "links", "a1", False, True, 0)
    report = parse(report_value(part, "host/app/1"))
    assert isinstance(report, dict) and report["request"] == "req-1" and report["part"] == "links"
    assert b"a1" not in report_value(part, "w").replace(b'"key_sha256"', b"")  # hashed, not the id
    for unreadable in (b"", b"{", b'{"v": 2, "kind": "erase", "request": "r", "key": "C1"}', b'{"v": 1}'):
        assert parse(unreadable) is None

    control = ControlProcessor(TOPOLOGY)
    effects = Effects()
    records = [InputRecord(0, T0, key, value), InputRecord(1, T0, b"x", b"not json")]
    control.process(records, effects)
    assert control.ignored == 1
    [envelope] = effects.envelopes
    assert envelope.topic == "by-customer" and envelope.partition == Partitioner(3)("anon:a1")
    assert envelope.messages == [Erase("anon:a1", "req-1", True)]


def _journey_processor(store: dict[bytes, bytes]) -> JourneyProcessor:
    def load(name: str, key: bytes) -> bytes | None:
        return store.get(key) if name == CUSTOMERS else None

    return JourneyProcessor(0, TOPOLOGY, RulesConfig(), 6 * 3_600_000, load)


def test_the_primary_part_cascades_to_merged_anonymous_ids_and_their_links() -> None:
    processor = _journey_processor({})
    engine = processor.engine
    _visit_then_login(engine)
    processor.take_changes()

    effects = Effects()
    processor.process_messages([(7, [Erase("C1", "req-1", True)])], effects)
    [part] = effects.erasures
    assert part == ErasurePart(
        "req-1", "customer", "C1", True, True, 0, 2, "C1", ("a1",), (KPI_CELLS, CUSTOMERS), 0
    )
    sent = {(e.topic, e.partition): e.messages for e in effects.envelopes}
    partition_of = Partitioner(3)
    assert Erase("anon:a1", "req-1", False) in sent[("by-customer", partition_of("anon:a1"))]
    assert Erase("a1", "req-1", False) in sent[("by-device", partition_of("a1"))]
    [_, (_, states)] = processor.take_changes()
    assert states == {b"C1": None}

    # the secondary part on the anonymous key: erased, reported, no cascade
    effects = Effects()
    processor.process_messages([(8, [Erase("anon:a1", "req-1", False)])], effects)
    assert effects.erasures == [
        ErasurePart(
            "req-1", "anonymous", "anon:a1", False, True, 0, stores=(KPI_CELLS, CUSTOMERS), partition=0
        )
    ]
    assert effects.envelopes == []
    assert processor.take_changes()[1][1] == {b"anon:a1": None}


def test_an_erased_keys_kpi_mark_is_deleted_and_the_counts_stay() -> None:
    processor = _journey_processor({})
    _visit_then_login(processor.engine)
    processor.collect(T0, 0.0, Effects())
    [(_, cells), _] = processor.take_changes()
    assert mark_store_key(0, "C1") in cells and mark_store_key(0, "anon:a1") in cells
    counted = processor.kpis.accumulator.cells()

    for key in ("C1", "anon:a1"):
        processor.process_messages([(9, [Erase(key, "req-3", key == "C1")])], Effects())
    processor.collect(T0, 0.0, Effects())
    [(_, cells), _] = processor.take_changes()
    assert cells == {mark_store_key(0, "C1"): None, mark_store_key(0, "anon:a1"): None}
    assert processor.kpis.accumulator.cells() == counted


def test_a_visitors_request_erases_its_state_and_its_links() -> None:
    processor = _journey_processor({})
    effects = Effects()
    processor.process_messages([(0, [Erase("anon:a9", "req-2", True)])], effects)
    [part] = effects.erasures
    assert part.primary and not part.existed and part.expect == 1
    assert part.customer_id is None and part.anonymous_ids == ("a9",)
    [envelope] = effects.envelopes
    assert envelope.topic == "by-device" and envelope.messages == [Erase("a9", "req-2", False)]

    links = {b"a9": encode_links([(T0, "C7")])}
    identity = IdentityProcessor(0, TOPOLOGY, lambda name, key: links.get(key) if name == LINKS else None)
    effects = Effects()
    identity.process_messages([(0, envelope.messages)], effects)
    assert effects.erasures == [
        ErasurePart("req-2", "links", "a9", False, True, 0, stores=(LINKS,), partition=0)
    ]
    assert identity.take_changes() == [(LINKS, {b"a9": None})]
