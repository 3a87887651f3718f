"""A journey partition's work in bounded steps: when a watermark makes many deadlines due,
the engine stops whenever the runtime's `keep_going` says so, the processor keeps the rest
of its records, and resuming gives exactly what one uninterrupted call gives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from journeystream.core import journeys as engine_module
from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.journeys import KeyedEvent
from journeystream.stages.effects import Effects
from journeystream.stages.envelope import Message, Watermark
from journeystream.stages.journeys import CUSTOMERS, JourneyProcessor
from journeystream.stages.topology import Topology

T0 = 1_700_000_000_000
DAY_MS = 86_400_000
TOPOLOGY = Topology("in", "rejected", "by-device", "by-customer", "journeys", "irritants", 3, "control")
SOURCES = TOPOLOGY.sources("A") + TOPOLOGY.sources("B")
CUSTOMERS_N = 40


def _processor(store: dict[bytes, bytes], keep_going: Iterator[bool] | None = None) -> JourneyProcessor:
    def load(name: str, key: bytes) -> bytes | None:
        return store.get(key) if name == CUSTOMERS else None

    asked = (lambda: next(keep_going)) if keep_going is not None else (lambda: True)
    return JourneyProcessor(0, TOPOLOGY, RulesConfig(), 6 * 3_600_000, load, keep_going=asked)


def _watermarks(at: int) -> list[Message]:
    return [Watermark(source, at) for source in SOURCES]


def _batch() -> list[tuple[int, list[Message]]]:
    """Offsets 0-39: a journey start and a page view per customer; 40: watermarks a day
    later (every journey's deadline due), then an event; 41: one more event."""
    records: list[tuple[int, list[Message]]] = []
    for n in range(CUSTOMERS_N):
        key = f"C{n}"
        start = Event(f"s{n}", T0 + n, "web", "journey_start", customer_id=key, journey="claim")
        view = Event(f"v{n}", T0 + n + 1, "web", "page_view", customer_id=key, journey="claim")
        records.append((n, [KeyedEvent(key, start), KeyedEvent(key, view)]))
    later = T0 + 2 * DAY_MS
    after = KeyedEvent("C1", Event("after", later, "web", "page_view", customer_id="C1", journey="claim"))
    last = KeyedEvent("C2", Event("last", later + 1, "web", "page_view", customer_id="C2"))
    records.append((CUSTOMERS_N, [*_watermarks(T0 + 1_000), *_watermarks(later), after]))
    records.append((CUSTOMERS_N + 1, [last]))
    return records


def _everything(processor: JourneyProcessor, effects: Effects) -> dict[str, list[str]]:
    processor.collect(T0, 0.0, effects)
    taken = effects.take()
    return {
        "rows": sorted(repr(row) for row in taken.rows),
        "records": sorted(repr(record) for record in taken.records),
        "envelopes": sorted(repr(envelope) for envelope in taken.envelopes),
        "states": sorted(repr(change) for change in processor.take_changes()),
    }


def test_resumed_steps_give_what_one_call_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "CHECK_EVERY", 1)  # a question per deadline
    whole = _processor({})
    whole.process_messages(_batch(), Effects())
    assert not whole.busy and whole.next_offset == CUSTOMERS_N + 2
    expected = _everything(whole, Effects())

    stops = iter([False, True, True, False] * 1_000)  # stopped again and again
    stepped = _processor({}, stops)
    effects = Effects()
    stepped.process_messages(_batch(), effects)
    resumed = 0
    while stepped.busy:
        # the record holding the watermark is not wholly processed: read again after a crash
        assert stepped.next_offset == CUSTOMERS_N
        resumed += 1
        stepped.resume(effects)
    assert resumed >= 5
    assert stepped.next_offset == CUSTOMERS_N + 2
    assert _everything(stepped, effects) == expected
    closed = [row for row in expected["rows"] if "'abandoned'" in row or "'expired'" in row]
    assert len(closed) >= CUSTOMERS_N  # the jump closed every journey: the work was there


def test_a_busy_processor_takes_no_new_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "CHECK_EVERY", 1)
    processor = _processor({}, iter([False] + [True] * 10_000))
    processor.process_messages(_batch(), Effects())
    assert processor.busy
    with pytest.raises(RuntimeError, match="busy"):
        processor.process_messages([(99, [])], Effects())
    assert processor.resume(Effects())
    assert not processor.busy
