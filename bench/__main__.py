"""Run benchmarks and append their figures to bench/results/<date>.md with the machine."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from bench.machine import describe, today

ALL = [
    "decode",
    "core",
    "state",
    "stages",
    "replay",
    "raw_drain",
    "end_to_end",
    "latency",
    "open_journeys",
    "growth",
]
RESULTS = Path(__file__).parent / "results"


def main(names: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{today()}.md"
    load = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    lines = [
        f"\n## {today()} — {', '.join(names)}\n",
        f"Machine: {describe()}; load average {load:.2f} at start\n",
    ]
    for name in names:
        figures = importlib.import_module(f"bench.{name}").run()
        print(f"{name}: {figures}", flush=True)
        lines.append(
            f"- **{name}**: " + ", ".join(f"{key} = {_fmt(value)}" for key, value in figures.items())
        )
    with out.open("a", encoding="utf-8") as results:
        results.write("\n".join(lines) + "\n")
    print(f"results appended to {out}")
    return 0


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ALL))
