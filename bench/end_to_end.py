"""Worker end to end against the client's ceiling, in the same run: a topic pre-filled with
valid simulated events is first drained by a bare aiokafka consumer (no processing), then a
fresh worker process reads it through every stage (decode, identity, journeys, irritants,
KPIs, ClickHouse) until every event is applied to its journey and stored as a raw row.
The two halves of the run are timed separately (does the rate fall as state grows?).
Also reports the broker's start-up time."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.broker import fill_topic, local_broker
from bench.machine import worker_processes
from bench.raw_drain import drain
from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import SimConfig, generate
from journeystream.supervise import WorkerProcess, metric_sum, worker_env

EVENTS = 200_000
CUSTOMERS = 20_000
PARTITIONS = 4


def run() -> dict[str, float]:
    # one process per core unless JOURNEYSTREAM_BENCH_PROCESSES says (1 = the earlier figures)
    return run_once(EVENTS, CUSTOMERS, PARTITIONS, worker_processes(PARTITIONS))


def run_once(events: int, customers: int, partitions: int, processes: int = 1) -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=5, customers=customers, events=events, start_ms=now_ms - 3_600_000, events_per_second=50.0
    )
    messages = [(m.key, m.value) for m in generate(config)]
    with local_broker() as (bootstrap, broker_ready_s), tempfile.TemporaryDirectory() as folder:
        env = worker_env(bootstrap, "bench", folder, partitions=str(partitions), processes=str(processes))
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        asyncio.run(fill_topic(bootstrap, settings.topic_interactions, messages))
        raw_s = asyncio.run(drain(bootstrap, settings.topic_interactions, events))
        worker = WorkerProcess(env, Path(folder) / "worker.log")
        worker.start()
        try:
            # the clock starts at the first event read (the endpoint answers before the
            # driver starts): the consumer group's join, and with JOURNEYSTREAM_PROCESSES > 1
            # the rebalance as the helpers join, are in the measured time
            wait_for_first_event(worker)
            started, cpu_started = time.monotonic(), _tree_cpu_seconds(worker)
            main_started = _tree_cpu_seconds(worker, main_threads=True)
            samples: list[_Sample] = []
            # one scrape per look: each costs the worker's HTTP thread ~5 ms of the GIL
            # (the main thread's), and two every 0.1 s took ~6% of the run from it
            while not samples or not _settled(samples, events):
                samples.append(_sample(worker, started, cpu_started, main_started))
                time.sleep(0.1)
            end = _finished(samples, events)
            half = _half(samples, events)
            checkpoints = worker.metrics().get("journeystream_checkpoint_seconds_count", 0.0)
        finally:
            worker.stop()
    seconds = end.seconds
    worker_rate, raw_rate = events / seconds, events / raw_s
    return {
        "events": events,
        "customers": customers,
        "partitions": partitions,
        "processes": processes,
        "events_per_s": worker_rate,
        "raw_drain_events_per_s": raw_rate,
        "share_of_raw_drain": worker_rate / raw_rate,
        "seconds": seconds,
        "first_half_events_per_s": (events // 2) / half.seconds,
        "second_half_events_per_s": (events - events // 2) / max(1e-9, seconds - half.seconds),
        # ahead of the last watermark when the run settled (follow-ups the simulator
        # schedules beyond the input's end): neither applied nor waited for
        "events_waiting_at_end": events - samples[-1].applied,
        "worker_cores_used": end.cpu_s / seconds,
        # the processing threads alone, one per process (the embedded ClickHouse, the
        # writer and the HTTP threads use the rest): events per second of its CPU time compares trees on a
        # shared machine better than the wall-clock rate
        "main_thread_cores_used": end.main_cpu_s / seconds,
        "events_per_main_thread_cpu_s": events / max(1e-9, end.main_cpu_s),
        "checkpoints": checkpoints,
        "broker_ready_s": broker_ready_s,
    }


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process and all its threads, or of one of its threads
    (Linux /proc)."""
    path = Path(f"/proc/{pid}/stat") if thread is None else Path(f"/proc/{pid}/task/{thread}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_first_event(worker: WorkerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if metric_sum(worker.metrics(), "journeystream_events_consumed_total") > 0:
                return
        except OSError:  # the endpoint is not up yet
            pass
        time.sleep(0.02)
    raise TimeoutError(f"no event read in {timeout:.0f}s; see {worker.log_path}")


def _tree_cpu_seconds(worker: WorkerProcess, main_threads: bool = False) -> float:
    """The worker's CPU time with its helper processes' (JOURNEYSTREAM_PROCESSES); or only
    the processing threads' (each process's main thread)."""
    pids = [worker.pid, *worker.helper_pids()]
    return sum(_cpu_seconds(each, thread=each if main_threads else None) for each in pids)


SETTLE_S = 3.0
"""No event applied for this long, with every event read and stored: the run is over."""


@dataclass(frozen=True, slots=True)
class _Sample:
    seconds: float  # since the first event was read
    stored: float  # raw rows written
    applied: float
    waiting: float  # buffered in the journey stage, ahead of its watermark
    lag: float
    cpu_s: float  # the worker's (and its helpers') CPU seconds since the clock started
    main_cpu_s: float  # of their main threads


def _sample(worker: WorkerProcess, started: float, cpu_started: float, main_started: float) -> _Sample:
    metrics = worker.metrics()
    return _Sample(
        time.monotonic() - started,
        metric_sum(metrics, "journeystream_sink_rows_total", table="interaction_events"),
        metric_sum(metrics, "journeystream_events_applied_total"),
        metric_sum(metrics, "journeystream_buffered_items", stage="journeys"),
        metric_sum(metrics, "journeystream_consumer_lag"),
        _tree_cpu_seconds(worker) - cpu_started,
        _tree_cpu_seconds(worker, main_threads=True) - main_started,
    )


def _settled(samples: list[_Sample], events: int) -> bool:
    """Every event read and stored, every one applied or waiting, and none applied for
    SETTLE_S. (Read when the run ends, the gauge of waiting items can still count items a
    watermark already on its way will release: up to half the events were.)"""
    last = samples[-1]
    if last.stored < events or last.lag != 0 or last.applied + last.waiting < events:
        return False
    reached = next(s for s in samples if s.applied >= last.applied)  # the count only grows
    return last.seconds - reached.seconds >= SETTLE_S


def _finished(samples: list[_Sample], events: int) -> _Sample:
    """The first sample where every event was read and stored, and as many applied as ever
    will be (all, but for those still waiting once the run settled)."""
    applied = samples[-1].applied
    return next(s for s in samples if s.stored >= events and s.lag == 0 and s.applied >= applied)


def _half(samples: list[_Sample], events: int) -> _Sample:
    """The first sample where half the events were stored and applied."""
    return next(s for s in samples if s.stored >= events // 2 and s.applied >= events // 2)
