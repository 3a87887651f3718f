"""Memory and recovery with many open journeys, in the worker: N customers each start one
journey (a `journey_start`, so it stays open for the 30-minute abandonment deadline of event
time; the input's event times span a few minutes and the wall clock never moves the
watermark: JOURNEYSTREAM_QUIET_AFTER_MS is a day). Reports the worker's peak RSS, the
serialized state per open journey (journeystream_state_bytes / open journeys), then kills
the worker with SIGKILL and measures the restart until a new event is applied: changelog
recovery plus the restore of every customer state.

Sizes: JOURNEYSTREAM_BENCH_OPEN (default "100000,1000000").
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.broker import fill_topic, local_broker
from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.supervise import WorkerProcess, metric_sum, worker_env

SIZES = tuple(int(n) for n in os.environ.get("JOURNEYSTREAM_BENCH_OPEN", "100000,1000000").split(","))
SPAN_MS = 5 * 60_000  # event times of the starts: 5 minutes, far inside the 30-minute deadline
TIMEOUT_S = 3600.0
PUSHERS = 64  # distinct keys: every input partition gets some


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    with local_broker() as (bootstrap, _):
        for size in SIZES:
            for name, value in _one_size(bootstrap, size).items():
                figures[f"{name}_at_{size}"] = value
    return figures


def _starts(count: int, start_ms: int, prefix: str) -> list[tuple[bytes, bytes]]:
    messages = []
    for n in range(count):
        customer = f"{prefix}{n:07d}"
        at = datetime.fromtimestamp((start_ms + n * SPAN_MS // count) / 1000, tz=UTC)
        event = {
            "event_id": f"{customer}-start",
            "occurred_at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "customer_id": customer,
            "channel": "web",
            "type": "journey_start",
            "journey": "claim",
            "segment": "standard",
            "attributes": {},
        }
        messages.append((customer.encode(), orjson.dumps(event)))
    return messages


def _one_size(bootstrap: str, size: int) -> dict[str, float]:
    start_ms = int(time.time() * 1000) - 3_600_000
    name = f"open{size}"
    with tempfile.TemporaryDirectory() as folder:
        env = worker_env(
            bootstrap, name, folder, quiet_after_ms=str(86_400_000), group_instance_id=f"{name}-w0"
        )
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        # starts 10 s later, on every partition (the watermark is the minimum over them),
        # move the watermark past every other one
        starts = _starts(size, start_ms, "C") + _starts(PUSHERS, start_ms + SPAN_MS + 10_000, "Z")
        asyncio.run(fill_topic(bootstrap, settings.topic_interactions, starts))
        worker = WorkerProcess(env, Path(folder) / "worker.log")
        worker.start()
        worker.wait_ready()
        started = time.monotonic()
        _wait(lambda: metric_sum(worker.metrics(), "journeystream_open_journeys") >= size)  # Z waits
        fill_s = time.monotonic() - started
        time.sleep(3)  # a flush and a gauge update after the last start
        metrics = worker.metrics()
        state_bytes = metric_sum(metrics, "journeystream_state_bytes")
        open_journeys = metric_sum(metrics, "journeystream_open_journeys")
        peak_rss = _peak_rss_bytes(worker)
        assert worker.kill() == -9

        # two more starts after the restart: the first is applied once the state is back
        late = start_ms + SPAN_MS + 20_000
        more = _starts(1, late, "R") + _starts(PUSHERS, late + 10_000, "S")
        asyncio.run(fill_topic(bootstrap, settings.topic_interactions, more))
        restarted = WorkerProcess(env, Path(folder) / "worker.log")
        started = time.monotonic()
        restarted.start()
        try:
            _wait(lambda: _applied(restarted) >= 1)
            recovery_s = time.monotonic() - started
            recovered_rss = _peak_rss_bytes(restarted)
        finally:
            restarted.stop()
    return {
        "open_journeys": open_journeys,
        "fill_s": fill_s,
        "peak_rss_mb": peak_rss / 2**20,
        "state_bytes_per_open_journey": state_bytes / max(open_journeys, 1),
        "rss_bytes_per_open_journey": peak_rss / max(open_journeys, 1),
        "recovery_s": recovery_s,
        "peak_rss_after_recovery_mb": recovered_rss / 2**20,
    }


def _applied(worker: WorkerProcess) -> float:
    try:
        return metric_sum(worker.metrics(), "journeystream_events_applied_total")
    except OSError:
        return 0.0


def _wait(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"not done within {timeout_s:.0f}s")


def _peak_rss_bytes(worker: WorkerProcess) -> int:
    """VmHWM of the worker process (Linux): its peak resident set."""
    assert worker.process is not None
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")
