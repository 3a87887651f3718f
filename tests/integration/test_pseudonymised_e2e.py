"""Issue 12, pseudonymised mode, on the real broker: the worker with a pseudonym key over a
simulated stream (invalid messages included) leaves no raw customer, anonymous, session or
agent id in any table, any topic it writes (raw bytes of keys, values and headers), its log
or its metric labels; and its journeys, irritants and KPIs are those of a raw `replay` of the
same stream with every id mapped through the pseudonym function."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from journeystream.config import Settings
from journeystream.core.decode import Rejection, decode
from journeystream.core.pseudonym import Pseudonyms
from journeystream.runtime.topics import ensure_topics, service_topics
from journeystream.simulate import SimConfig, generate_with_truth, write_jsonl
from journeystream.supervise import WorkerProcess
from tests.integration.helpers import (
    irritants_table,
    journeys_table,
    kpi_cells,
    produce,
    query,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

EVENTS = 6_000
CUSTOMERS = 600
PARTITIONS = 4
KEY = "5f0c3b1e9a7d4c2b8e6f1a0d3c5b7e9f"
ID_FIELDS = ("customer_id", "anonymous_id", "session_id", "agent_id")


def _mapped(value: bytes, tokens: Pseudonyms) -> bytes:
    """A message with its ids replaced by their tokens, when it is valid (an invalid one
    stays as it is: mapping could make it valid, e.g. an empty id)."""
    if isinstance(decode(value), Rejection):
        return value
    document = orjson.loads(value)
    for name in ID_FIELDS:
        if isinstance(document.get(name), str):
            document[name] = tokens.token(document[name])
    return orjson.dumps(document)


def _replay(file: Path, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "journeystream", "replay", str(file), "--close-until", "now"]
    subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True, timeout=600)


def _raw_ids(values: list[bytes], keys: list[bytes]) -> set[bytes]:
    found = set(keys)
    for value in values:
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(document, dict):
            found |= {document[n].encode() for n in ID_FIELDS if isinstance(document.get(n), str)}
    return {raw for raw in found if len(raw) >= 6}  # shorter strings occur by chance


async def _topic_bytes(bootstrap: str, topic: str) -> bytes:
    """Every key, value and header of a topic, from the start to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    parts: list[bytes] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]  # as the worker made them
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await _behind(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    parts += [record.key or b"", record.value or b""]
                    parts += [name.encode() + b"=" + value for name, value in record.headers]
    finally:
        await consumer.stop()
    return b"\n".join(parts)


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _table_bytes(env: dict[str, str]) -> dict[str, bytes]:
    tables = [row[0] for row in query(env, "SELECT name FROM system.tables WHERE database = '{db}'")]
    assert {"interaction_events", "rejected_events", "journeys", "irritants", "kpi_minute"} <= set(tables)
    return {
        table: "\n".join(repr(row) for row in query(env, f"SELECT * FROM {{db}}.{table}")).encode()
        for table in tables
    }


def _wait_until_settled(worker: WorkerProcess) -> None:
    """Every journey-engine watermark at the wall clock (every deadline of the simulated past
    has fired), nothing buffered, and nothing more applied over two metric periods."""
    from journeystream.supervise import metric_sum

    def state() -> tuple[bool, float]:
        metrics = worker.metrics()
        horizon = time.time() - 60
        marks = [
            metrics.get(f'journeystream_watermark_seconds{{partition="{p}",stage="journeys"}}', 0.0)
            for p in range(PARTITIONS)
        ]
        done = (
            all(mark >= horizon for mark in marks)
            and metric_sum(metrics, "journeystream_buffered_items") == 0
        )
        return done, metrics.get("journeystream_events_applied_total", 0.0)

    def settled() -> bool:
        done, applied = state()
        if not done or applied == 0:
            return False
        time.sleep(4.5)
        return state() == (True, applied)

    wait_for(settled, 300, "journey watermarks at the wall clock, nothing buffered or still applied")
    time.sleep(1.5)  # one more flush cycle


def _leaks(blob: bytes, raw_ids: set[bytes]) -> list[bytes]:
    return sorted(raw for raw in raw_ids if raw in blob)[:5]


async def test_pseudonymised_worker_keeps_no_raw_id_and_equals_the_mapped_raw_run(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY + "\n")
    tokens = Pseudonyms(KEY.encode())
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=12,
        customers=CUSTOMERS,
        events=EVENTS,
        start_ms=now_ms - 12 * 86_400_000,  # every scenario ends in the past
        events_per_second=5.0,
        invalid_share=0.02,
        duplicate_share=0.01,
        max_disorder_ms=3_000,
    )
    messages, _ = generate_with_truth(config)
    raw_ids = _raw_ids([m.value for m in messages], [m.key for m in messages])
    assert len(raw_ids) > CUSTOMERS

    # what the raw run gives, every id mapped: replay (no key) of the mapped file
    mapped = tmp_path / "mapped.jsonl"
    mapped.write_bytes(b"".join(_mapped(m.value, tokens) + b"\n" for m in messages))
    replay_env = {"JOURNEYSTREAM_DATA_DIR": str(tmp_path / "replay")}
    _replay(mapped, replay_env)
    # the same with the key, from the raw file: replay pseudonymises too
    raw_file = tmp_path / "raw.jsonl"
    write_jsonl(messages, raw_file)
    keyed_replay_env = {
        "JOURNEYSTREAM_DATA_DIR": str(tmp_path / "keyed-replay"),
        "JOURNEYSTREAM_PSEUDONYM_KEY_FILE": str(key_file),
    }
    _replay(raw_file, keyed_replay_env)

    env = worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "data",
        pseudonym_key_file=str(key_file),
        log_level="info",
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    await produce(kafka_bootstrap, settings.topic_interactions, [(m.key, m.value) for m in messages])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        _wait_until_settled(worker)
        status, metrics_text = worker.get("/metrics")
        assert status == 200
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    # no raw id anywhere the service wrote
    found: dict[str, list[bytes]] = {}
    for table, blob in _table_bytes(env).items():
        found[f"table {table}"] = _leaks(blob, raw_ids)
    written = [t for t in service_topics(settings) if t != settings.topic_interactions]
    for topic in written:
        found[f"topic {topic}"] = _leaks(await _topic_bytes(kafka_bootstrap, topic), raw_ids)
    log_text = (tmp_path / "worker.log").read_bytes()
    assert b"schema up to date" in log_text  # info level: everything the worker says
    found["worker log"] = _leaks(log_text, raw_ids)
    found["metrics"] = _leaks(metrics_text, raw_ids)
    assert {where: ids for where, ids in found.items() if ids} == {}
    assert len(found) > 15  # every table and topic was looked at, changelogs included
    # the scan does find raw ids where they are: the producer's own input topic
    assert _leaks(await _topic_bytes(kafka_bootstrap, settings.topic_interactions), raw_ids)
    rejected = await _topic_bytes(kafka_bootstrap, settings.topic_rejected)
    assert b"journeystream.withheld" in rejected  # the invalid messages did arrive there

    # the same journeys, irritants and KPIs as the raw run, up to the id mapping
    journeys: dict[str, tuple[Any, ...]] = journeys_table(env)
    assert len(journeys) > 500
    assert all(row[1].startswith(("ps_", "anon:ps_")) for row in journeys.values())
    assert journeys == journeys_table(replay_env) == journeys_table(keyed_replay_env)
    assert irritants_table(env) == irritants_table(replay_env)
    assert kpi_cells(env) == kpi_cells(replay_env)
