"""`journeystream replay` of a simulated file into embedded ClickHouse, the whole command.

The file is the end-to-end bench's stream (200 000 events, 20 000 customers, event times in
the last hour so no row is older than the retention). Each run is a fresh process on a fresh
data dir, timed from its start to its exit (interpreter, migration, decode, core, rows, the
last flush): what a data engineer waits for. REPEATS runs; the median with min and max.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from journeystream.simulate import SimConfig, generate

EVENTS = 200_000
CUSTOMERS = 20_000
REPEATS = 3


def run() -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=5, customers=CUSTOMERS, events=EVENTS, start_ms=now_ms - 3_600_000, events_per_second=50.0
    )
    with tempfile.TemporaryDirectory() as folder:
        lines = Path(folder) / "events.jsonl"
        with lines.open("wb") as out:
            for message in generate(config):
                out.write(message.value + b"\n")
        seconds = [_replay_once(lines, Path(folder) / f"data-{n}") for n in range(REPEATS)]
    median = statistics.median(seconds)
    return {
        "lines": EVENTS,
        "events_per_s": EVENTS / median,
        "events_per_s_min": EVENTS / max(seconds),
        "events_per_s_max": EVENTS / min(seconds),
        "command_s_median": median,
    }


def _replay_once(lines: Path, data_dir: Path) -> float:
    env = {**os.environ, "JOURNEYSTREAM_DATA_DIR": str(data_dir)}
    env.pop("JOURNEYSTREAM_CLICKHOUSE_DSN", None)  # the embedded store, in the data dir
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "journeystream", "replay", str(lines)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or f"replayed {EVENTS} lines" not in done.stdout:
        raise RuntimeError(f"replay failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-2000:]}")
    return elapsed
