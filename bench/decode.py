"""Decode + validate throughput: bytes → typed Event, in process, one core.

The median of REPEATS passes over the simulator's valid messages (min and max given too),
and the same for the reference (slow) path alone, in the same run, for the ratio."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from journeystream.core.decode import Rejection as _Rejection
from journeystream.core.decode import _decode_slow, decode
from journeystream.core.events import Event as _Event
from journeystream.simulate import SimConfig, generate

MESSAGES = 200_000
REPEATS = 5


def _rates(values: list[bytes], function: Callable[[bytes], _Event | _Rejection]) -> list[float]:
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for raw in values:
            function(raw)
        rates.append(len(values) / (time.perf_counter() - started))
    return rates


def run() -> dict[str, float]:
    values = [m.value for m in generate(SimConfig(seed=1, customers=5000, events=MESSAGES)) if m.valid]
    fast, slow = [], []
    for _ in range(2):  # interleaved: both paths see the same machine
        fast += _rates(values, decode)
        slow += _rates(values, _decode_slow)
    mean_bytes = sum(map(len, values)) / len(values)
    return {
        "messages": len(values),
        "events_per_s": statistics.median(fast),
        "events_per_s_min": min(fast),
        "events_per_s_max": max(fast),
        "slow_path_events_per_s": statistics.median(slow),
        "mean_message_bytes": mean_bytes,
    }
