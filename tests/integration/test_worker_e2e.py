"""The worker as a real process, on the real broker: valid events to interaction_events,
invalid ones to rejected_events and the rejected topic, nothing lost, nothing twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import SimConfig, generate
from journeystream.supervise import WorkerProcess, metric_sum
from tests.integration.helpers import consume_all, produce, query, wait_for_sink_rows, worker_env

pytestmark = pytest.mark.integration

VALID = 10_000
INVALID = 500


def invalid_messages(count: int) -> list[tuple[bytes, bytes, str]]:
    """(key, value, expected reason code), cycling through every kind of defect."""
    good = {
        "event_id": "x",
        "occurred_at": "2026-03-01T10:00:00Z",
        "customer_id": "C1",
        "channel": "web",
        "type": "page_view",
    }
    makers = [
        (lambda i: b"{not json " + str(i).encode(), "not_json"),
        (lambda i: orjson.dumps([i]), "not_object"),
        (lambda i: orjson.dumps({k: v for k, v in good.items() if k != "event_id"}), "missing_field"),
        (lambda i: orjson.dumps({**good, "event_id": f"u{i}", "colour": "red"}), "unknown_field"),
        (lambda i: orjson.dumps({**good, "event_id": f"c{i}", "channel": "fax"}), "invalid_field"),
        (lambda i: orjson.dumps({**good, "event_id": f"t{i}", "occurred_at": "yesterday"}), "bad_time"),
        (lambda i: orjson.dumps({**good, "event_id": f"m{i}", "customer_id": None}), "missing_id"),
        (
            lambda i: orjson.dumps({**good, "event_id": f"s{i}", "type": "survey", "attributes": {}}),
            "invalid_attribute",
        ),
        (
            lambda i: orjson.dumps({**good, "event_id": f"l{i}", "attributes": {"page": "p" * 70_000}}),
            "too_large",
        ),
    ]
    out = []
    for i in range(count):
        make, code = makers[i % len(makers)]
        out.append((f"bad-{i}".encode(), make(i), code))
    return out


async def test_worker_stores_valid_events_and_rejects_invalid_ones(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "data")
    settings = Settings.from_env(env)
    await ensure_topics(settings)

    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=7, customers=800, events=VALID, start_ms=now_ms - 3_600_000, events_per_second=50.0
    )
    valid = [(m.key, m.value) for m in generate(config) if m.valid]
    assert len(valid) == VALID
    valid_ids = {orjson.loads(value)["event_id"] for _, value in valid}
    assert len(valid_ids) == VALID
    invalid = invalid_messages(INVALID)

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        # interleave: every 20th message is invalid
        mixed: list[tuple[bytes | None, bytes]] = []
        bad = iter(invalid)
        for index, message in enumerate(valid):
            mixed.append(message)
            if index % 20 == 19:
                key, value, _ = next(bad)
                mixed.append((key, value))
        assert await produce(kafka_bootstrap, settings.topic_interactions, mixed) == VALID + INVALID
        wait_for_sink_rows(worker, {"interaction_events": VALID, "rejected_events": INVALID})
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    assert metric_sum(metrics, "journeystream_events_consumed_total") == VALID + INVALID
    assert metric_sum(metrics, "journeystream_events_valid_total") == VALID
    expected_codes = Counter(code for _, _, code in invalid)
    for code, count in expected_codes.items():
        assert metric_sum(metrics, "journeystream_events_rejected_total", reason=code) == count

    stored_ids = {row[0] for row in query(env, "SELECT event_id FROM {db}.interaction_events FINAL")}
    assert query(env, "SELECT count() FROM {db}.interaction_events FINAL") == [(VALID,)]
    assert stored_ids == valid_ids

    rejected_rows = query(env, "SELECT kafka_key, reason_code, reason, topic FROM {db}.rejected_events FINAL")
    assert len(rejected_rows) == INVALID
    by_key = {key: (code, reason, topic) for key, code, reason, topic in rejected_rows}
    for key, _, code in invalid:
        stored_code, reason, topic = by_key[key.decode()]
        assert stored_code == code
        assert reason  # a human-readable reason, not just the code
        assert topic == settings.topic_interactions

    records = await consume_all(kafka_bootstrap, settings.topic_rejected, INVALID)
    assert len(records) == INVALID
    originals = {key: (value, code) for key, value, code in invalid}
    for record in records:
        value, code = originals[record.key]
        assert record.value == value  # the original bytes, untouched
        headers = dict(record.headers)
        assert headers["journeystream.reason_code"].decode() == code
        assert headers["journeystream.source"].decode().startswith(settings.topic_interactions + "/")
