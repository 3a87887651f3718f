"""Reads the worker makes from the store: KPI progress, rule windows, evaluator state.
Each function takes a clickhouse-connect client (chDB or server) and runs on the writer's
thread (`ClickHouseWriter.run`)."""

from __future__ import annotations

from typing import Any

from journeystream.core.alerts import AlertState, Rule
from journeystream.core.kpis import COUNTER_FIELDS, KpiCounts

_SUMS = ", ".join(f"sum({name}) AS {name}" for name in COUNTER_FIELDS)


def kpi_watermark(client: Any, database: str, shards: int) -> int | None:
    """The minimum progress over shards 0..shards-1 (epoch ms), None until every shard has
    written one: every KPI minute before it is complete in kpi_minute."""
    rows = client.query(
        f"SELECT shard, toUnixTimestamp64Milli(max(watermark)) FROM {database}.kpi_progress GROUP BY shard"
    ).result_rows
    progress = {int(shard): int(watermark) for shard, watermark in rows}
    if any(shard not in progress for shard in range(shards)):
        return None
    return min(progress[shard] for shard in range(shards))


def rule_minutes(client: Any, database: str, rule: Rule, start_ms: int, end_ms: int) -> dict[int, KpiCounts]:
    """Per-minute KPI counts in [start_ms, end_ms) with the rule's filters, summed over
    cells and shards (latest version of each row)."""
    conditions = [
        f"minute >= toDateTime({start_ms // 1000}, 'UTC')",
        f"minute < toDateTime({end_ms // 1000}, 'UTC')",
    ]
    for column in ("channel", "journey", "segment"):
        value = getattr(rule, column)
        if value is not None:
            conditions.append(f"{column} = {_quote(value)}")
    query = (
        f"SELECT toUnixTimestamp(minute) * 1000 AS m, {_SUMS}, sumForEach(wait_buckets) AS wait_buckets "
        f"FROM {database}.kpi_minute FINAL WHERE {' AND '.join(conditions)} GROUP BY m"
    )
    result = client.query(query)
    names = result.column_names
    minutes = {}
    for row in result.result_rows:
        data = dict(zip(names, row, strict=True))
        minute = int(data.pop("m"))
        data["wait_buckets"] = list(data["wait_buckets"])
        minutes[minute] = KpiCounts.from_dict(data)
    return minutes


def alert_states(client: Any, database: str) -> tuple[dict[str, AlertState], int | None]:
    """The evaluator state last saved: per rule, and the last boundary evaluated."""
    rows = client.query(
        f"SELECT rule, status, since, value, evaluated_until FROM {database}.alert_state FINAL"
    ).result_rows
    states = {}
    until: int | None = None
    for rule, status, since, value, evaluated_until in rows:
        states[str(rule)] = AlertState(status, None if since is None else int(since), value)
        until = int(evaluated_until) if until is None else max(until, int(evaluated_until))
    return states, until


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
