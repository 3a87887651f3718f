"""Session-wide real Kafka broker (deploy/kafka/broker.sh), started once for the test run.

Integration tests never mock Kafka: they ask for `kafka_bootstrap` and use unique topic
names. If the broker cannot start, those tests fail (they are not skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from journeystream.supervise import free_port_pair

ROOT = Path(__file__).resolve().parents[1]
BROKER_SCRIPT = ROOT / "deploy" / "kafka" / "broker.sh"


@contextmanager
def running_broker(port: int, name: str = "test-kafka", **extra_env: str) -> Iterator[str]:
    """A fresh broker (deploy/kafka/broker.sh) on 127.0.0.1:`port`, state in
    .local/`name`-`port`; `extra_env` reaches the script (e.g. KAFKA_SASL_SSL_DIR). Yields the
    bootstrap address; stops the broker by PID and removes its state at the end."""
    state = ROOT / ".local" / f"{name}-{port}"
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": str(state), **extra_env}
    started = subprocess.run(
        [str(BROKER_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        raise RuntimeError(f"local Kafka broker did not start:\n{started.stdout}\n{started.stderr}")
    print(started.stdout.strip())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(BROKER_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    port = int(os.environ.get("JOURNEYSTREAM_TEST_KAFKA_PORT", "0")) or free_port_pair()
    with running_broker(port) as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_name() -> str:
    """A fresh name for the topics and consumer group of one test."""
    return f"t{uuid.uuid4().hex[:10]}"
