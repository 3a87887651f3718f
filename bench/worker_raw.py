"""Worker end to end on raw events: a topic pre-filled with valid simulated events, a fresh
worker process, and the time until every event is a row in interaction_events (decode,
validate, route, batch, write). Also reports the broker's start-up time."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.broker import fill_topic, local_broker
from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import SimConfig, generate
from journeystream.supervise import WorkerProcess, metric_sum

EVENTS = 100_000


def run() -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=5, customers=20_000, events=EVENTS, start_ms=now_ms - 3_600_000, events_per_second=50.0
    )
    messages = [(m.key, m.value) for m in generate(config)]
    with local_broker() as (bootstrap, broker_ready_s), tempfile.TemporaryDirectory() as folder:
        env = {
            "JOURNEYSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "JOURNEYSTREAM_APP_ID": "bench",
            "JOURNEYSTREAM_DATA_DIR": folder,
            "JOURNEYSTREAM_HTTP_PORT": "6199",
            "JOURNEYSTREAM_LOG_LEVEL": "warn",
        }
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        asyncio.run(fill_topic(bootstrap, settings.topic_interactions, messages))
        worker = WorkerProcess(env, Path(folder) / "worker.log")
        worker.start()
        try:
            worker.wait_ready()
            started = time.monotonic()
            while True:
                stored = metric_sum(
                    worker.metrics(), "journeystream_sink_rows_total", table="interaction_events"
                )
                if stored >= EVENTS:
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - started
        finally:
            worker.stop()
    return {
        "events": EVENTS,
        "events_per_s": EVENTS / seconds,
        "seconds": seconds,
        "broker_ready_s": broker_ready_s,
    }
