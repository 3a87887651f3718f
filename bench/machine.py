"""What machine a figure was measured on."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


def describe() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            kib = int(info.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {system}, Python {platform.python_version()}"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def worker_processes(partitions: int = 4) -> int:
    """JOURNEYSTREAM_PROCESSES for a bench's worker: JOURNEYSTREAM_BENCH_PROCESSES, else one
    per core as the README recommends (and no more than the partitions)."""
    default = min(os.cpu_count() or 1, partitions)
    return int(os.environ.get("JOURNEYSTREAM_BENCH_PROCESSES", default))
