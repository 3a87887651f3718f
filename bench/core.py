"""The journey core alone, in process: identity, journeys, irritants, dedup and deadlines
over decoded events (no decode, no I/O), the way `replay` drives it.

Two figures, each the median of REPEATS runs (min and max given too; the machine's speed
varies within seconds):

- `events_per_s`: the simulator's mix (50 000 events, 2 000 customers) into a fresh core.
- `events_per_s_100k_customers`: the mix's first 20 hours of event time, moved after a
  warm-up that leaves 100 000 other customers in state (one open journey and a digital
  history each; their deadlines lie beyond the mix, so the timed part pays for the size of
  the state, not for closing the warm-up's journeys). The warm-up is not timed.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time

from journeystream.core.config import RulesConfig
from journeystream.core.decode import decode
from journeystream.core.events import Event
from journeystream.core.pipeline import LocalPipeline
from journeystream.simulate import SimConfig, generate

EVENTS = 50_000
WARM_CUSTOMERS = 100_000
REPEATS = 5
_WARM_SPACING_MS = 10
_MIX_HOURS_MS = 20 * 3_600_000


def mix(start_ms: int | None = None) -> list[Event]:
    """The simulator's mix, decoded (start_ms moves its event time)."""
    config = SimConfig(
        seed=3,
        customers=2000,
        events=EVENTS,
        events_per_second=5.0,
        duplicate_share=0.01,
        max_disorder_ms=4000,
    )
    if start_ms is not None:
        config = dataclasses.replace(config, start_ms=start_ms)
    return [e for e in (decode(m.value) for m in generate(config)) if isinstance(e, Event)]


def warm_up(start_ms: int, customers: int = WARM_CUSTOMERS) -> list[Event]:
    """One page view per customer, with a journey: state that stays for a day."""
    return [
        Event(
            event_id=f"warm-{i}",
            occurred_at=start_ms + i * _WARM_SPACING_MS,
            channel="web",
            type="page_view",
            customer_id=f"W{i:07d}",
            journey=("billing", "claim", "subscription")[i % 3],
            segment="standard",
            attributes={"page": "/help"},
        )
        for i in range(customers)
    ]


def _timed(pipeline: LocalPipeline, events: list[Event], until: int = 2**61) -> float:
    started = time.perf_counter()
    for event in events:
        pipeline.feed(event)
    pipeline.advance(until)
    pipeline.drain()
    return time.perf_counter() - started


def _fill(pipeline: LocalPipeline, events: list[Event]) -> None:
    for event in events:
        pipeline.feed(event)
    pipeline.advance(events[-1].occurred_at + 1)
    pipeline.drain()


def run() -> dict[str, float]:
    base = SimConfig().start_ms
    events = mix()
    warm = warm_up(base)
    start = base + WARM_CUSTOMERS * _WARM_SPACING_MS + 60_000
    # the mix's first 20 hours (its tail jumps days ahead), and no final move of the
    # watermark past them: the warm-up's state (a day) stays
    after_warm = [e for e in mix(start) if e.occurred_at < start + _MIX_HOURS_MS]
    until = max(e.occurred_at for e in after_warm) + 1
    fresh: list[float] = []
    loaded: list[float] = []
    customers = 0
    for _ in range(REPEATS):
        fresh.append(len(events) / _timed(LocalPipeline(RulesConfig()), events))
        pipeline = LocalPipeline(RulesConfig())
        _fill(pipeline, warm)
        customers = pipeline.engine.customers_in_memory()
        loaded.append(len(after_warm) / _timed(pipeline, after_warm, until))
        del pipeline
        gc.collect()
    return {
        "events": len(events),
        "events_per_s": statistics.median(fresh),
        "events_per_s_min": min(fresh),
        "events_per_s_max": max(fresh),
        "events_100k_customers": len(after_warm),
        "customers_in_state": customers,
        "events_per_s_100k_customers": statistics.median(loaded),
        "events_per_s_100k_customers_min": min(loaded),
        "events_per_s_100k_customers_max": max(loaded),
    }
