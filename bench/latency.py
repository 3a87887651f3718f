"""Produce-to-ClickHouse latency at fixed offered rates: a fresh worker per rate, the
simulator producing in real time (event time = now) for DURATION_S, then the worker's
`journeystream_store_delay_seconds` histogram (producer timestamp -> raw row written, the
moment the ingest stage's batch is durable) read as p50 / p99.

Quantiles come from the histogram buckets (linear within a bucket, as Prometheus'
histogram_quantile does), so they are as fine as the buckets around them. A rate the worker
cannot sustain shows as a latency that grows with the run (the backlog), not a steady value.
Processes: JOURNEYSTREAM_BENCH_PROCESSES (default: one per core, as the README recommends).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from pathlib import Path

from bench.broker import local_broker
from bench.machine import worker_processes
from journeystream.config import Settings
from journeystream.kafka_options import kafka_options
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import SimConfig, generate, send_to_kafka
from journeystream.supervise import WorkerProcess, worker_env

RATES = (1_000.0, 5_000.0)  # the target: p99 <= 2 s at 5 000 events/s offered
DURATION_S = 30.0
DRAIN_TIMEOUT_S = 300.0
HISTOGRAM = "journeystream_store_delay_seconds"
PROCESSES = worker_processes()


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    with local_broker() as (bootstrap, _):
        for rate in RATES:
            p50, p99, achieved = _one_rate(bootstrap, rate)
            tag = f"{rate:.0f}_per_s"
            figures[f"p50_s_at_{tag}"] = p50
            figures[f"p99_s_at_{tag}"] = p99
            figures[f"produced_per_s_at_{tag}"] = achieved
    figures["processes"] = PROCESSES
    return figures


def _one_rate(bootstrap: str, rate: float) -> tuple[float, float, float]:
    events = int(rate * DURATION_S)
    config = SimConfig(
        seed=9, customers=20_000, events=events, start_ms=int(time.time() * 1000), events_per_second=rate
    )
    with tempfile.TemporaryDirectory() as folder:
        env = worker_env(bootstrap, f"latency{rate:.0f}", folder, processes=str(PROCESSES))
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        worker = WorkerProcess(env, Path(folder) / "worker.log")
        worker.start()
        try:
            worker.wait_ready()
            started = time.monotonic()
            # generated lazily: event times follow the wall clock as the producer paces them
            asyncio.run(
                send_to_kafka(
                    generate(config),
                    bootstrap,
                    settings.topic_interactions,
                    rate,
                    client_options=kafka_options(settings),
                )
            )
            achieved = events / (time.monotonic() - started)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while _count(worker.metrics()) < events and time.monotonic() < deadline:
                time.sleep(0.5)
            metrics = worker.metrics()
        finally:
            worker.stop()
    return quantile(metrics, 0.5), quantile(metrics, 0.99), achieved


def _count(metrics: dict[str, float]) -> float:
    return metrics.get(f"{HISTOGRAM}_count", 0.0)


def quantile(metrics: dict[str, float], q: float) -> float:
    """histogram_quantile over the `le` buckets of HISTOGRAM."""
    buckets = sorted(
        (float(series.split('le="', 1)[1].split('"', 1)[0]), value)
        for series, value in metrics.items()
        if series.startswith(f"{HISTOGRAM}_bucket{{")
    )
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower
