"""Output records' values: one JSON object per record, fields in declaration order, held in
memory at their length.

A checkpoint holds every journey and irritant value of its interval until they are produced
(tens of thousands while a backlog is read). orjson returns bytes inside a buffer of 4 KiB
or more whatever their length, which added ~1.1 GB to the worker's peak memory at
1 000 000 open journeys (docs/performance.md, sixth session)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Sequence
from typing import TypeVar

import orjson

from journeystream.core.facts import Irritant, JourneyRecord
from journeystream.sinks.rows import irritant_json, journey_json

T = TypeVar("T")
T0 = 1_700_000_000_000
COUNT = 200
# a bytes object's header and the allocator's rounding, well under orjson's 4 KiB buffer
OVERHEAD_BYTES = 64


def _record(n: int) -> JourneyRecord:
    return JourneyRecord(
        f"j-{n}",
        f"C{n}",
        "claim",
        "std",
        "open",
        T0,
        T0 + n,
        None,
        2,
        ("web", "phone"),
        1,
        1,
        0,
        3,
        2,
        "web",
        "phone",
    )


def _irritant(n: int) -> Irritant:
    return Irritant(
        f"i-{n}", "call_after_web", f"C{n}", f"j-{n}", "claim", "std", "phone", T0 + n, (f"e{n}",)
    )


def _held_bytes(encode: Callable[[T], bytes], items: Sequence[T]) -> tuple[float, float]:
    """(bytes held per encoded value, mean length of the values)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        values = [encode(item) for item in items]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    list_bytes = 8 * len(values) + 56  # the list holding them
    return (held - list_bytes) / len(values), sum(map(len, values)) / len(values)


def test_journey_values_are_the_published_json_and_held_at_their_length() -> None:
    assert journey_json(_record(7)) == (
        b'{"journey_id":"j-7","customer_key":"C7","journey":"claim","segment":"std","status":"open",'
        b'"started_at":1700000000000,"last_event_at":1700000000007,"ended_at":null,"event_count":2,'
        b'"channels":["web","phone"],"channel_switches":1,"inbound_contacts":1,"irritant_count":0,'
        b'"effort_score":3,"version":2,"first_channel":"web","last_channel":"phone"}'
    )
    records = [_record(n) for n in range(COUNT)]
    held, length = _held_bytes(journey_json, records)
    assert held < length + OVERHEAD_BYTES, (held, length)


def test_irritant_values_are_the_published_json_and_held_at_their_length() -> None:
    assert orjson.loads(irritant_json(_irritant(7))) == {
        "irritant_id": "i-7",
        "kind": "call_after_web",
        "customer_key": "C7",
        "journey_id": "j-7",
        "journey": "claim",
        "segment": "std",
        "channel": "phone",
        "occurred_at": T0 + 7,
        "event_ids": ["e7"],
        "details": {},
    }
    irritants = [_irritant(n) for n in range(COUNT)]
    held, length = _held_bytes(irritant_json, irritants)
    assert held < length + OVERHEAD_BYTES, (held, length)
