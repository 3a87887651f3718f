"""`journeystream replay FILE.jsonl`: a backfill through the same core and the same sink.

Lines are read in file order, as a single partition would deliver them. Nothing here reads
the wall clock to decide anything: journeys still open at the end of the file stay open,
unless `close_until` moves the watermark explicitly (e.g. to the time of the backfill).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from journeystream.config import Settings, rules_config
from journeystream.core.decode import Rejection, decode
from journeystream.core.facts import Fact
from journeystream.core.kpis import KpiAccumulator
from journeystream.core.pipeline import LocalPipeline
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import (
    ALL_TABLES,
    INTERACTION_EVENTS,
    JOURNEYS,
    KPI_MINUTE,
    REJECTED_EVENTS,
    Coordinates,
    fact_row,
    interaction_row,
    kpi_row,
    now_ms,
    rejected_row,
)
from journeystream.sinks.sink import BatchingSink
from journeystream.sinks.store import StoreTarget, migrate

log = logging.getLogger(__name__)

REPLAY_SHARD = 0  # a backfill counts every cell in one place
DRAIN_EVERY = 5000  # events between drains: a journey touched many times is written once per drain


@dataclass
class ReplaySummary:
    lines: int = 0
    valid: int = 0
    rejected: int = 0
    journeys_written: int = 0
    irritants_written: int = 0
    seconds: float = 0.0


async def replay_file(path: Path, settings: Settings, close_until: int | None = None) -> ReplaySummary:
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        sink = BatchingSink(writer, ALL_TABLES, max_rows=settings.sink_batch_rows, max_age_s=3600.0)
        summary = await _replay(path, settings, sink, close_until)
        await sink.close()
        return summary
    finally:
        writer.close()


async def _replay(
    path: Path, settings: Settings, sink: BatchingSink, close_until: int | None
) -> ReplaySummary:
    started = time.monotonic()
    pipeline = LocalPipeline(rules_config(settings))
    kpis = KpiAccumulator()
    summary = ReplaySummary()
    source = f"file:{path.name}"
    with path.open("rb") as lines:
        for number, line in enumerate(lines):
            raw = line.rstrip(b"\r\n")
            summary.lines += 1
            where = Coordinates(source, 0, number, now_ms(), None)
            result = decode(raw)
            if isinstance(result, Rejection):
                summary.rejected += 1
                sink.add(
                    REJECTED_EVENTS.name, rejected_row(raw, result.code, result.message, where, now_ms())
                )
                continue
            summary.valid += 1
            sink.add(INTERACTION_EVENTS.name, interaction_row(result, where, now_ms()))
            pipeline.feed(result)
            if summary.valid % DRAIN_EVERY == 0:
                _write_facts(pipeline.drain(), kpis, sink, summary)
                await sink.maybe_flush()
    if close_until is not None:
        pipeline.advance(close_until)
    _write_facts(pipeline.drain(), kpis, sink, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _write_facts(facts: list[Fact], kpis: KpiAccumulator, sink: BatchingSink, summary: ReplaySummary) -> None:
    stamp = now_ms()
    kpis.add_many(facts)
    for key, counts in kpis.pop_dirty():
        sink.add(KPI_MINUTE.name, kpi_row(key, counts, REPLAY_SHARD, stamp))
    for fact in facts:
        row = fact_row(fact, stamp)
        if row is None:
            continue
        sink.add(*row)
        if row[0] == JOURNEYS.name:
            summary.journeys_written += 1
        else:
            summary.irritants_written += 1
