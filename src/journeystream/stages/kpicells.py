"""KPI cells of one journey-stage partition: a pure accumulator, stored cell by cell and
written to `kpi_minute` as cumulative rows versioned by the facts counted.

Crash safety follows the checkpoint's order: rows (and the shard's progress) first, then
the cells' state, made durable *before* the customer states, then the offsets. A crash
before the cells are saved replays the same facts onto the last saved cells, so the rows
written again carry the same versions and counts. A crash between the cells and the
customer states leaves the cells one checkpoint ahead in their changelog: the restore takes
them back to the checkpoint the customer states finished (runtime/changelog.py), since the
facts regenerated from older customer states may come in another order. The per-customer
fact sequence each mark keeps skips facts counted already when they come again in the same
order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from journeystream.core.facts import Fact
from journeystream.core.journeys import Origin
from journeystream.core.kpis import CellKey, KpiAccumulator
from journeystream.core.state import dumps_exact  # stored values: exact-size bytes
from journeystream.core.timeline import NEVER
from journeystream.sinks.rows import KPI_MINUTE, KPI_PROGRESS, kpi_row, progress_row
from journeystream.stages.effects import Effects, StateChanges

EVICT_GRACE_S = 120.0
_SEP = "\x1f"  # unit separator: never inside a channel, journey or segment name


def cell_store_key(partition: int, key: CellKey) -> bytes:
    minute, channel, journey, segment = key
    return _SEP.join((str(partition), "c", str(minute), channel, journey, segment)).encode()


def mark_store_key(partition: int, customer: str) -> bytes:
    return _SEP.join((str(partition), "m", customer)).encode()


def parse_store_key(raw: bytes) -> tuple[int, CellKey | str]:
    """(partition, cell key) or (partition, customer key) of a kpi_cells store key."""
    partition, kind, *rest = raw.decode().split(_SEP)
    if kind == "m":
        return int(partition), _SEP.join(rest)
    minute, channel, journey, segment = rest
    return int(partition), (int(minute), channel, journey, segment)


class PartitionKpis:
    def __init__(self, partition: int, horizon_ms: int, stored: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.partition = partition
        self.horizon_ms = horizon_ms
        self.accumulator = KpiAccumulator()
        self.progress = NEVER
        self._watermarks: deque[tuple[float, int]] = deque()  # (driver's monotonic s, watermark)
        self._too_late = 0
        self.accumulator.load_marks(self._restored(stored))

    def _restored(self, stored: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[str, list[Any]]]:
        """Loads the stored cells of this partition and yields its customer marks (for the
        accumulator to load in one loop: a million of them after a busy hour)."""
        marks = mark_store_key(self.partition, "")
        cells = _SEP.join((str(self.partition), "c", "")).encode()
        loads = orjson.loads
        for raw_key, value in stored:
            if raw_key.startswith(marks):
                yield raw_key[len(marks) :].decode(), loads(value)
            elif raw_key.startswith(cells):
                _, key = parse_store_key(raw_key)
                assert not isinstance(key, str)
                self.accumulator.load_cell(key, loads(value))

    def add(self, facts: list[Fact], origins: list[Origin | None]) -> int:
        """Count facts; returns how many contributions were refused as beyond the horizon."""
        self.accumulator.add_many(facts, origins)
        refused = self.accumulator.too_late - self._too_late
        self._too_late = self.accumulator.too_late
        return refused

    def collect(self, watermark: int, stamp_ms: int, now_s: float, effects: Effects) -> StateChanges:
        """Rows of the changed cells and of the shard's progress; returns the cell state
        changes to store once those rows are written. `now_s` (monotonic; 0 in a replay,
        which never evicts) times the grace before cells are forgotten."""
        accumulator, partition = self.accumulator, self.partition
        changes: StateChanges = {}
        rows, table = effects.rows, KPI_MINUTE.name
        for key, counts in accumulator.pop_dirty_live():
            rows.append((table, kpi_row(key, counts, partition, stamp_ms)))
            # the encoder writes the dataclass itself: the same object as cell_state(), in C
            changes[cell_store_key(partition, key)] = dumps_exact(counts)
        if watermark > self.progress:
            self.progress = watermark
            effects.row(KPI_PROGRESS.name, progress_row(partition, watermark, stamp_ms))
            self._watermarks.append((now_s, watermark))
        floor = self._floor(now_s)
        if floor is not None:
            for key in accumulator.evicted_keys(floor):
                changes[cell_store_key(partition, key)] = None
            accumulator.evict(floor)
        for customer, mark in accumulator.pop_dirty_marks().items():
            changes[mark_store_key(partition, customer)] = None if mark is None else dumps_exact(mark)
        return changes

    def _floor(self, now_s: float) -> int | None:
        """Where cells may be forgotten: the horizon behind the watermark of EVICT_GRACE_S
        ago. Facts can trail the watermark: after a jump (a backlog read, then the wall
        clock), a login's held events are applied once the merge payload arrives."""
        samples = self._watermarks
        while len(samples) > 1 and now_s - samples[1][0] >= EVICT_GRACE_S:
            samples.popleft()  # the next sample is old enough too
        if not samples or now_s - samples[0][0] < EVICT_GRACE_S:
            return None
        return samples[0][1] - self.horizon_ms

    def __len__(self) -> int:
        return len(self.accumulator)
