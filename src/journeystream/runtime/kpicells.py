"""KPI cells of the journey stage: one pure accumulator per partition, persisted cell by cell
in a Faust table and written to `kpi_minute` as cumulative rows versioned by facts counted.

Crash safety follows the stage's write order: rows (and the shard's progress) first, then
the cells' state, flushed to the broker *before* the customer states, then the acks. A
crash before the cells are saved replays the same facts onto the last saved cells, so the
rows written again carry the same versions and counts; a crash between the cells and the
customer states replays facts the cells already counted, and each cell skips them by the
per-customer fact sequence it keeps.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import orjson

from journeystream.core.facts import Fact
from journeystream.core.journeys import Origin
from journeystream.core.kpis import CellKey, KpiAccumulator
from journeystream.core.timeline import NEVER
from journeystream.metrics import Metrics
from journeystream.sinks.rows import KPI_MINUTE, KPI_PROGRESS, kpi_row, progress_row
from journeystream.sinks.sink import BatchingSink

log = logging.getLogger(__name__)

EVICT_GRACE_S = 120.0
_SEP = "\x1f"  # unit separator: never inside a channel, journey or segment name


def cell_table_key(partition: int, key: CellKey) -> bytes:
    minute, channel, journey, segment = key
    return _SEP.join((str(partition), "c", str(minute), channel, journey, segment)).encode()


def mark_table_key(partition: int, customer: str) -> bytes:
    return _SEP.join((str(partition), "m", customer)).encode()


def parse_table_key(raw: bytes) -> tuple[int, CellKey | str]:
    """(partition, cell key) or (partition, customer key) of a kpi_cells table key."""
    partition, kind, *rest = raw.decode().split(_SEP)
    if kind == "m":
        return int(partition), _SEP.join(rest)
    minute, channel, journey, segment = rest
    return int(partition), (int(minute), channel, journey, segment)


class KpiCells:
    def __init__(self, table: Any, horizon_ms: int, metrics: Metrics) -> None:
        self.table = table
        self.horizon_ms = horizon_ms
        self.metrics = metrics
        self.accumulators: dict[int, KpiAccumulator] = {}
        self.progress: dict[int, int] = {}
        self._watermarks: dict[int, deque[tuple[float, int]]] = {}  # (monotonic s, watermark)
        self._too_late: dict[int, int] = {}

    def reset(self) -> None:
        self.accumulators.clear()
        self.progress.clear()
        self._watermarks.clear()
        self._too_late.clear()

    def add(self, partition: int, facts: list[Fact], origins: list[Origin | None]) -> None:
        accumulator = self._accumulator(partition)
        accumulator.add_many(facts, origins)
        refused = accumulator.too_late - self._too_late.get(partition, 0)
        if refused:
            self.metrics.kpi_too_late.inc(refused)
            self._too_late[partition] = accumulator.too_late

    def collect(
        self, partition: int, watermark: int, sink: BatchingSink, stamp: int
    ) -> dict[bytes, bytes | None]:
        """Queue the rows of the partition's changed cells and its progress; returns the
        cell state changes to save once those rows are written."""
        accumulator = self._accumulator(partition)
        changes: dict[bytes, bytes | None] = {}
        for key, counts in accumulator.pop_dirty():
            sink.add(KPI_MINUTE.name, kpi_row(key, counts, partition, stamp))
            changes[cell_table_key(partition, key)] = orjson.dumps(accumulator.cell_state(key))
        if watermark > self.progress.get(partition, NEVER):
            self.progress[partition] = watermark
            sink.add(KPI_PROGRESS.name, progress_row(partition, watermark, stamp))
            self._watermarks.setdefault(partition, deque()).append((time.monotonic(), watermark))
        floor = self._floor(partition)
        if floor is not None:
            for key in accumulator.evicted_keys(floor):
                changes[cell_table_key(partition, key)] = None
            accumulator.evict(floor)
        for customer, mark in accumulator.pop_dirty_marks().items():
            changes[mark_table_key(partition, customer)] = None if mark is None else orjson.dumps(mark)
        self.metrics.kpi_cells.labels(str(partition)).set(len(accumulator))
        return changes

    def _floor(self, partition: int) -> int | None:
        """Where cells may be forgotten: the horizon behind the watermark of EVICT_GRACE_S ago.
        Facts can trail the watermark: after a jump (a backlog read, then the wall clock),
        a login's held events are applied once the merge payload arrives, a moment later."""
        samples = self._watermarks.get(partition)
        now = time.monotonic()
        while samples and len(samples) > 1 and now - samples[1][0] >= EVICT_GRACE_S:
            samples.popleft()  # the next sample is old enough too
        if not samples or now - samples[0][0] < EVICT_GRACE_S:
            return None
        return samples[0][1] - self.horizon_ms

    def _accumulator(self, partition: int) -> KpiAccumulator:
        accumulator = self.accumulators.get(partition)
        if accumulator is None:
            accumulator = self.accumulators[partition] = self._restore(partition)
        return accumulator

    def _restore(self, partition: int) -> KpiAccumulator:
        accumulator = KpiAccumulator()
        restored = 0
        for raw_key, value in list(self.table.items()):
            owner, key = parse_table_key(bytes(raw_key))
            if owner != partition:
                continue
            if isinstance(key, str):
                accumulator.load_mark(key, orjson.loads(bytes(value)))
            else:
                accumulator.load_cell(key, orjson.loads(bytes(value)))
                restored += 1
        if restored:
            log.info("partition %d: %d KPI cells restored", partition, restored)
        return accumulator
