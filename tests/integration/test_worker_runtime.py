"""The worker's runtime, as a process on the real broker: the allowed lateness it is given
is the one it applies; its data dir is created; a broker that never answers ends start-up
with one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.supervise import WorkerProcess, free_port_pair, metric_sum
from tests.integration.helpers import produce, wait_for, worker_env

pytestmark = pytest.mark.integration


def _event(n: int, at_ms: int) -> bytes:
    seconds, millis = divmod(at_ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    return orjson.dumps(
        {
            "event_id": f"late-{n}",
            "occurred_at": stamp,
            "customer_id": "C-late",
            "channel": "web",
            "type": "page_view",
            "journey": "claim",
            "attributes": {"page": "/claim"},
        }
    )


async def test_the_configured_lateness_is_applied_and_the_data_dir_is_created(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    env = worker_env(
        kafka_bootstrap,
        unique_name,
        data_dir,
        allowed_lateness_ms="60000",
        partitions="1",
        clickhouse_dsn=f"chdb://{tmp_path / 'clickhouse'}",  # elsewhere: the data dir is not made by it
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    # the third event is 30 s behind the second: late with the default 5 s, in order with 60 s
    events = [_event(1, base), _event(2, base + 40_000), _event(3, base + 10_000)]
    await produce(kafka_bootstrap, settings.topic_interactions, [(b"C-late", value) for value in events])

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()

        def applied_all() -> bool:
            return metric_sum(worker.metrics(), "journeystream_events_applied_total") >= 3

        wait_for(applied_all, 60, "three applied events")  # the quiet partition's clock moves on
        metrics = worker.metrics()
        assert metrics["journeystream_events_late_total"] == 0.0
        assert metric_sum(metrics, "journeystream_stage_late_items") == 0.0
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"
    assert data_dir.is_dir()


def test_an_unreachable_broker_ends_start_up_with_one_line(tmp_path: Path) -> None:
    port = free_port_pair()  # nothing listens there
    env = {
        **os.environ,
        **worker_env(f"127.0.0.1:{port}", "unreachable", tmp_path / "data"),
    }
    command = [sys.executable, "-m", "journeystream", "worker"]
    # retried with backoff, then given up: a hang would hit the timeout
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"journeystream: Kafka broker unreachable at 127.0.0.1:{port} after ")
