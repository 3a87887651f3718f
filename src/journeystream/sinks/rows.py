"""Mapping of facts to table rows (column order = TableSpec.columns)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import orjson

from journeystream.core.alerts import AlertState, Notification, Rule, alert_id
from journeystream.core.events import Event
from journeystream.core.facts import Irritant, JourneyRecord
from journeystream.core.kpis import COUNTER_FIELDS, FACT_FIELDS, CellKey, KpiCounts
from journeystream.core.state import dumps_exact
from journeystream.sinks.sink import TableSpec, Ttl

EXCERPT_BYTES: Final = 2048

INTERACTION_EVENTS: Final = TableSpec(
    "interaction_events",
    (
        "event_id",
        "occurred_at",
        "customer_id",
        "anonymous_id",
        "channel",
        "type",
        "journey",
        "segment",
        "session_id",
        "agent_id",
        "attributes",
        "kafka_partition",
        "kafka_offset",
        "ingested_at",
    ),
    key_columns=("event_id",),
    ttl=Ttl("occurred_at", "events"),
)
REJECTED_EVENTS: Final = TableSpec(
    "rejected_events",
    (
        "topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_key",
        "kafka_timestamp",
        "reason_code",
        "reason",
        "size_bytes",
        "excerpt",
        "rejected_at",
    ),
    key_columns=("topic", "kafka_partition", "kafka_offset"),
    ttl=Ttl("kafka_timestamp", "events"),
)
JOURNEYS: Final = TableSpec(
    "journeys",
    (
        "journey_id",
        "customer_key",
        "journey",
        "segment",
        "status",
        "started_at",
        "last_event_at",
        "ended_at",
        "event_count",
        "channels",
        "channel_switches",
        "inbound_contacts",
        "irritant_count",
        "effort_score",
        "first_channel",
        "last_channel",
        "version",
        "updated_at",
    ),
    key_columns=("journey_id", "version"),
    ttl=Ttl("started_at", "facts"),
)
IRRITANTS: Final = TableSpec(
    "irritants",
    (
        "irritant_id",
        "kind",
        "customer_key",
        "journey_id",
        "journey",
        "segment",
        "channel",
        "occurred_at",
        "event_ids",
        "details",
        "detected_at",
    ),
    key_columns=("irritant_id",),
    ttl=Ttl("occurred_at", "facts"),
)
_CELL_COLUMNS: Final = ("minute", "channel", "journey", "segment", "shard")
KPI_MINUTE: Final = TableSpec(
    "kpi_minute",
    (*_CELL_COLUMNS, *COUNTER_FIELDS, "wait_buckets", "version", "updated_at"),
    key_columns=("minute", "channel", "journey", "segment", "shard", "version"),
    ttl=Ttl("minute", "facts", unit_ms=1000),
)
KPI_PROGRESS: Final = TableSpec("kpi_progress", ("shard", "watermark", "updated_at"), ("shard", "watermark"))
ALERTS: Final = TableSpec(
    "alerts",
    (
        "alert_id",
        "rule",
        "status",
        "severity",
        "metric",
        "channel",
        "journey",
        "segment",
        "value",
        "threshold",
        "summary",
        "starts_at",
        "ends_at",
        "notified_at",
    ),
    key_columns=("alert_id", "status"),
    ttl=Ttl("starts_at", "facts"),
)
ALERT_STATE: Final = TableSpec(
    "alert_state",
    ("rule", "status", "since", "value", "evaluated_until", "updated_at"),
    key_columns=("rule", "evaluated_until"),
)
# The sink writes tables in this order within a flush: KPI rows before the progress that
# declares them complete, an alert before the evaluator state that remembers sending it.
ALL_TABLES: Final = (
    INTERACTION_EVENTS,
    REJECTED_EVENTS,
    JOURNEYS,
    IRRITANTS,
    KPI_MINUTE,
    KPI_PROGRESS,
    ALERTS,
    ALERT_STATE,
)
# The tables an input record's own row goes to (valid or rejected): first in ALL_TABLES, so
# a record's raw row is queryable once these are written, before the facts' tables.
RAW_TABLES: Final = (INTERACTION_EVENTS, REJECTED_EVENTS)
assert ALL_TABLES[: len(RAW_TABLES)] == RAW_TABLES


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


def interaction_row(event: Event, where: Coordinates, now_ms: int) -> tuple[Any, ...]:
    return interaction_values(event, where.partition, where.offset, now_ms)


def interaction_values(event: Event, partition: int, offset: int, now_ms: int) -> tuple[Any, ...]:
    """`interaction_row` without a Coordinates object (stage A's loop)."""
    return (
        event.event_id,
        event.occurred_at,
        event.customer_id,
        event.anonymous_id,
        event.channel,
        event.type,
        event.journey,
        event.segment,
        event.session_id,
        event.agent_id,
        orjson.dumps(event.attributes).decode(),
        partition,
        offset,
        now_ms,
    )


def rejected_row(
    raw: bytes, code: str, reason: str, where: Coordinates, now_ms: int, *, withheld: bool = False
) -> tuple[Any, ...]:
    """`withheld`: the excerpt stays empty (pseudonymised mode: raw ids must not be stored)."""
    return (
        where.topic,
        where.partition,
        where.offset,
        safe_text(where.key) if where.key is not None else None,
        where.timestamp_ms,
        code,
        reason,
        len(raw),
        "" if withheld else safe_text(raw[:EXCERPT_BYTES]),
        now_ms,
    )


def retention_days(events_ttl_days: int, facts_ttl_days: int) -> dict[str, int]:
    """The retentions `Ttl.retention` names, for BatchingSink(retention_days=...)."""
    return {"events": events_ttl_days, "facts": facts_ttl_days}


def now_ms() -> int:
    """Wall-clock stamp for ingested_at / updated_at columns (never used for decisions)."""
    return time.time_ns() // 1_000_000


def journey_row(record: JourneyRecord, now_ms: int) -> tuple[Any, ...]:
    return (
        record.journey_id,
        record.customer_key,
        record.journey,
        record.segment,
        record.status,
        record.started_at,
        record.last_event_at,
        record.ended_at,
        record.event_count,
        list(record.channels),
        record.channel_switches,
        record.inbound_contacts,
        record.irritant_count,
        record.effort_score,
        record.first_channel,
        record.last_channel,
        record.version,
        now_ms,
    )


def irritant_row(irritant: Irritant, now_ms: int) -> tuple[Any, ...]:
    return (
        irritant.irritant_id,
        irritant.kind,
        irritant.customer_key,
        irritant.journey_id,
        irritant.journey,
        irritant.segment,
        irritant.channel,
        irritant.occurred_at,
        list(irritant.event_ids),
        orjson.dumps(irritant.details).decode(),
        now_ms,
    )


_COUNTERS = attrgetter(*COUNTER_FIELDS)
_FACT_COUNTERS = attrgetter(*FACT_FIELDS)


def kpi_row(key: CellKey, counts: KpiCounts, shard: int, now_ms: int) -> tuple[Any, ...]:
    """The cumulative row of one KPI cell of one shard, versioned by the facts counted
    (`cell_version`: the fact counters are integers, so their plain sum)."""
    minute, channel, journey, segment = key
    return (
        minute // 1000,  # DateTime: epoch seconds
        channel,
        journey,
        segment,
        shard,
        *_COUNTERS(counts),
        list(counts.wait_buckets),
        sum(_FACT_COUNTERS(counts)),
        now_ms,
    )


def progress_row(shard: int, watermark_ms: int, now_ms: int) -> tuple[Any, ...]:
    return (shard, watermark_ms, now_ms)


def alert_row(rule: Rule, notification: Notification, now_ms: int) -> tuple[Any, ...]:
    labels = notification.labels
    return (
        alert_id(rule.name, notification.starts_at),
        rule.name,
        notification.status,
        notification.severity,
        rule.metric,
        labels["channel"],
        labels["journey"],
        labels["segment"],
        notification.value,
        notification.threshold,
        notification.summary,
        notification.starts_at,
        notification.ends_at,
        now_ms,
    )


def alert_state_row(rule: str, state: AlertState, evaluated_until: int, now_ms: int) -> tuple[Any, ...]:
    return (rule, state.status, state.since_ms, state.value, evaluated_until, now_ms)


def alert_json(rule: Rule, notification: Notification) -> bytes:
    """The value on the alerts topic (key: alert_id)."""
    return orjson.dumps(
        {
            "alert_id": alert_id(rule.name, notification.starts_at),
            "metric": rule.metric,
            "status": notification.status,
            "rule": notification.rule,
            "severity": notification.severity,
            "value": notification.value,
            "threshold": notification.threshold,
            "labels": notification.labels,
            "summary": notification.summary,
            "starts_at": notification.starts_at,
            "ends_at": notification.ends_at,
        }
    )


def journey_json(record: JourneyRecord) -> bytes:
    """The value on the journeys topic (key: journey_id). Exact-size (`dumps_exact`): the value
    waits for its checkpoint, and an encoder's buffer outgrows its length (orjson's: 4-16 KiB;
    tens of thousands held at once added ~1.1 GB to the peak at 1 000 000 open journeys)."""
    return dumps_exact(record)


def irritant_json(irritant: Irritant) -> bytes:
    """The value on the irritants topic (key: irritant_id); exact-size, as `journey_json`."""
    return dumps_exact(irritant)


def safe_text(raw: bytes) -> str:
    """Bytes as text for a String column: invalid UTF-8 replaced, never raises."""
    return raw.decode("utf-8", errors="replace")
