"""Decode + validate throughput: bytes → typed Event, in process, one core."""

from __future__ import annotations

import time

from journeystream.core.decode import decode
from journeystream.simulate import SimConfig, generate

MESSAGES = 200_000


def run() -> dict[str, float]:
    values = [m.value for m in generate(SimConfig(seed=1, customers=5000, events=MESSAGES)) if m.valid]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for raw in values:
            decode(raw)
        best = min(best, time.perf_counter() - started)
    mean_bytes = sum(map(len, values)) / len(values)
    return {"messages": len(values), "events_per_s": len(values) / best, "mean_message_bytes": mean_bytes}
