"""Fill a fresh store with simulated, recent data the way the worker would, for the dashboard
tests: interaction_events, rejected_events, journeys, irritants, kpi_minute and alerts.

Two simulated streams run through the pure journey engine (LocalPipeline): one ending now
(the live view) and a smaller one exactly a week earlier (the "same time last week"
comparison). KPI rows are the KpiAccumulator's cells, written as one shard. Times stay
recent because rows older than the TTL are dropped at insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from journeystream.config import Settings, rules_config
from journeystream.core.decode import Rejection, decode
from journeystream.core.facts import Irritant, JourneyRecord
from journeystream.core.kpis import COUNTER_FIELDS, KpiAccumulator
from journeystream.core.pipeline import LocalPipeline
from journeystream.simulate import SimConfig, generate
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import (
    ALERTS,
    INTERACTION_EVENTS,
    IRRITANTS,
    JOURNEYS,
    KPI_MINUTE,
    REJECTED_EVENTS,
    Coordinates,
    interaction_row,
    irritant_row,
    journey_row,
    rejected_row,
)

HOUR_MS: Final = 3_600_000
WEEK_MS: Final = 7 * 24 * HOUR_MS
TOPIC: Final = "journeystream.interactions"

KPI_COLUMNS: Final = KPI_MINUTE.columns
ALERT_COLUMNS: Final = ALERTS.columns


@dataclass
class Filled:
    """What went into the store (counts per table, a customer with a rich history)."""

    now_ms: int
    rows: dict[str, int] = field(default_factory=dict)
    busy_customer: str = ""
    kpis: KpiAccumulator = field(default_factory=KpiAccumulator)


@dataclass
class _Rows:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[Any, ...]] = field(default_factory=list)
    journeys: list[tuple[Any, ...]] = field(default_factory=list)
    irritants: list[tuple[Any, ...]] = field(default_factory=list)


def fill(writer: ClickHouseWriter, settings: Settings, now_ms: int, events: int = 20_000) -> Filled:
    """Simulate, run the journey engine, and insert every table. Returns what was written."""
    filled = Filled(now_ms=now_ms)
    rows = _Rows()
    customers: dict[str, int] = {}
    # This week: about 2 messages per second from 2.5 h ago up to now (the rest of the
    # `events` budget would lie in the future and is dropped).
    _run(
        settings,
        SimConfig(
            seed=11,
            events=events,
            start_ms=now_ms - 5 * HOUR_MS // 2,
            events_per_second=2.0,
            invalid_share=0.01,
            duplicate_share=0.005,
        ),
        until_ms=now_ms,
        rows=rows,
        kpis=filled.kpis,
        customers=customers,
    )
    # Same time last week: a smaller stream, so the comparison has something to compare.
    last_week = now_ms - WEEK_MS
    _run(
        settings,
        SimConfig(seed=12, events=events // 2, start_ms=last_week - 3 * HOUR_MS, events_per_second=1.0),
        until_ms=last_week,
        rows=rows,
        kpis=filled.kpis,
        customers=None,
    )
    filled.busy_customer = max(customers, key=lambda c: (customers[c], c))

    database = writer.database
    kpi_rows = [_kpi_row(key, counts, now_ms) for key, counts in filled.kpis.cells()]
    alert_rows = _alert_rows(now_ms)
    for table, columns, data in (
        (INTERACTION_EVENTS.name, INTERACTION_EVENTS.columns, rows.events),
        (REJECTED_EVENTS.name, REJECTED_EVENTS.columns, rows.rejected),
        (JOURNEYS.name, JOURNEYS.columns, rows.journeys),
        (IRRITANTS.name, IRRITANTS.columns, rows.irritants),
        ("kpi_minute", KPI_COLUMNS, kpi_rows),
        ("alerts", ALERT_COLUMNS, alert_rows),
    ):
        _insert(writer, f"{database}.{table}", columns, data)
        filled.rows[table] = len(data)
    return filled


def _run(
    settings: Settings,
    config: SimConfig,
    until_ms: int,
    rows: _Rows,
    kpis: KpiAccumulator,
    customers: dict[str, int] | None,
) -> None:
    pipeline = LocalPipeline(rules_config(settings))
    offset = 0
    for message in generate(config):
        # A finite simulation ends by jumping ahead in event time (late repeat contacts):
        # keep only what has already "happened".
        if message.occurred_at > until_ms:
            continue
        offset += 1
        where = Coordinates(TOPIC, offset % 4, offset, min(message.occurred_at, until_ms), message.key)
        result = decode(message.value)
        if isinstance(result, Rejection):
            rows.rejected.append(rejected_row(message.value, result.code, result.message, where, until_ms))
            continue
        rows.events.append(interaction_row(result, where, min(result.occurred_at + 800, until_ms)))
        if customers is not None and result.customer_id is not None:
            customers[result.customer_id] = customers.get(result.customer_id, 0) + 1
        pipeline.feed(result)
        _collect(pipeline, rows, kpis, until_ms)
    pipeline.advance(until_ms)  # close what the deadline already closed (abandonment)
    _collect(pipeline, rows, kpis, until_ms)


def _collect(pipeline: LocalPipeline, rows: _Rows, kpis: KpiAccumulator, now_ms: int) -> None:
    for fact in pipeline.drain():
        if isinstance(fact, JourneyRecord):
            rows.journeys.append(journey_row(fact, now_ms))
            continue
        if isinstance(fact, Irritant):
            rows.irritants.append(irritant_row(fact, now_ms))
        kpis.add(fact)


def _kpi_row(key: tuple[int, str, str, str], counts: Any, now_ms: int) -> tuple[Any, ...]:
    minute_ms, channel, journey, segment = key
    values = [getattr(counts, name) for name in COUNTER_FIELDS]
    return (minute_ms // 1000, channel, journey, segment, 0, *values, list(counts.wait_buckets), 1, now_ms)


def _alert_rows(now_ms: int) -> list[tuple[Any, ...]]:
    """Three episodes: two still firing (phone abandonment, failure demand), one resolved."""
    minute = 60_000

    def row(
        rule: str,
        status: str,
        severity: str,
        metric: str,
        channel: str,
        starts: int,
        ends: int | None,
        notified: int,
        value: float,
        threshold: float,
    ) -> tuple[Any, ...]:
        return (
            f"{rule}:{starts}",
            rule,
            status,
            severity,
            metric,
            channel,
            "all",
            "all",
            value,
            threshold,
            f"{rule} {status}: {value:g} vs {threshold:g}",
            starts,
            ends,
            notified,
        )

    phone = now_ms - 25 * minute
    demand = now_ms - 70 * minute
    nps = now_ms - 5 * HOUR_MS
    return [
        row(
            "PhoneContactAbandonmentHigh",
            "firing",
            "critical",
            "contact_abandonment_rate",
            "phone",
            phone,
            None,
            phone + 5 * minute,
            0.14,
            0.10,
        ),
        row(
            "FailureDemandHigh",
            "firing",
            "warning",
            "failure_demand_rate",
            "all",
            demand,
            None,
            demand + 10 * minute,
            0.31,
            0.25,
        ),
        row("NpsNegative", "firing", "warning", "nps", "all", nps, None, nps + 15 * minute, -12.0, 0.0),
        row("NpsNegative", "resolved", "warning", "nps", "all", nps, nps + HOUR_MS, nps + HOUR_MS, 14.0, 0.0),
    ]


def _insert(
    writer: ClickHouseWriter, table: str, columns: Sequence[str], data: list[tuple[Any, ...]]
) -> None:
    if not data:
        return
    chunk = 20_000
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        writer.call(lambda client, part=part: client.insert(table, part, column_names=list(columns)))
