"""The stage processors without Kafka: what stage A produces for a batch, with the
configured lateness; and the whole pipeline in one process (what replay runs) applies every
event of its input, the tail inside the allowed lateness included."""

from __future__ import annotations

import orjson

from journeystream.core.config import RulesConfig
from journeystream.core.journeys import KeyedEvent
from journeystream.sinks.rows import INTERACTION_EVENTS, JOURNEYS, KPI_MINUTE, REJECTED_EVENTS
from journeystream.stages.effects import Effects, InputRecord
from journeystream.stages.envelope import Watermark, unpack
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.local import LocalStages
from journeystream.stages.routing import Partitioner, envelope_records
from journeystream.stages.topology import Topology

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TOPOLOGY = Topology("in", "rejected", "by-device", "by-customer", "journeys", "irritants", partitions=3)


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def _event(n: int, at: int, customer: str | None = None, anonymous: str | None = None) -> bytes:
    body: dict[str, object] = {
        "event_id": f"e{n}",
        "occurred_at": _iso(at),
        "channel": "web",
        "type": "page_view",
        "journey": "claim",
        "attributes": {"page": "/claim"},
    }
    if customer is not None:
        body["customer_id"] = customer
    if anonymous is not None:
        body["anonymous_id"] = anonymous
    return orjson.dumps(body)


def _records(values: list[bytes]) -> list[InputRecord]:
    return [InputRecord(offset, T0, b"k", value) for offset, value in enumerate(values)]


def _messages(effects: Effects, topic: str) -> dict[int, list[object]]:
    out: dict[int, list[object]] = {}
    for envelope in effects.envelopes:
        for record in envelope_records(envelope):
            if record.topic == topic:
                assert record.partition is not None
                out.setdefault(record.partition, []).extend(unpack(record.value))
    return out


def test_ingest_routes_rejects_and_announces_its_watermark_with_the_configured_lateness() -> None:
    ingest, effects = IngestProcessor(TOPOLOGY, lateness_ms=60_000), Effects()
    values = [_event(1, T0, customer="c1"), _event(2, T0 + 90_000, anonymous="a1"), b"not json"]
    ingest.process(2, _records(values), stamp_ms=T0, effects=effects)

    tables = [table for table, _ in effects.rows]
    assert tables.count(INTERACTION_EVENTS.name) == 2 and tables.count(REJECTED_EVENTS.name) == 1
    (rejected,) = [r for r in effects.records if r.topic == "rejected"]
    assert rejected.value == b"not json" and rejected.key == b"k"
    assert dict(rejected.headers or [])["journeystream.source"] == b"in/2/2"

    announced = Watermark("A2", T0 + 90_000 - 60_000)  # highest time seen minus the lateness
    by_customer, by_device = _messages(effects, "by-customer"), _messages(effects, "by-device")
    assert set(by_customer) == set(by_device) == {0, 1, 2}  # every partition hears the watermark
    assert all(messages[-1] == announced for messages in (*by_customer.values(), *by_device.values()))
    place = Partitioner(3)
    assert isinstance(by_customer[place("c1")][0], KeyedEvent)
    assert by_device[place("a1")][0] == ingest_event_of(by_device[place("a1")][0], "e2")


def ingest_event_of(message: object, event_id: str) -> object:
    assert getattr(message, "event_id", None) == event_id
    return message


def test_a_late_event_counts_as_late_only_past_the_configured_lateness() -> None:
    late = []

    class Observer:
        def __getattr__(self, name: str) -> object:
            return (lambda count: late.append(count)) if name == "on_late" else (lambda *_: None)

    ingest = IngestProcessor(TOPOLOGY, lateness_ms=60_000, observer=Observer())  # type: ignore[arg-type]
    values = [_event(1, T0 + 100_000, customer="c"), _event(2, T0 + 50_000, customer="c")]
    ingest.process(0, _records(values), stamp_ms=T0, effects=Effects())
    assert late == []  # 50 s behind: within 60 s of lateness
    ingest.process(0, _records([_event(3, T0 + 30_000, customer="c")]), stamp_ms=T0, effects=Effects())
    assert late == [1]


def test_replay_applies_its_whole_input_including_the_tail_inside_the_lateness() -> None:
    """The last 300 events (300 customers, one page view each) fall within 3 s: every one
    of them starts a journey and is counted, with no deadline closing anything."""
    stages, effects = LocalStages("file:x", RulesConfig(allowed_lateness_ms=5_000), 21_600_000), Effects()
    early = [_event(n, T0 + n * 1_000, customer="early") for n in range(10)]
    tail = [_event(1_000 + n, T0 + 60_000 + n * 10, customer=f"c{n}") for n in range(300)]
    stages.feed(_records(early + tail), T0, effects)
    stages.finish(effects)
    stages.checkpoint(T0, effects)

    journeys = [row for table, row in effects.rows if table == JOURNEYS.name]
    customers = {row[1] for row in journeys}
    assert customers == {"early"} | {f"c{n}" for n in range(300)}
    assert all(row[4] == "open" for row in journeys)  # nothing closes without --close-until
    kpis = [row for table, row in effects.rows if table == KPI_MINUTE.name]
    events_column = 5
    assert sum(row[events_column] for row in kpis) == 310
