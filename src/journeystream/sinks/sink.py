"""A batching sink: rows accumulate per table and are written in batches bounded by size and
age. A failed write keeps its batch and is retried with backoff until it succeeds; while it
fails, `maybe_flush` waits (backpressure), so nothing is dropped and upstream stops consuming.

Callbacks registered with `after_flush` run once every row added before them is durable;
the worker acks Kafka offsets there, so an offset is committed only for rows in the store.

Tables with a TTL (`TableSpec.ttl`) drop, at insert and without an error, every row whose
time is already older than the retention. The sink still writes such rows (the outcome is
ClickHouse's) but counts them as they are added (`expired`, `SinkObserver.on_expired`) and
logs one warning per table and flush, so no row vanishes without a trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from journeystream.errors import SinkClosedError
from journeystream.sinks.batch import Batch

log = logging.getLogger(__name__)

AfterFlush = Callable[[], Awaitable[None]]


class Writer(Protocol):
    """Writes one batch; raises on failure. Must be idempotent for the same batch token."""

    async def write(self, batch: Batch) -> None: ...


class SinkObserver(Protocol):
    def on_flushed(self, table: str, rows: int, seconds: float) -> None: ...
    def on_error(self, table: str, error: BaseException) -> None: ...
    def on_pending(self, rows: int) -> None: ...
    def on_expired(self, table: str, rows: int) -> None: ...


class _NoObserver:
    def on_flushed(self, table: str, rows: int, seconds: float) -> None:
        pass

    def on_error(self, table: str, error: BaseException) -> None:
        pass

    def on_pending(self, rows: int) -> None:
        pass

    def on_expired(self, table: str, rows: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Ttl:
    """A table's TTL: `column` + the retention named `retention` ("events" or "facts" days);
    the column's values are in units of `unit_ms` milliseconds."""

    column: str
    retention: str
    unit_ms: int = 1


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table's columns, in insert order, and the columns that identify a row."""

    name: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    ttl: Ttl | None = None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Expiry:
    """How to tell a row of one table that ClickHouse will drop at insert."""

    index: int
    unit_ms: int
    retention_ms: int


@dataclass(slots=True)
class _Generation:
    """Rows and callbacks added since the last seal."""

    batches: dict[str, Batch] = field(default_factory=dict)
    callbacks: list[AfterFlush] = field(default_factory=list)
    rows: int = 0
    first_added: float | None = None


class BatchingSink:
    def __init__(
        self,
        writer: Writer,
        tables: Sequence[TableSpec],
        *,
        max_rows: int,
        max_age_s: float,
        max_backoff_s: float = 30.0,
        observer: SinkObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        retention_days: Mapping[str, int] | None = None,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self._writer = writer
        self._tables = {spec.name: spec for spec in tables}
        self._max_rows = max_rows
        self._max_age_s = max_age_s
        self._max_backoff_s = max_backoff_s
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._current = _Generation()
        self._flush_lock = asyncio.Lock()
        self._closed = False
        self.failing = False
        self._expiry: dict[str, _Expiry] = {}
        for spec in tables:
            if spec.ttl is not None and retention_days is not None:
                days = retention_days[spec.ttl.retention]
                index = spec.columns.index(spec.ttl.column)
                self._expiry[spec.name] = _Expiry(index, spec.ttl.unit_ms, days * 86_400_000)
        self._wall_ms = wall_ms
        self.expired: dict[str, int] = {}
        """Rows added that were already past their table's retention, per table (cumulative)."""
        self._unwarned: dict[str, int] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_rows(self) -> int:
        return self._current.rows

    def add(self, table: str, row: Sequence[Any]) -> None:
        """Buffer one row (no I/O). Call `maybe_flush` after a group of adds."""
        if self._closed:
            raise SinkClosedError(f"sink closed; cannot add to {table}")
        generation = self._current
        batch = generation.batches.get(table)
        if batch is None:
            spec = self._tables[table]
            batch = generation.batches[table] = Batch(spec.name, spec.columns, spec.key_columns)
        batch.append(row)
        expiry = self._expiry.get(table)
        if expiry is not None:
            self._count_expired(table, row, expiry)
        generation.rows += 1
        if generation.first_added is None:
            generation.first_added = self._clock()

    def add_many(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Buffer (table, row) pairs, in order (no I/O)."""
        if not rows:
            return
        if self._closed:
            raise SinkClosedError(f"sink closed; cannot add {len(rows)} rows")
        generation = self._current
        batches = generation.batches
        for table, row in rows:
            batch = batches.get(table)
            if batch is None:
                spec = self._tables[table]
                batch = batches[table] = Batch(spec.name, spec.columns, spec.key_columns)
            batch.append(row)
        generation.rows += len(rows)
        if generation.first_added is None:
            generation.first_added = self._clock()

    def after_flush(self, callback: AfterFlush) -> None:
        """Run `callback` once every row added so far has been written."""
        self._current.callbacks.append(callback)

    def due(self) -> bool:
        generation = self._current
        if generation.rows >= self._max_rows:
            return True
        if generation.first_added is None:
            return bool(generation.callbacks)
        return self._clock() - generation.first_added >= self._max_age_s

    async def maybe_flush(self) -> None:
        """Flush when the buffer is full or old enough; wait if a flush is already running
        and the buffer is full (backpressure)."""
        if self.due():
            await self.flush()

    async def flush(self, on_table_written: Callable[[str], None] | None = None) -> None:
        """Write everything buffered so far, retrying until it is durable, then run callbacks.
        `on_table_written(name)` is called for every table, in order, once its rows (if any)
        are durable: what depends on one table only need not wait for the others."""
        async with self._flush_lock:
            generation, self._current = self._current, _Generation()
            self._observer.on_pending(0)
            self._warn_expired()
            # In the order the tables were given: a later table may record that rows of an
            # earlier one are written (KPI progress, alert state), never the other way round.
            for table in self._tables:
                batch = generation.batches.get(table)
                if batch is not None and len(batch):
                    await self._write_until_done(batch)
                if on_table_written is not None:
                    on_table_written(table)
            for callback in generation.callbacks:
                await callback()

    async def close(self) -> None:
        """Flush what is left and refuse further rows."""
        await self.flush()
        self._closed = True

    def _count_expired(self, table: str, row: Sequence[Any], expiry: _Expiry) -> None:
        value = row[expiry.index]
        if value is None:
            return
        # ClickHouse compares whole seconds: toDateTime(time) + INTERVAL N DAY <= now().
        expires_s = (int(value) * expiry.unit_ms) // 1000 + expiry.retention_ms // 1000
        if expires_s <= self._wall_ms() // 1000:
            self.expired[table] = self.expired.get(table, 0) + 1
            self._unwarned[table] = self._unwarned.get(table, 0) + 1
            self._observer.on_expired(table, 1)

    def _warn_expired(self) -> None:
        for table, rows in self._unwarned.items():
            days = self._expiry[table].retention_ms // 86_400_000
            log.warning(
                "%d rows for %s are older than its retention (%d days): ClickHouse drops them at "
                "insert (TTL); raise the retention first to keep a backfill of older data",
                rows,
                table,
                days,
            )
        self._unwarned = {}

    async def _write_until_done(self, batch: Batch) -> None:
        backoff = 0.1
        while True:
            started = self._clock()
            try:
                await self._writer.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any store failure: keep the batch, wait, retry
                self.failing = True
                self._observer.on_error(batch.table, exc)
                log.warning(
                    "writing %d rows to %s failed (%s); retrying in %.1fs",
                    len(batch),
                    batch.table,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            self.failing = False
            self._observer.on_flushed(batch.table, len(batch), self._clock() - started)
            return
