"""Shared pieces of the integration tests: worker environments, producing, reading the store."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from journeystream.config import Settings
from journeystream.kafka_options import kafka_options
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.store import StoreTarget
from journeystream.supervise import WorkerProcess
from journeystream.supervise import worker_env as isolated_worker_env


def worker_env(bootstrap: str, name: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for a worker isolated from every other test: own topics, group and store."""
    settings = {"partitions": "4", "log_level": os.environ.get("JOURNEYSTREAM_TEST_WORKER_LOG_LEVEL", "warn")}
    return isolated_worker_env(bootstrap, name, data_dir, **{**settings, **extra})


def client_options(bootstrap: str, settings: Settings | None) -> dict[str, Any]:
    """Connection options of a test client: the secured cluster's (`kafka_options`) when
    `settings` are given, plain otherwise; `bootstrap` always wins."""
    options = kafka_options(settings) if settings is not None else {}
    return {**options, "bootstrap_servers": bootstrap}


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    settings: Settings | None = None,
) -> int:
    producer = AIOKafkaProducer(
        **client_options(bootstrap, settings), linger_ms=20, acks="all", max_request_size=2_000_000
    )
    await producer.start()
    count = 0
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0, *, settings: Settings | None = None
) -> list[Any]:
    """Read a topic from the start until `expected` messages arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap, settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
        # a short grace read: more than expected must show up as a failure, not be missed
        for partition_records in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_for_sink_rows(worker: WorkerProcess, expected: Mapping[str, int], timeout: float = 240.0) -> None:
    from journeystream.supervise import metric_sum

    def done() -> bool:
        metrics = worker.metrics()
        return all(
            metric_sum(metrics, "journeystream_sink_rows_total", table=t) >= n for t, n in expected.items()
        )

    wait_for(done, timeout, f"sink rows {dict(expected)}")


def query(env: Mapping[str, str], sql: str) -> list[tuple[Any, ...]]:
    """Run one query against the worker's store (the worker must be stopped: chDB locks its path)."""
    settings = Settings.from_env(env)
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        rows: list[tuple[Any, ...]] = writer.call(
            lambda client: client.query(sql.replace("{db}", writer.database)).result_rows
        )
        return rows
    finally:
        writer.close()


def wait_until_caught_up(worker: WorkerProcess, partitions: int, timeout: float = 300.0) -> None:
    """Wait until every journey-engine partition's watermark has reached the wall clock
    (all simulated data is in the past, so every deadline has fired) and nothing waits in a
    reorder buffer."""
    from journeystream.supervise import metric_sum

    def caught_up() -> bool:
        metrics = worker.metrics()
        horizon = time.time() - 60
        marks = [
            metrics.get(f'journeystream_watermark_seconds{{partition="{p}",stage="journeys"}}', 0.0)
            for p in range(partitions)
        ]
        buffered = metric_sum(metrics, "journeystream_buffered_items")
        # lag covers the internal topics too: a merge payload sent once the watermark has
        # reached the wall clock is still on its way to the customer's partition
        lag = metric_sum(metrics, "journeystream_consumer_lag")
        return all(mark >= horizon for mark in marks) and buffered == 0 and lag == 0

    def settled() -> bool:
        # twice, more than a gauge period (2 s) apart: nothing was in flight in between
        if not caught_up():
            return False
        time.sleep(4.5)
        return caught_up()

    wait_for(settled, timeout, "journey engine watermarks to reach the wall clock, with no lag")
    time.sleep(1.5)  # one more flush cycle after the last deadlines fired (stop flushes too)


JOURNEY_COLUMNS = (
    "journey_id, customer_key, journey, segment, status, toUnixTimestamp64Milli(started_at), "
    "toUnixTimestamp64Milli(last_event_at), toUnixTimestamp64Milli(ended_at), event_count, channels, "
    "channel_switches, inbound_contacts, irritant_count, effort_score, first_channel, last_channel, version"
)
IRRITANT_COLUMNS = (
    "irritant_id, kind, customer_key, journey_id, journey, segment, channel, "
    "toUnixTimestamp64Milli(occurred_at), event_ids, details"
)


def journeys_table(env: Mapping[str, str]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in query(env, f"SELECT {JOURNEY_COLUMNS} FROM {{db}}.journeys FINAL")}


def irritants_table(env: Mapping[str, str]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in query(env, f"SELECT {IRRITANT_COLUMNS} FROM {{db}}.irritants FINAL")}


def kpi_cells(env: Mapping[str, str]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every kpi_minute cell (minute, channel, journey, segment), summed over shards."""
    from journeystream.core.kpis import COUNTER_FIELDS

    sums = ", ".join(f"sum({name})" for name in COUNTER_FIELDS)
    rows = query(
        env,
        f"SELECT toUnixTimestamp(minute) * 1000, channel, journey, segment, {sums}, sumForEach(wait_buckets) "
        "FROM {db}.kpi_minute FINAL GROUP BY minute, channel, journey, segment",
    )
    return {row[:4]: tuple(round(v, 6) if isinstance(v, float) else v for v in row[4:]) for row in rows}


def union_by_version(
    tables: list[dict[str, tuple[Any, ...]]], version_column: int
) -> dict[str, tuple[Any, ...]]:
    """Rows of several stores, one per key: the highest version (as ReplacingMergeTree keeps)."""
    union: dict[str, tuple[Any, ...]] = {}
    for table in tables:
        for key, row in table.items():
            if key not in union or row[version_column] > union[key][version_column]:
                union[key] = row
    return union


def kpi_cells_union(envs: list[Mapping[str, str]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """kpi_cells() over several workers' stores: per shard and cell the row with the highest
    version (the shard's latest cumulative count, whichever worker wrote it), summed over shards."""
    from journeystream.core.kpis import COUNTER_FIELDS

    columns = ", ".join(COUNTER_FIELDS)
    latest: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = {}
    for env in envs:
        rows = query(
            env,
            f"SELECT shard, toUnixTimestamp(minute) * 1000, channel, journey, segment, version, {columns}, "
            "wait_buckets FROM {db}.kpi_minute FINAL",
        )
        for row in rows:
            key, version, values = row[:5], row[5], row[6:]
            if key not in latest or version > latest[key][0]:
                latest[key] = (version, values)
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for (_, *cell), (_, values) in latest.items():
        total = cells.setdefault(tuple(cell), [0] * len(COUNTER_FIELDS) + [[]])
        for index, value in enumerate(values[:-1]):
            total[index] += value
        buckets = values[-1]
        summed = total[-1]
        total[-1] = [a + b for a, b in zip(summed, buckets, strict=True)] if summed else list(buckets)
    return {
        cell: tuple(round(v, 6) if isinstance(v, float) else v for v in values)
        for cell, values in cells.items()
    }
