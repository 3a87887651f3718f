"""The journey core alone, in process: identity, journeys, irritants, dedup and deadlines
over decoded events (no decode, no I/O), the way `replay` drives it."""

from __future__ import annotations

import time

from journeystream.core.config import RulesConfig
from journeystream.core.decode import decode
from journeystream.core.events import Event
from journeystream.core.pipeline import LocalPipeline
from journeystream.simulate import SimConfig, generate

EVENTS = 50_000


def run() -> dict[str, float]:
    config = SimConfig(
        seed=3,
        customers=2000,
        events=EVENTS,
        events_per_second=5.0,
        duplicate_share=0.01,
        max_disorder_ms=4000,
    )
    events = [e for e in (decode(m.value) for m in generate(config)) if isinstance(e, Event)]
    best = float("inf")
    for _ in range(3):
        pipeline = LocalPipeline(RulesConfig())
        started = time.perf_counter()
        for event in events:
            pipeline.feed(event)
        pipeline.advance(2**61)
        pipeline.drain()
        best = min(best, time.perf_counter() - started)
    return {"events": len(events), "events_per_s": len(events) / best}
