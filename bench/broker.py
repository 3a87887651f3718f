"""A local broker for benchmarks: the same script the tests and the demo use."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from journeystream.config import Settings
from journeystream.kafka_options import kafka_options
from journeystream.supervise import free_port_pair

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "kafka" / "broker.sh"


def client_options(bootstrap: str) -> dict[str, Any]:
    """Connection options of a benchmark client, built like every client of the project
    (`kafka_options`); the benchmarks' own broker is PLAINTEXT on 127.0.0.1."""
    return kafka_options(Settings.from_env({"JOURNEYSTREAM_KAFKA_BOOTSTRAP": bootstrap}))


@contextmanager
def local_broker() -> Iterator[tuple[str, float]]:
    """Start a fresh broker; yields (bootstrap, seconds it took to be ready)."""
    port = free_port_pair()
    state = ROOT / ".local" / f"bench-kafka-{port}"
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": str(state)}
    subprocess.run([str(SCRIPT), "fetch"], env=env, check=True)
    started = time.monotonic()
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, capture_output=True)
    ready = time.monotonic() - started
    try:
        yield f"127.0.0.1:{port}", ready
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


async def fill_topic(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], partitions: int = 0
) -> None:
    """Produce `messages` (key, value) to `topic`; create it first when `partitions` > 0."""
    if partitions:
        admin = AIOKafkaAdminClient(**client_options(bootstrap))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()
    producer = AIOKafkaProducer(**client_options(bootstrap), linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
