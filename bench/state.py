"""State size: serialized bytes of customer state per open journey, and the process's
resident memory per open journey, after feeding a simulated stream whose journeys are
still open (no final watermark move)."""

from __future__ import annotations

import resource
import time

from journeystream.core.config import RulesConfig
from journeystream.core.decode import decode
from journeystream.core.events import Event
from journeystream.core.pipeline import LocalPipeline
from journeystream.simulate import SimConfig, generate

CUSTOMERS = 200_000
EVENTS = 600_000
WINDOW_MS = 10 * 60_000


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def run() -> dict[str, float]:
    # a dense timeline: most journeys are still open when the stream ends
    config = SimConfig(seed=9, customers=CUSTOMERS, events=EVENTS, events_per_second=2_000.0)
    decoded = [e for e in (decode(m.value) for m in generate(config)) if isinstance(e, Event)]
    # keep the first minutes of event time only: the journeys begun there are still open
    horizon = config.start_ms + WINDOW_MS
    events = [e for e in decoded if e.occurred_at < horizon]
    before = _rss_bytes()
    pipeline = LocalPipeline(RulesConfig())
    started = time.perf_counter()
    for event in events:
        pipeline.feed(event)
    pipeline.drain()
    seconds = time.perf_counter() - started
    rss = _rss_bytes() - before
    engine = pipeline.engine
    open_journeys = engine.open_journeys()
    states = engine.dirty_states()
    state_bytes = sum(len(raw) for raw in states.values() if raw is not None)
    return {
        "events": len(events),
        "customers_in_state": len(states),
        "open_journeys": open_journeys,
        "state_bytes_per_open_journey": state_bytes / max(1, open_journeys),
        "rss_bytes_per_open_journey": rss / max(1, open_journeys),
        "events_per_s": len(events) / seconds,
    }
