"""The client's ceiling on this machine: aiokafka consuming a pre-filled topic with no
processing at all (the reference for the worker's end-to-end figure)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from bench.broker import client_options, fill_topic, local_broker
from journeystream.simulate import SimConfig, generate

EVENTS = 200_000
TOPIC = "bench.drain"


async def drain(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds for one aiokafka consumer to read `expected` records of `topic` from the start."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started = time.monotonic()
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return time.monotonic() - started


def run() -> dict[str, float]:
    messages = [(m.key, m.value) for m in generate(SimConfig(seed=2, customers=20_000, events=EVENTS))]
    with local_broker() as (bootstrap, _):
        asyncio.run(fill_topic(bootstrap, TOPIC, messages, partitions=4))
        seconds = asyncio.run(drain(bootstrap, TOPIC, EVENTS))
    return {"events": EVENTS, "events_per_s": EVENTS / seconds}
