"""Throughput, memory and recovery with many open journeys, in the worker.

N customers each start one journey (a `journey_start`: it stays open for a day of event
time, its web session for 30 minutes; the wall clock never moves the watermark:
JOURNEYSTREAM_QUIET_AFTER_MS is a day). Before and after the fill, a simulated burst of
other customers is timed: the ratio says how much the held state slows the worker down.
Then the worker's peak RSS and the serialized state per open journey, and two restarts
after SIGKILL, each timed until a new event is applied: on the kept data dir (the store
holds the state; only the changelog tail is read) and on an empty one (the whole changelog
is read).

Event time, from the first start T: burst 1 in [T - 40 min, T - 20.5 min), the starts in
[T, T + 5 min), burst 2 in [T + 5.5 min, T + 25 min), the restarts' events after it. Every
event is in order and no deadline of the N customers falls due (their first is T + 30 min):
the bursts measure processing with the state held, not the N customers' deadlines firing.
(The simulator spreads some journeys over days: the bursts are cut at their window's end,
so they hold ~80% of BURST events.)

Sizes: JOURNEYSTREAM_BENCH_OPEN (default "100000,1000000"); store: JOURNEYSTREAM_BENCH_STORE
(default rocksdb://, the store the README recommends for large states); processes:
JOURNEYSTREAM_BENCH_PROCESSES (default: one per core, as the README recommends). With
helpers, the peak RSS is the sum of every process's peak (at most that much at once).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.broker import fill_topic, local_broker
from bench.machine import worker_processes
from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import SimConfig, generate
from journeystream.supervise import WorkerProcess, metric_sum, worker_env

SIZES = tuple(int(n) for n in os.environ.get("JOURNEYSTREAM_BENCH_OPEN", "100000,1000000").split(","))
STORE = os.environ.get("JOURNEYSTREAM_BENCH_STORE", "rocksdb://")
PROCESSES = worker_processes()
BURST = 150_000  # a few seconds of work: the rate is read to a tenth of a second
MINUTE_MS = 60_000
SPAN_MS = 5 * MINUTE_MS  # event times of the starts
BURST_WINDOW_MS = 19 * MINUTE_MS + 30_000  # burst 2 ends before the starts' first deadline
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
        # static membership, as deployed (the pod name): a restarted worker takes its
        # partitions back at once, so the restarts time the recovery, not a session timeout
        env = worker_env(
            bootstrap,
            name,
            folder,
            quiet_after_ms=str(86_400_000),
            store=STORE,
            group_instance_id=f"{name}-w0",
            processes=str(PROCESSES),
        )
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        worker = WorkerProcess(env, Path(folder) / "worker.log")
        worker.start()
        worker.wait_ready()
        empty_rate = _burst(worker, bootstrap, settings.topic_interactions, start_ms - 40 * MINUTE_MS, "B1")
        # starts 10 s later, on every partition (the watermark is the minimum over them),
        # move the watermark past every other one
        starts = _starts(size, start_ms, "C") + _starts(PUSHERS, start_ms + SPAN_MS + 10_000, "Z")
        applied_before = _applied(worker)
        started = time.monotonic()
        asyncio.run(fill_topic(bootstrap, settings.topic_interactions, starts))
        _wait(lambda: _applied(worker) >= applied_before + size)  # Z waits
        fill_s = time.monotonic() - started
        full_rate = _burst(worker, bootstrap, settings.topic_interactions, start_ms + SPAN_MS + 30_000, "B2")
        time.sleep(3)  # a flush and a gauge update after the last start
        metrics = worker.metrics()
        state_bytes = metric_sum(metrics, "journeystream_state_bytes")
        open_journeys = metric_sum(metrics, "journeystream_open_journeys")
        peak_rss = _peak_rss_bytes(worker)
        assert worker.kill() == -9

        recovery_s, recovered_rss = _recover(env, bootstrap, settings, Path(folder), start_ms, "R")
        for state in Path(folder).glob("**/state"):  # the local stores are gone (helpers' too)
            shutil.rmtree(state, ignore_errors=True)
        empty_dir_s, _ = _recover(env, bootstrap, settings, Path(folder), start_ms, "S")
    return {
        "processes": PROCESSES,
        "open_journeys": open_journeys,
        "fill_s": fill_s,
        "empty_state_events_per_s": empty_rate,
        "full_state_events_per_s": full_rate,
        "full_over_empty": full_rate / empty_rate,
        "peak_rss_mb": peak_rss / 2**20,
        "state_bytes_per_open_journey": state_bytes / max(open_journeys, 1),
        "rss_bytes_per_open_journey": peak_rss / max(open_journeys, 1),
        "recovery_kept_dir_s": recovery_s,
        "recovery_empty_dir_s": empty_dir_s,
        "peak_rss_after_recovery_mb": recovered_rss / 2**20,
    }


def _burst(worker: WorkerProcess, bootstrap: str, topic: str, start_ms: int, seed_prefix: str) -> float:
    """Events/s for the worker to store a simulated burst of BURST events, cut at
    BURST_WINDOW_MS of event time."""
    config = SimConfig(
        seed=len(seed_prefix) + ord(seed_prefix[-1]),
        customers=15_000,
        events=BURST,
        start_ms=start_ms,
        events_per_second=150.0,
    )
    messages = [(m.key, m.value) for m in generate(config) if m.occurred_at < start_ms + BURST_WINDOW_MS]
    before = metric_sum(worker.metrics(), "journeystream_sink_rows_total", table="interaction_events")
    asyncio.run(fill_topic(bootstrap, topic, messages))
    started = time.monotonic()
    _wait(
        lambda: (
            metric_sum(worker.metrics(), "journeystream_sink_rows_total", table="interaction_events")
            >= before + len(messages)
        ),
        interval_s=0.1,
    )
    return len(messages) / (time.monotonic() - started)


def _recover(
    env: dict[str, str], bootstrap: str, settings: Settings, folder: Path, start_ms: int, prefix: str
) -> tuple[float, int]:
    """Seconds from a restart until a new start is applied, and the peak RSS by then; the
    worker is then killed again."""
    late = start_ms + SPAN_MS + 30_000 + BURST_WINDOW_MS + (1 if prefix == "R" else 2) * 20_000
    more = _starts(1, late, prefix) + _starts(PUSHERS, late + 10_000, prefix + "Z")
    asyncio.run(fill_topic(bootstrap, settings.topic_interactions, more))
    restarted = WorkerProcess(env, folder / "worker.log")
    started = time.monotonic()
    restarted.start()
    try:
        _wait(lambda: _applied(restarted) >= 1, interval_s=0.1)
        return time.monotonic() - started, _peak_rss_bytes(restarted)
    finally:
        restarted.kill()


def _applied(worker: WorkerProcess) -> float:
    try:
        return metric_sum(worker.metrics(), "journeystream_events_applied_total")
    except OSError:
        return 0.0


def _wait(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"not done within {timeout_s:.0f}s")


def _peak_rss_bytes(worker: WorkerProcess) -> int:
    """VmHWM of the worker process and of its helpers (Linux): their peak resident sets."""
    return sum(_vm_hwm(pid) for pid in (worker.pid, *worker.helper_pids()))


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")
