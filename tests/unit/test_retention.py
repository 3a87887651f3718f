"""Retention that cannot lose data silently: TTLs ClickHouse's DateTime cannot express are
refused at start, and rows older than their table's retention (which ClickHouse drops at
insert without an error) are counted, in the metric, the log and the replay summary."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from journeystream.cli import main
from journeystream.config import Settings, max_ttl_days
from journeystream.errors import ConfigError
from journeystream.metrics import Metrics
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import ALL_TABLES, retention_days
from journeystream.sinks.sink import BatchingSink, TableSpec, Ttl
from journeystream.sinks.store import StoreTarget, schemas_dir
from tests.unit.test_sink import ScriptedWriter

DAY_MS = 86_400_000


def test_max_ttl_days_keeps_a_year_ahead_inside_datetime() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
    limit = max_ttl_days(now)
    horizon = datetime.fromtimestamp(now, UTC) + timedelta(days=limit + 366)
    assert horizon <= datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
    assert horizon + timedelta(days=1) > datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)


@pytest.mark.parametrize("setting", ["JOURNEYSTREAM_EVENTS_TTL_DAYS", "JOURNEYSTREAM_FACTS_TTL_DAYS"])
def test_a_ttl_past_datetime_range_is_refused_naming_the_setting(setting: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({setting: "36500"})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{setting}=36500: ")
    assert "2106" in message and "silently drop" in message
    limit = max_ttl_days(time.time())
    assert f"at most {limit} days" in message


@pytest.mark.parametrize("setting", ["JOURNEYSTREAM_EVENTS_TTL_DAYS", "JOURNEYSTREAM_FACTS_TTL_DAYS"])
def test_the_longest_allowed_ttl_is_accepted(setting: str) -> None:
    limit = max_ttl_days(time.time()) - 1  # a day of slack: the limit moves at midnight UTC
    Settings.from_env({setting: str(limit)})
    with pytest.raises(ConfigError, match=setting):
        Settings.from_env({setting: str(limit + 2)})


@pytest.mark.parametrize("setting", ["JOURNEYSTREAM_EVENTS_TTL_DAYS", "JOURNEYSTREAM_FACTS_TTL_DAYS"])
def test_a_ttl_must_be_positive(setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        Settings.from_env({setting: "0"})


def test_every_ttl_of_the_ddl_is_known_to_the_sink() -> None:
    """The table specs name the same TTL column and retention as the DDL."""
    found: dict[str, tuple[str, str]] = {}
    for file in schemas_dir().glob("*.sql"):
        text = file.read_text()
        table = re.search(r"CREATE TABLE IF NOT EXISTS \$\{db\}\.(\w+)", text)
        ttl = re.search(r"TTL (?:toDateTime\((\w+)\)|(\w+)) \+ INTERVAL \$\{(\w+)_ttl_days\} DAY", text)
        if table and ttl:
            found[table.group(1)] = (ttl.group(1) or ttl.group(2), ttl.group(3))
    specs = {spec.name: spec.ttl for spec in ALL_TABLES if spec.ttl is not None}
    assert {name: (ttl.column, ttl.retention) for name, ttl in specs.items()} == found


TABLE = TableSpec("t", ("id", "at"), ("id",), ttl=Ttl("at", "events"))
SECONDS_TABLE = TableSpec("s", ("id", "minute"), ("id",), ttl=Ttl("minute", "facts", unit_ms=1000))


async def test_rows_older_than_the_retention_are_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    now = 1_800_000_000_000
    metrics = Metrics(CollectorRegistry())
    sink = BatchingSink(
        ScriptedWriter(),
        [TABLE, SECONDS_TABLE],
        max_rows=100,
        max_age_s=1.0,
        observer=metrics,
        retention_days=retention_days(10, 20),
        wall_ms=lambda: now,
    )
    sink.add("t", (1, now - 10 * DAY_MS + 1000))  # expires in a second: kept
    sink.add("t", (2, now - 10 * DAY_MS))  # expires now: dropped
    sink.add("t", (3, now - 400 * DAY_MS))
    sink.add("s", (4, (now - 21 * DAY_MS) // 1000))
    sink.add("s", (5, (now - 19 * DAY_MS) // 1000))
    assert sink.expired == {"t": 2, "s": 1}
    with caplog.at_level(logging.WARNING):
        await sink.flush()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("2 rows for t are older than its retention (10 days)") for w in warnings)
    assert any(w.startswith("1 rows for s are older than its retention (20 days)") for w in warnings)
    sample = metrics.registry.get_sample_value
    assert sample("journeystream_rows_expired_at_insert_total", {"table": "t"}) == 2
    assert sample("journeystream_rows_expired_at_insert_total", {"table": "s"}) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await sink.flush()  # warned once per flush that had such rows
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_sink_without_retention_counts_nothing() -> None:
    sink = BatchingSink(ScriptedWriter(), [TABLE], max_rows=100, max_age_s=1.0)
    sink.add("t", (1, 0))
    assert sink.expired == {}


def _line(event_id: str, at: datetime, customer: str) -> bytes:
    event = {
        "event_id": event_id,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "customer_id": customer,
        "channel": "phone",
        "type": "contact_start",
        "journey": "billing",
    }
    return orjson.dumps(event) + b"\n"


def test_replay_summary_counts_rows_dropped_by_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=60)
    lines = [_line(f"old-{i}", old + timedelta(minutes=i), f"C{i}") for i in range(7)]
    lines += [_line(f"new-{i}", now - timedelta(hours=1, minutes=-i), f"C{i}") for i in range(3)]
    replayed = tmp_path / "events.jsonl"
    replayed.write_bytes(b"".join(lines))
    monkeypatch.setenv("JOURNEYSTREAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JOURNEYSTREAM_EVENTS_TTL_DAYS", "30")
    monkeypatch.setenv("JOURNEYSTREAM_FACTS_TTL_DAYS", "365")
    assert main(["replay", str(replayed)]) == 0
    out = capsys.readouterr().out
    assert "replayed 10 lines" in out
    assert "warning: dropped at insert by the retention (TTL): 7 interaction_events rows" in out

    settings = Settings.from_env()
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        stored = writer.call(
            lambda c: c.query(f"SELECT event_id FROM {writer.database}.interaction_events").result_rows
        )
    finally:
        writer.close()
    assert sorted(row[0] for row in stored) == ["new-0", "new-1", "new-2"]  # as counted
