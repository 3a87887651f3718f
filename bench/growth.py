"""How the end-to-end figure moves with the number of customers and of partitions (one
worker process, 50 000 events each). The offered-rate axis is `bench latency`."""

from __future__ import annotations

from bench.end_to_end import run_once

EVENTS = 50_000
CASES = (  # (customers, partitions)
    (5_000, 4),
    (50_000, 4),
    (20_000, 1),
    (20_000, 8),
)


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    for customers, partitions in CASES:
        result = run_once(EVENTS, customers, partitions)
        tag = f"{customers}_customers_{partitions}_partitions"
        figures[f"events_per_s_{tag}"] = result["events_per_s"]
        figures[f"share_of_raw_drain_{tag}"] = result["share_of_raw_drain"]
    return figures
