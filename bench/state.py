"""State size: serialized bytes of customer state per open journey, and the process's
resident memory per open journey, after feeding a simulated stream whose journeys are
still open (no final watermark move).

Two engines over the same events, each in a fresh process: `live`, every customer a live
Python object (no store, as `replay` runs it), and `stored`, the engine with a store (a
dict of serialized states, written every FLUSH_EVERY events, as the worker's in-memory
table store holds them) keeping at most LIVE_CUSTOMERS customers live, and `stored_gc`,
the same with the cyclic GC's thresholds raised to GC_THRESHOLDS (the churn of loading and
dropping customers makes default thresholds run a full collection often). Resident memory
includes the store."""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time

from journeystream.core.config import RulesConfig
from journeystream.core.decode import decode
from journeystream.core.events import Event
from journeystream.core.journeys import LIVE_CUSTOMERS, JourneyEngine
from journeystream.core.pipeline import SOURCE_A, SOURCE_B, LocalPipeline
from journeystream.simulate import SimConfig, generate

CUSTOMERS = 200_000
EVENTS = 600_000
WINDOW_MS = 10 * 60_000
FLUSH_EVERY = 5_000
GC_THRESHOLDS = (100_000, 50, 100)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _events() -> list[Event]:
    # a dense timeline: most journeys are still open when the stream ends
    config = SimConfig(seed=9, customers=CUSTOMERS, events=EVENTS, events_per_second=2_000.0)
    decoded = [e for e in (decode(m.value) for m in generate(config)) if isinstance(e, Event)]
    # keep the first minutes of event time only: the journeys begun there are still open
    horizon = config.start_ms + WINDOW_MS
    return [e for e in decoded if e.occurred_at < horizon]


def measure(mode: str) -> dict[str, float]:
    events = _events()
    # the input list is the benchmark's, not the engine's: out of the cyclic GC's sight
    gc.collect()
    gc.freeze()
    if mode == "stored_gc":
        gc.set_threshold(*GC_THRESHOLDS)
    before = _rss_bytes()
    pipeline = LocalPipeline(RulesConfig())
    store: dict[str, bytes] = {}
    if mode != "live":
        pipeline.engine = JourneyEngine(RulesConfig(), [SOURCE_A, SOURCE_B], load=store.get)
    engine = pipeline.engine

    def flush() -> None:
        for key, raw in engine.dirty_states().items():
            if raw is None:
                store.pop(key, None)
            else:
                store[key] = raw

    started = time.perf_counter()
    for count, event in enumerate(events, 1):
        pipeline.feed(event)
        if mode != "live" and count % FLUSH_EVERY == 0:
            flush()
    pipeline.drain()
    flush()
    seconds = time.perf_counter() - started
    rss = _rss_bytes() - before
    open_journeys = engine.open_journeys()
    state_bytes = sum(map(len, store.values()))
    return {
        "events": len(events),
        "customers_in_state": len(store),
        "customers_live": engine.customers_in_memory(),
        "open_journeys": open_journeys,
        "state_bytes_per_open_journey": state_bytes / max(1, open_journeys),
        "rss_bytes_per_open_journey": rss / max(1, open_journeys),
        "events_per_s": len(events) / seconds,
    }


def run() -> dict[str, float]:
    figures: dict[str, float] = {"live_customers_bound": LIVE_CUSTOMERS}
    for mode in ("live", "stored", "stored_gc"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.state", mode], check=True, capture_output=True, text=True
        ).stdout
        figures.update({f"{mode}_{name}": value for name, value in json.loads(out).items()})
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
