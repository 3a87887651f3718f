"""Mapping of facts to table rows (column order = TableSpec.columns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from journeystream.core.events import Event
from journeystream.sinks.sink import TableSpec

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
)
ALL_TABLES: Final = (INTERACTION_EVENTS, REJECTED_EVENTS)


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


def interaction_row(event: Event, where: Coordinates, now_ms: int) -> tuple[Any, ...]:
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
        where.partition,
        where.offset,
        now_ms,
    )


def rejected_row(raw: bytes, code: str, reason: str, where: Coordinates, now_ms: int) -> tuple[Any, ...]:
    return (
        where.topic,
        where.partition,
        where.offset,
        safe_text(where.key) if where.key is not None else None,
        where.timestamp_ms,
        code,
        reason,
        len(raw),
        safe_text(raw[:EXCERPT_BYTES]),
        now_ms,
    )


def safe_text(raw: bytes) -> str:
    """Bytes as text for a String column: invalid UTF-8 replaced, never raises."""
    return raw.decode("utf-8", errors="replace")
