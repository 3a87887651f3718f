"""`journeystream replay FILE.jsonl`: a backfill through the same stage processors as the
live worker (`stages/local.py`), into the same sink.

Lines are read in file order, as a single partition would deliver them. When the file ends,
the watermark moves to the last event time seen, so every event of the file is applied.
Nothing here reads the wall clock to decide anything: journeys still open at the end stay
open, unless `close_until` moves the watermark on (e.g. to the time of the backfill).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from journeystream.config import Settings, pseudonyms, rules_config
from journeystream.process import tune_gc
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import ALL_TABLES, IRRITANTS, JOURNEYS, now_ms, retention_days
from journeystream.sinks.sink import BatchingSink
from journeystream.sinks.store import StoreTarget, migrate
from journeystream.stages.effects import Effects, InputRecord, NoObserver
from journeystream.stages.local import LocalStages

log = logging.getLogger(__name__)

LINES_PER_BATCH = 2000
# A journey or customer touched many times is written once per checkpoint. Every 100 000
# lines rather than 20 000: `bench replay` x1.24 (docs/performance.md), for the memory of
# the facts that wait for their checkpoint (+0.24 GB on that bench's file).
BATCHES_PER_CHECKPOINT = 50


@dataclass
class ReplaySummary:
    lines: int = 0
    valid: int = 0
    rejected: int = 0
    journeys_written: int = 0
    irritants_written: int = 0
    seconds: float = 0.0
    expired: dict[str, int] = field(default_factory=dict)
    """Rows older than their table's retention, per table: ClickHouse dropped them at insert."""

    def expired_line(self) -> str | None:
        """The summary's warning about rows dropped at insert, if any were."""
        if not self.expired:
            return None
        counts = ", ".join(f"{rows} {table}" for table, rows in sorted(self.expired.items()))
        return (
            f"dropped at insert by the retention (TTL): {counts} rows older than "
            "JOURNEYSTREAM_EVENTS_TTL_DAYS / JOURNEYSTREAM_FACTS_TTL_DAYS"
        )


class _Counts(NoObserver):
    """The replay's own observer: how many lines were valid or rejected."""

    def __init__(self, summary: ReplaySummary) -> None:
        self.summary = summary

    def on_consumed(self, count: int) -> None:
        self.summary.lines += count

    def on_valid(self, count: int) -> None:
        self.summary.valid += count

    def on_rejected(self, code: str) -> None:
        self.summary.rejected += 1


async def replay_file(path: Path, settings: Settings, close_until: int | None = None) -> ReplaySummary:
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        sink = BatchingSink(
            writer,
            ALL_TABLES,
            max_rows=settings.sink_batch_rows,
            max_age_s=3600.0,
            retention_days=retention_days(settings.events_ttl_days, settings.facts_ttl_days),
        )
        summary = await _replay(path, settings, sink, close_until)
        await sink.close()
        summary.expired = dict(sink.expired)
        return summary
    finally:
        writer.close()


async def _replay(
    path: Path, settings: Settings, sink: BatchingSink, close_until: int | None
) -> ReplaySummary:
    tune_gc()
    started = time.monotonic()
    summary = ReplaySummary()
    stages = LocalStages(
        f"file:{path.name}",
        rules_config(settings),
        settings.kpi_horizon_ms,
        _Counts(summary),
        pseudonyms(settings),
    )
    effects = Effects()
    batches = 0
    with path.open("rb") as lines:
        while batch := _read_batch(lines, summary.lines):
            stages.feed(batch, now_ms(), effects)
            batches += 1
            if batches % BATCHES_PER_CHECKPOINT == 0:
                stages.checkpoint(now_ms(), effects)
                _store(effects, sink, summary)
                await sink.maybe_flush()
    stages.finish(effects, close_until)
    stages.checkpoint(now_ms(), effects)
    _store(effects, sink, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _read_batch(lines: BinaryIO, first: int) -> list[InputRecord]:
    batch = []
    for number in range(first, first + LINES_PER_BATCH):
        line = lines.readline()
        if not line:
            break
        batch.append(InputRecord(number, now_ms(), None, line.rstrip(b"\r\n")))
    return batch


def _store(effects: Effects, sink: BatchingSink, summary: ReplaySummary) -> None:
    """Rows go to the sink; a replay produces no records (the topics belong to the live path)."""
    taken = effects.take()
    for table, row in taken.rows:
        sink.add(table, row)
        if table == JOURNEYS.name:
            summary.journeys_written += 1
        elif table == IRRITANTS.name:
            summary.irritants_written += 1
