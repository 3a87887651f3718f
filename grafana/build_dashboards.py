"""Generate the journeystream Grafana dashboards (grafana/dashboards/*.json).

    .venv/bin/python grafana/build_dashboards.py          # write the JSON files
    .venv/bin/python grafana/build_dashboards.py --check  # exit 1 if a file is out of date

Target: Grafana 11.x (schemaVersion 39) with the grafana-clickhouse-datasource plugin v4
(datasource uid `clickhouse`) and Prometheus (uid `prometheus`). The JSON files are the
artefact Grafana provisions; this script is their source, so every panel follows the same
conventions (see docs/dashboards.md):

* Tables are named without a database: the datasource's `defaultDatabase` picks it.
* ReplacingMergeTree tables are always read with FINAL; kpi_minute is summed over shards.
* Time: `$__timeFilter(col)`, `$__fromTime` / `$__toTime`, and buckets of
  `toStartOfInterval(col, toIntervalSecond(greatest($__interval_s, 60)))` (KPIs are per
  minute, so a bucket is never shorter than one).
* Variables `journey`, `channel`, `segment` are multi-value with All; their All value is the
  literal `'__all'` (quoted: Grafana does not format custom All values) and every query
  filters with `('__all' IN (${v:sqlstring}) OR col IN (${v:sqlstring}))`. `sqlstring`
  quotes and escapes each value, so it is the only format used in SQL.
* Volumes are shown per minute (unit cpm), independent of the bucket size.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from textwrap import dedent
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

SCHEMA_VERSION = 39
REFRESH = "10s"
CH = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
PROM = {"type": "prometheus", "uid": "prometheus"}
ALL_VALUE = "'__all'"

CHANNELS = ("web", "mobile_app", "chatbot", "phone", "chat", "email", "store", "social", "sms")
WAIT_BOUNDS = "[0, 10, 20, 30, 60, 120, 180, 300, 600, 1200, inf]"
IRRITANT_KINDS = (
    "abandonment",
    "contact_abandoned",
    "repeat_contact_after_web",
    "repeat_contact",
    "long_wait",
    "complaint",
    "detractor",
    "high_effort",
)

UID_SUPERVISOR = "journeystream-supervisor"
UID_EXPLORER = "journeystream-explorer"
UID_HEALTH = "journeystream-health"

# -- SQL building blocks ---------------------------------------------------------------------

BUCKET_S = "greatest($__interval_s, 60)"
PER_MINUTE = f"60 / {BUCKET_S}"


def bucket(column: str) -> str:
    return f"toStartOfInterval({column}, toIntervalSecond({BUCKET_S}))"


def var_filter(expression: str, variable: str) -> str:
    """`expression` is one of the selected values of `variable`, or All is selected."""
    return f"('__all' IN (${{{variable}:sqlstring}}) OR {expression} IN (${{{variable}:sqlstring}}))"


def kpi_where(time_filter: str = "$__timeFilter(minute)") -> str:
    """Filters of kpi_minute (one row per minute x channel x journey x segment x shard)."""
    return (
        f"{time_filter}\n  AND {var_filter('journey', 'journey')}\n"
        f"  AND {var_filter('channel', 'channel')}\n  AND {var_filter('segment', 'segment')}"
    )


def event_where(time_filter: str = "$__timeFilter(occurred_at)", prefix: str = "") -> str:
    """Filters of interaction_events: its own journey/segment (null = unspecified/unknown)."""
    journey = var_filter(f"ifNull({prefix}journey, 'unspecified')", "journey")
    segment = var_filter(f"ifNull({prefix}segment, 'unknown')", "segment")
    channel = var_filter(f"{prefix}channel", "channel")
    return f"{time_filter}\n  AND {journey}\n  AND {channel}\n  AND {segment}"


def fact_where(time_filter: str) -> str:
    """Filters of irritants (own channel, resolved journey and segment)."""
    return (
        f"{time_filter}\n  AND {var_filter('journey', 'journey')}\n"
        f"  AND {var_filter('channel', 'channel')}\n  AND {var_filter('segment', 'segment')}"
    )


def ratio(numerator: str, denominator: str) -> str:
    return f"sum({numerator}) / nullIf(sum({denominator}), 0)"


DECIDED = "journeys_completed + journeys_abandoned + journeys_cancelled"
CLOSED = f"{DECIDED} + journeys_expired"
HANDLED = "contacts_answered + contacts_abandoned"
NPS = "100 * (sum(nps_promoters) - sum(nps_detractors)) / nullIf(sum(nps_responses), 0)"
FAILURE_DEMAND = ratio("irritant_repeat_contact_after_web", "inbound_contacts")


def wait_quantiles(quantiles: dict[str, float], source: str, group: str | None) -> str:
    """Wait-time quantiles estimated from the summed wait_buckets histogram, interpolating
    linearly inside a bucket and reporting the last finite bound for the +Inf bucket, as
    core/kpis.py wait_quantile does. `source` is a kpi_minute FROM/WHERE clause."""
    inner = [
        *([f"{group} AS time"] if group else []),
        "sumForEach(wait_buckets) AS b",
        "arrayCumSum(b) AS cum",
        "arraySum(b) AS total",
        f"{WAIT_BOUNDS} AS bounds",
    ]
    outer: list[str] = ["time"] if group else []
    for name, q in quantiles.items():
        i = f"i_{name}"
        inner.append(f"arrayFirstIndex((c, n) -> n > 0 AND c >= {q} * total, cum, b) AS {i}")
        lower = f"if({i} = 1, 0, bounds[{i} - 1])"
        inner.append(
            f"if(total = 0, NULL, if(isInfinite(bounds[{i}]), {lower}, {lower} + (bounds[{i}] - {lower})"
            f" * ({q} * total - (cum[{i}] - b[{i}])) / b[{i}])) AS {name}"
        )
        outer.append(name)
    grouping = "\nGROUP BY time\nORDER BY time" if group else ""
    body = ",\n    ".join(inner)
    return f"SELECT {', '.join(outer)}\nFROM (\n  SELECT\n    {body}\n  {source}{grouping}\n)" + (
        "\nORDER BY time" if group else ""
    )


# -- panel building blocks -------------------------------------------------------------------


class Layout:
    """Places panels left to right on a 24-column grid, wrapping to a new line."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.line_height = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def _newline(self) -> None:
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def _id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value


def steps(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds: the first step is the base (value null)."""
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in pairs],
    }


OK = steps(("green", None))
RISING_RATE = steps(("green", None), ("orange", 0.2), ("red", 0.3))


def ch_target(sql: str, ref: str = "A", *, time_series: bool = False) -> dict[str, Any]:
    """A ClickHouse plugin v4 SQL target: format 0 = time series (long frames are widened by
    their string columns), 1 = table."""
    return {
        "refId": ref,
        "datasource": CH,
        "editorType": "sql",
        "queryType": "timeseries" if time_series else "table",
        "format": 0 if time_series else 1,
        "rawSql": _dedent(sql),
    }


def _dedent(sql: str) -> str:
    """Remove the indentation of the first line from every line that has it (interpolated
    multi-line fragments keep their own, relative indentation)."""
    lines = sql.strip("\n").splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    prefix = lines[0][:indent]
    return "\n".join(line[indent:] if line.startswith(prefix) else line for line in lines).strip()


def prom_target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "instant": False,
    }


def override(matcher_id: str, options: str, **properties: Any) -> dict[str, Any]:
    return {
        "matcher": {"id": matcher_id, "options": options},
        "properties": [{"id": key.replace("__", "."), "value": value} for key, value in properties.items()],
    }


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any],
    *,
    custom: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    color: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    datasource = targets[0]["datasource"] if targets else CH
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": thresholds,
                "color": color or {"mode": "thresholds"},
                **({"custom": custom} if custom else {}),
                **(defaults or {}),
            },
            "overrides": overrides or [],
        },
        "options": options or {},
    }
    panel.update(extra or {})
    return panel


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any] = OK,
    *,
    show_thresholds: bool = False,
    stacked: bool = False,
    overrides: list[dict[str, Any]] | None = None,
    bars: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1 if bars else 2,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line+area" if show_thresholds else "off"},
        "axisSoftMin": 0,
    }
    defaults: dict[str, Any] = {}
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        unit,
        thresholds,
        custom=custom,
        overrides=overrides,
        color={"mode": "palette-classic"},
        options={
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        extra={"interval": "1m", **(extra or {})},
        defaults=defaults,
    )


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any],
    *,
    overrides: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return _panel(
        "stat",
        title,
        description,
        targets,
        unit,
        thresholds,
        overrides=overrides,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        defaults={"decimals": decimals} if decimals is not None else None,
        extra=extra,
    )


def bargauge(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any],
    *,
    max_value: float | None = None,
) -> dict[str, Any]:
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        unit,
        thresholds,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "left",
        },
        defaults={"min": 0, **({"max": max_value} if max_value is not None else {})},
    )


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any],
    *,
    overrides: list[dict[str, Any]] | None = None,
    sort_by: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return _panel(
        "table",
        title,
        description,
        targets,
        unit,
        thresholds,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
        overrides=overrides,
        options=options,
        extra=extra,
    )


def percent_column(name: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    return override(
        "byName",
        name,
        unit="percentunit",
        decimals=1,
        thresholds=thresholds,
        custom__cellOptions={"type": "color-text"},
    )


def text_column(name: str) -> dict[str, Any]:
    return override("byName", name, unit="string")


def time_column(name: str) -> dict[str, Any]:
    return override("byName", name, unit="dateTimeAsIso")


# -- template variables ----------------------------------------------------------------------


def kpi_variable(name: str, label: str) -> dict[str, Any]:
    sql = f"SELECT DISTINCT {name} FROM kpi_minute WHERE minute >= now() - INTERVAL 30 DAY ORDER BY {name}"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": CH,
        "query": sql,
        "definition": sql,
        "refresh": 1,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ALL_VALUE,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def dimension_variables() -> list[dict[str, Any]]:
    return [
        kpi_variable("journey", "Journey"),
        kpi_variable("channel", "Channel"),
        kpi_variable("segment", "Segment"),
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    layout: Layout,
    variables: list[dict[str, Any]],
    time_from: str,
    annotations: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["journeystream"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": REFRESH,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
        "templating": {"list": variables},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "links": [
            {
                "title": "journeystream",
                "type": "dashboards",
                "tags": ["journeystream"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": layout.panels,
    }


# -- supervisor live view --------------------------------------------------------------------


def supervisor() -> dict[str, Any]:
    lay = Layout()
    kpi = f"FROM kpi_minute FINAL\nWHERE {kpi_where()}"
    live = {"timeFrom": "15m", "hideTimeOverride": False}

    lay.row("Live: last 15 minutes")
    lay.add(
        stat(
            "Events per minute, active customers",
            "Valid events per minute, and distinct customers (customer id, else anon:<id>) "
            "active over the last 15 minutes (SPEC §3 events, distinct customers).",
            [
                ch_target(
                    f"""
                    SELECT
                      (SELECT sum(events) {kpi}) * 60 / dateDiff('second', $__fromTime, $__toTime)
                        AS events_per_minute,
                      (SELECT uniqExact(coalesce(customer_id, concat('anon:', anonymous_id)))
                       FROM interaction_events FINAL
                       WHERE {event_where()}) AS active_customers
                    """
                )
            ],
            "cpm",
            OK,
            overrides=[override("byName", "active_customers", unit="short")],
            extra=live,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Journeys started / completed / abandoned",
            "Journeys opened, completed and abandoned in the last 15 minutes.",
            [
                ch_target(
                    f"""
                    SELECT sum(journeys_started) AS started, sum(journeys_completed) AS completed,
                           sum(journeys_abandoned) AS abandoned
                    {kpi}
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                override("byName", "abandoned", color={"mode": "fixed", "fixedColor": "orange"}),
            ],
            extra=live,
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Inbound assisted contacts",
            "Inbound contacts on assisted channels (phone, chat, email, store, social), last 15 minutes.",
            [ch_target(f"SELECT sum(inbound_contacts) AS inbound_contacts\n{kpi}")],
            "short",
            OK,
            extra=live,
        ),
        3,
        4,
    )
    lay.add(
        stat(
            "Contact abandonment",
            "Contacts abandoned in queue / (answered + abandoned), last 15 minutes.",
            [ch_target(f"SELECT {ratio('contacts_abandoned', HANDLED)} AS contact_abandonment_rate\n{kpi}")],
            "percentunit",
            steps(("green", None), ("orange", 0.07), ("red", 0.10)),
            decimals=1,
            extra=live,
        ),
        3,
        4,
    )
    lay.add(
        stat(
            "Wait p80",
            "80th percentile of waits before answer or abandon, from the wait histogram, last 15 minutes.",
            [ch_target(wait_quantiles({"wait_p80": 0.8}, kpi, None))],
            "s",
            steps(("green", None), ("orange", 120), ("red", 300)),
            decimals=0,
            extra=live,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Alerts firing now",
            "KPI threshold alerts whose latest notification is `firing` (alerts table).",
            [
                ch_target(
                    f"""
                    SELECT count() AS firing_alerts
                    FROM (
                      SELECT alert_id
                      FROM alerts FINAL
                      WHERE starts_at >= now() - INTERVAL 30 DAY
                        AND {alert_filters()}
                      GROUP BY alert_id
                      HAVING argMax(status, notified_at) = 'firing'
                    )
                    """
                )
            ],
            "short",
            steps(("green", None), ("orange", 1), ("red", 3)),
        ),
        4,
        4,
    )

    lay.row("Volumes")
    this_week = ch_target(
        f"""
        SELECT {bucket("minute")} AS time, channel, sum(events) * {PER_MINUTE} AS events_per_minute
        {kpi}
        GROUP BY time, channel
        ORDER BY time, channel
        """,
        "A",
        time_series=True,
    )
    last_week = ch_target(
        f"""
        SELECT {bucket("minute + INTERVAL 7 DAY")} AS time, channel,
               sum(events) * {PER_MINUTE} AS events_per_minute_last_week
        FROM kpi_minute FINAL
        WHERE {kpi_where("minute >= $__fromTime - INTERVAL 7 DAY AND minute <= $__toTime - INTERVAL 7 DAY")}
        GROUP BY time, channel
        ORDER BY time, channel
        """,
        "B",
        time_series=True,
    )
    lay.add(
        timeseries(
            "Events per minute by channel, vs same time last week",
            "Volumes by channel (solid) and the same channels exactly 7 days earlier (dashed).",
            [this_week, last_week],
            "cpm",
            overrides=[
                override("byFrameRefID", "A", displayName="${__field.labels.channel}"),
                override(
                    "byFrameRefID",
                    "B",
                    displayName="${__field.labels.channel} (last week)",
                    custom__lineStyle={"fill": "dash", "dash": [10, 10]},
                    custom__fillOpacity=0,
                ),
            ],
        ),
        16,
        9,
    )
    lay.add(
        table(
            "Volume by channel vs same period last week",
            "Events in the selected period and in the same period 7 days earlier; change in %.",
            [
                ch_target(
                    f"""
                    SELECT channel,
                           sumIf(events, minute >= $__fromTime) AS this_period,
                           sumIf(events, minute < $__fromTime) AS last_week,
                           this_period / nullIf(last_week, 0) - 1 AS change
                    FROM kpi_minute FINAL
                    WHERE (($__timeFilter(minute))
                           OR (minute >= $__fromTime - INTERVAL 7 DAY
                               AND minute <= $__toTime - INTERVAL 7 DAY))
                      AND {var_filter("journey", "journey")}
                      AND {var_filter("channel", "channel")}
                      AND {var_filter("segment", "segment")}
                    GROUP BY channel
                    ORDER BY this_period DESC
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                text_column("channel"),
                override(
                    "byName",
                    "change",
                    unit="percentunit",
                    decimals=1,
                    thresholds=steps(("red", None), ("orange", -0.2), ("green", -0.05), ("orange", 0.2)),
                    custom__cellOptions={"type": "color-text"},
                ),
            ],
            sort_by="this_period",
        ),
        8,
        9,
    )

    lay.row("Journeys")
    lay.add(
        timeseries(
            "Journeys started, completed, abandoned, cancelled",
            "Journey starts count at their first event; closures at the closing time (SPEC §3).",
            [
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time,
                           sum(journeys_started) * {PER_MINUTE} AS started,
                           sum(journeys_completed) * {PER_MINUTE} AS completed,
                           sum(journeys_abandoned) * {PER_MINUTE} AS abandoned,
                           sum(journeys_cancelled) * {PER_MINUTE} AS cancelled
                    {kpi}
                    GROUP BY time
                    ORDER BY time
                    """,
                    time_series=True,
                )
            ],
            "cpm",
            overrides=[
                override("byName", "completed", color={"mode": "fixed", "fixedColor": "green"}),
                override("byName", "abandoned", color={"mode": "fixed", "fixedColor": "red"}),
                override("byName", "cancelled", color={"mode": "fixed", "fixedColor": "orange"}),
                override("byName", "started", color={"mode": "fixed", "fixedColor": "blue"}),
            ],
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Abandonment rate by journey",
            "abandoned / (completed + abandoned + cancelled) per journey; the bands are the "
            "example alert thresholds (25% clear, 35% fire).",
            [
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time, journey,
                           {ratio("journeys_abandoned", DECIDED)} AS abandonment_rate
                    {kpi}
                    GROUP BY time, journey
                    ORDER BY time, journey
                    """,
                    time_series=True,
                )
            ],
            "percentunit",
            steps(("green", None), ("orange", 0.25), ("red", 0.35)),
            show_thresholds=True,
            min_value=0,
            max_value=1,
            overrides=[override("byFrameRefID", "A", displayName="${__field.labels.journey}")],
        ),
        12,
        8,
    )
    lay.add(
        bargauge(
            "Completion rate by journey",
            "completed / (completed + abandoned + cancelled) over the selected period.",
            [
                ch_target(
                    f"""
                    SELECT journey, {ratio("journeys_completed", DECIDED)} AS completion_rate
                    {kpi}
                    GROUP BY journey
                    HAVING sum({DECIDED}) > 0
                    ORDER BY completion_rate
                    """
                )
            ],
            "percentunit",
            steps(("red", None), ("orange", 0.5), ("green", 0.7)),
            max_value=1,
        ),
        8,
        9,
    )
    lay.add(
        table(
            "Journey KPIs",
            "Every journey rate of SPEC §3 over the selected period.",
            [
                ch_target(
                    f"""
                    SELECT journey,
                           sum(journeys_started) AS started,
                           sum(journeys_completed) AS completed,
                           sum(journeys_abandoned) AS abandoned,
                           sum(journeys_cancelled) AS cancelled,
                           sum(journeys_expired) AS expired,
                           {ratio("journeys_abandoned", DECIDED)} AS abandonment_rate,
                           {ratio("journeys_completed", DECIDED)} AS completion_rate,
                           {ratio("completed_without_assisted", "journeys_completed")} AS digital_containment,
                           {ratio("closed_journeys_multichannel", CLOSED)} AS cross_channel_share,
                           {ratio("bounced_sessions", "digital_sessions")} AS bounce_rate
                    {kpi}
                    GROUP BY journey
                    ORDER BY started DESC
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                text_column("journey"),
                percent_column("abandonment_rate", steps(("green", None), ("orange", 0.25), ("red", 0.35))),
                percent_column("completion_rate", steps(("red", None), ("orange", 0.5), ("green", 0.7))),
                percent_column("digital_containment", steps(("red", None), ("orange", 0.5), ("green", 0.7))),
                percent_column("cross_channel_share", steps(("green", None), ("orange", 0.3), ("red", 0.5))),
                percent_column("bounce_rate", steps(("green", None), ("orange", 0.4), ("red", 0.6))),
            ],
            sort_by="started",
        ),
        16,
        9,
    )

    lay.row("Contacts, failure demand, waits")
    lay.add(
        timeseries(
            "Failure-demand and repeat-contact rates",
            "repeat_contact_after_web / inbound assisted contacts (failure demand: the web made the "
            "customer call) and repeat_contact / inbound assisted contacts.",
            [
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time,
                           {FAILURE_DEMAND} AS failure_demand_rate,
                           {ratio("irritant_repeat_contact", "inbound_contacts")} AS repeat_contact_rate
                    {kpi}
                    GROUP BY time
                    ORDER BY time
                    """,
                    time_series=True,
                )
            ],
            "percentunit",
            steps(("green", None), ("orange", 0.18), ("red", 0.25)),
            show_thresholds=True,
            min_value=0,
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Contact abandonment rate by channel",
            "Contacts abandoned while waiting / (answered + abandoned), per assisted channel.",
            [
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time, channel,
                           {ratio("contacts_abandoned", HANDLED)} AS contact_abandonment_rate
                    {kpi}
                    GROUP BY time, channel
                    HAVING sum({HANDLED}) > 0
                    ORDER BY time, channel
                    """,
                    time_series=True,
                )
            ],
            "percentunit",
            steps(("green", None), ("orange", 0.07), ("red", 0.10)),
            show_thresholds=True,
            min_value=0,
            overrides=[override("byFrameRefID", "A", displayName="${__field.labels.channel}")],
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Wait percentiles",
            "p50 / p80 / p95 of waits before answer or abandon, estimated from the wait histogram "
            "(buckets 0-10-20-30-60-120-180-300-600-1200 s).",
            [
                ch_target(
                    wait_quantiles(
                        {"p50": 0.5, "p80": 0.8, "p95": 0.95},
                        f"FROM kpi_minute FINAL\n  WHERE {kpi_where()}",
                        bucket("minute"),
                    ),
                    time_series=True,
                )
            ],
            "s",
            steps(("green", None), ("orange", 120), ("red", 300)),
            show_thresholds=True,
            min_value=0,
        ),
        8,
        8,
    )
    lay.add(
        stat(
            "Average wait, handle time, resolution",
            "Mean wait (s), mean handle time (s) and resolved / ended contacts over the period.",
            [
                ch_target(
                    f"""
                    SELECT {ratio("wait_sum_s", "wait_count")} AS avg_wait_s,
                           {ratio("handle_sum_s", "handle_count")} AS avg_handle_s,
                           {ratio("resolved_contacts", "handle_count")} AS resolution_rate,
                           {ratio("irritant_long_wait", HANDLED)} AS long_wait_rate
                    {kpi}
                    """
                )
            ],
            "s",
            steps(("green", None), ("orange", 120), ("red", 180)),
            decimals=0,
            overrides=[
                override(
                    "byName",
                    "resolution_rate",
                    unit="percentunit",
                    decimals=1,
                    thresholds=steps(("red", None), ("orange", 0.6), ("green", 0.8)),
                ),
                override(
                    "byName",
                    "long_wait_rate",
                    unit="percentunit",
                    decimals=1,
                    thresholds=steps(("green", None), ("orange", 0.1), ("red", 0.2)),
                ),
                override(
                    "byName",
                    "avg_handle_s",
                    thresholds=steps(("green", None), ("orange", 600), ("red", 900)),
                ),
            ],
        ),
        24,
        4,
    )

    lay.row("Perceived quality")
    lay.add(
        timeseries(
            "NPS and average CES",
            "NPS = (promoters - detractors) / responses x 100 (left axis); average CES 1..7, "
            "7 = most effort (right axis).",
            [
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time,
                           {NPS} AS nps,
                           {ratio("ces_sum", "ces_count")} AS avg_ces
                    {kpi}
                    GROUP BY time
                    ORDER BY time
                    """,
                    time_series=True,
                )
            ],
            "none",
            steps(("red", None), ("orange", 0), ("green", 30)),
            show_thresholds=True,
            overrides=[
                override(
                    "byName",
                    "avg_ces",
                    unit="none",
                    min=1,
                    max=7,
                    custom__axisPlacement="right",
                    custom__thresholdsStyle={"mode": "off"},
                    thresholds=steps(("green", None), ("orange", 4), ("red", 4.5)),
                ),
            ],
            extra={"interval": "5m"},
        ),
        16,
        8,
    )
    lay.add(
        stat(
            "NPS, CES, CSAT",
            "Over the selected period: NPS (-100..100), average CES (1..7), average CSAT (1..5).",
            [
                ch_target(
                    f"""
                    SELECT {NPS} AS nps,
                           {ratio("ces_sum", "ces_count")} AS avg_ces,
                           {ratio("csat_sum", "csat_count")} AS avg_csat,
                           sum(nps_responses) AS responses
                    {kpi}
                    """
                )
            ],
            "none",
            steps(("red", None), ("orange", 0), ("green", 30)),
            decimals=1,
            overrides=[
                override("byName", "avg_ces", thresholds=steps(("green", None), ("orange", 4), ("red", 4.5))),
                override("byName", "avg_csat", thresholds=steps(("red", None), ("orange", 3), ("green", 4))),
                override("byName", "responses", unit="short", decimals=0, thresholds=OK),
            ],
        ),
        8,
        8,
    )

    lay.row("Irritants and alerts")
    unpivot = ", ".join(f"('{kind}', sum(irritant_{kind}))" for kind in IRRITANT_KINDS)
    lay.add(
        bargauge(
            "Irritants by kind",
            "Irritants detected in the period, by kind (SPEC §2).",
            [
                ch_target(
                    f"""
                    SELECT pair.1 AS kind, pair.2 AS irritants
                    FROM (
                      SELECT arrayJoin([{unpivot}]) AS pair
                      {kpi}
                    )
                    ORDER BY irritants DESC
                    """
                )
            ],
            "short",
            steps(("green", None), ("orange", 50), ("red", 200)),
        ),
        8,
        9,
    )
    lay.add(
        table(
            "Top irritants",
            "The most frequent irritants by kind, journey and channel, with the customers affected.",
            [
                ch_target(
                    f"""
                    SELECT kind, journey, channel, count() AS irritants,
                           uniqExact(customer_key) AS customers, max(occurred_at) AS last_seen
                    FROM irritants FINAL
                    WHERE {fact_where("$__timeFilter(occurred_at)")}
                    GROUP BY kind, journey, channel
                    ORDER BY irritants DESC
                    LIMIT 15
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                text_column("kind"),
                text_column("journey"),
                text_column("channel"),
                time_column("last_seen"),
                override(
                    "byName",
                    "irritants",
                    thresholds=steps(("green", None), ("orange", 20), ("red", 100)),
                    custom__cellOptions={"type": "gauge", "mode": "basic"},
                ),
            ],
            sort_by="irritants",
        ),
        16,
        9,
    )
    lay.add(
        table(
            "Firing alerts",
            "KPI alerts (SPEC §4) whose latest notification is firing, most severe first. 'all' = "
            "the rule does not filter on that dimension.",
            [
                ch_target(
                    f"""
                    SELECT rule, argMax(severity, notified_at) AS severity, metric, channel, journey, segment,
                           argMax(value, notified_at) AS value, argMax(threshold, notified_at) AS threshold,
                           min(starts_at) AS since, argMax(summary, notified_at) AS summary
                    FROM alerts FINAL
                    WHERE starts_at >= now() - INTERVAL 30 DAY
                      AND {alert_filters()}
                    GROUP BY alert_id, rule, metric, channel, journey, segment
                    HAVING argMax(status, notified_at) = 'firing'
                    ORDER BY indexOf(['critical', 'warning', 'info'], severity), since
                    """
                )
            ],
            "none",
            OK,
            overrides=[
                text_column("rule"),
                text_column("metric"),
                text_column("summary"),
                time_column("since"),
                override(
                    "byName",
                    "severity",
                    unit="string",
                    custom__cellOptions={"type": "color-background"},
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "critical": {"color": "red", "index": 0},
                                "warning": {"color": "orange", "index": 1},
                                "info": {"color": "blue", "index": 2},
                            },
                        }
                    ],
                ),
            ],
        ),
        24,
        7,
    )

    lay.row("Cross-channel")
    lay.add(
        table(
            "Which channel follows which",
            "Consecutive events of one customer (anonymous visitors linked by their login): rows are "
            "the channel used, columns the next different channel, cells how often. Computed from "
            "interaction_events with lagInFrame over each customer's events.",
            [ch_target(transitions_matrix_sql())],
            "short",
            steps(("transparent", None), ("blue", 1), ("orange", 100), ("red", 500)),
            overrides=[
                text_column("from_channel"),
                *[
                    override("byName", channel, custom__cellOptions={"type": "color-background"})
                    for channel in CHANNELS
                ],
            ],
        ),
        14,
        9,
    )
    lay.add(
        bargauge(
            "Top channel switches",
            "The most frequent switches from one channel to another (same data as the matrix).",
            [
                ch_target(
                    f"""
                    SELECT concat(from_channel, ' → ', to_channel) AS switch, count() AS switches
                    FROM ({transitions_sql()})
                    GROUP BY switch
                    ORDER BY switches DESC
                    LIMIT 12
                    """
                )
            ],
            "short",
            steps(("green", None), ("orange", 200), ("red", 1000)),
        ),
        10,
        9,
    )

    return dashboard(
        UID_SUPERVISOR,
        "journeystream / Supervisor live view",
        "Contact-centre steering in real time: volumes, journeys, failure demand, waits, "
        "perceived quality, irritants, alerts and channel switches (SPEC §3).",
        lay,
        dimension_variables(),
        "now-6h",
        annotations=[alert_annotation()],
    )


def alert_filters() -> str:
    """Alerts carry 'all' for a dimension their rule does not filter on: always shown."""
    parts = []
    for name in ("journey", "channel", "segment"):
        parts.append(
            f"('__all' IN (${{{name}:sqlstring}}) OR {name} = 'all' OR {name} IN (${{{name}:sqlstring}}))"
        )
    return "\n  AND ".join(parts)


def alert_annotation() -> dict[str, Any]:
    return {
        "name": "KPI alerts",
        "datasource": CH,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "target": ch_target(
            """
            SELECT min(starts_at) AS time, max(ends_at) AS timeEnd,
                   concat(rule, ': ', argMax(summary, notified_at)) AS text,
                   [rule, argMax(severity, notified_at)] AS tags
            FROM alerts FINAL
            WHERE starts_at <= $__toTime AND (ends_at IS NULL OR ends_at >= $__fromTime)
            GROUP BY alert_id, rule
            ORDER BY time
            """,
            "Anno",
        ),
    }


def customer_key_sql(alias: str = "") -> str:
    """The customer key of an event: the customer id, else the customer the anonymous id
    logged in as (within the lookback), else anon:<anonymous_id> (SPEC §2)."""
    p = f"{alias}." if alias else ""
    return f"coalesce({p}customer_id, nullIf(l.linked, ''), concat('anon:', {p}anonymous_id))"


def transitions_sql() -> str:
    return dedent(
        f"""
        SELECT from_channel, to_channel
        FROM (
          SELECT e.channel AS to_channel,
                 lagInFrame(e.channel) OVER (
                   PARTITION BY {customer_key_sql("e")}
                   ORDER BY e.occurred_at, e.event_id
                   ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
                 ) AS from_channel
          FROM interaction_events AS e FINAL
          LEFT JOIN (
            SELECT anonymous_id, any(customer_id) AS linked
            FROM interaction_events FINAL
            WHERE type = 'login' AND customer_id IS NOT NULL AND anonymous_id IS NOT NULL
              AND occurred_at >= $__fromTime - INTERVAL 1 DAY AND occurred_at <= $__toTime
            GROUP BY anonymous_id
          ) AS l ON e.anonymous_id = l.anonymous_id
          WHERE {event_where("$__timeFilter(e.occurred_at)", "e.")}
        )
        WHERE from_channel != '' AND from_channel != to_channel
        """
    ).strip()


def transitions_matrix_sql() -> str:
    columns = ",\n       ".join(f"countIf(to_channel = '{c}') AS {c}" for c in CHANNELS)
    order = ", ".join(f"'{c}'" for c in CHANNELS)
    return (
        f"SELECT from_channel,\n       {columns}\n"
        f"FROM ({transitions_sql()})\n"
        f"GROUP BY from_channel\nORDER BY indexOf([{order}], from_channel)"
    )


# -- journey explorer -----------------------------------------------------------------------

CUSTOMER = "${customer:sqlstring}"


def customer_events_where() -> str:
    """The customer's own events, those of their anonymous ids linked by a login, and the
    anonymous visitor itself when searched as anon:<id> or by the bare anonymous id."""
    return dedent(
        f"""
        (customer_id = {CUSTOMER}
           OR anonymous_id = {CUSTOMER}
           OR concat('anon:', anonymous_id) = {CUSTOMER}
           OR anonymous_id IN (
             SELECT anonymous_id FROM interaction_events FINAL
             WHERE type = 'login' AND customer_id = {CUSTOMER} AND anonymous_id IS NOT NULL))
        """
    ).strip()


def customer_key_where(column: str = "customer_key") -> str:
    return f"({column} = {CUSTOMER} OR {column} = concat('anon:', {CUSTOMER}))"


def explorer() -> dict[str, Any]:
    lay = Layout()
    events_where = f"{customer_events_where()}\n  AND {event_where()}"
    journey_segment = f"{var_filter('journey', 'journey')} AND {var_filter('segment', 'segment')}"
    lay.row("Customer")
    lay.add(
        stat(
            "Customer summary",
            "Events, journeys, irritants and the summed effort score of the customer in the period.",
            [
                ch_target(
                    f"""
                    SELECT
                      (SELECT count() FROM interaction_events FINAL WHERE {events_where}) AS events,
                      (SELECT count() FROM journeys FINAL
                        WHERE {customer_key_where()} AND $__timeFilter(started_at)
                          AND {journey_segment}) AS journeys,
                      (SELECT count() FROM irritants FINAL
                        WHERE {customer_key_where()}
                          AND {fact_where("$__timeFilter(occurred_at)")}) AS irritants,
                      (SELECT sum(effort_score) FROM journeys FINAL
                        WHERE {customer_key_where()} AND $__timeFilter(started_at)
                          AND {var_filter("journey", "journey")}
                          AND {var_filter("segment", "segment")}) AS effort
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                override("byName", "irritants", thresholds=steps(("green", None), ("orange", 1), ("red", 3))),
                override("byName", "effort", thresholds=steps(("green", None), ("orange", 3), ("red", 6))),
            ],
        ),
        8,
        5,
    )
    lay.add(
        _panel(
            "state-timeline",
            "Channels over time",
            "Which channel the customer used, event after event.",
            [
                ch_target(
                    f"""
                    SELECT occurred_at AS time, toString(channel) AS channel
                    FROM interaction_events FINAL
                    WHERE {events_where}
                    ORDER BY time
                    """
                )
            ],
            "string",
            OK,
            custom={"fillOpacity": 80, "lineWidth": 0},
            color={"mode": "palette-classic"},
            options={
                "mergeValues": True,
                "showValue": "auto",
                "alignValue": "left",
                "rowHeight": 0.8,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "single", "sort": "none"},
            },
            defaults={
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            channel: {"color": color, "index": index}
                            for index, (channel, color) in enumerate(
                                zip(
                                    CHANNELS,
                                    (
                                        "blue",
                                        "light-blue",
                                        "purple",
                                        "red",
                                        "orange",
                                        "yellow",
                                        "green",
                                        "light-purple",
                                        "text",
                                    ),
                                    strict=True,
                                )
                            )
                        },
                    }
                ]
            },
        ),
        16,
        5,
    )
    lay.add(
        table(
            "Timeline across channels",
            "Every event of the customer in time order, with the irritants each one raised.",
            [
                ch_target(
                    f"""
                    SELECT e.occurred_at AS time, e.channel AS channel, e.type AS type,
                           ifNull(e.journey, '') AS journey, ifNull(e.segment, '') AS segment,
                           ifNull(e.session_id, '') AS session, ifNull(e.agent_id, '') AS agent,
                           e.attributes AS attributes,
                           arrayStringConcat(i.kinds, ', ') AS irritants,
                           e.event_id AS event_id
                    FROM (
                      SELECT * FROM interaction_events FINAL
                      WHERE {events_where}
                    ) AS e
                    LEFT JOIN (
                      SELECT arrayJoin(event_ids) AS event_id, groupArray(toString(kind)) AS kinds
                      FROM irritants FINAL
                      WHERE {customer_key_where()}
                        AND occurred_at >= $__fromTime - INTERVAL 1 DAY
                      GROUP BY event_id
                    ) AS i ON e.event_id = i.event_id
                    ORDER BY time, event_id
                    LIMIT 1000
                    """
                )
            ],
            "none",
            OK,
            overrides=[
                time_column("time"),
                *[
                    text_column(name)
                    for name in ("channel", "type", "journey", "segment", "session", "agent")
                ],
                text_column("attributes"),
                text_column("event_id"),
                override(
                    "byName",
                    "irritants",
                    unit="string",
                    custom__cellOptions={"type": "color-text"},
                    color={"mode": "fixed", "fixedColor": "red"},
                ),
            ],
        ),
        24,
        11,
    )
    lay.add(
        table(
            "Journeys",
            "The customer's journeys (latest version): status, channels in order of first use, "
            "switches, inbound contacts, irritants and effort score (SPEC §2).",
            [
                ch_target(
                    f"""
                    SELECT journey, status, started_at, ended_at,
                           dateDiff('second', started_at, ifNull(ended_at, last_event_at)) AS duration,
                           arrayStringConcat(channels, ' → ') AS channel_path, event_count, channel_switches,
                           inbound_contacts, irritant_count, effort_score, journey_id
                    FROM journeys FINAL
                    WHERE {customer_key_where()}
                      AND $__timeFilter(started_at)
                      AND {var_filter("journey", "journey")}
                      AND {var_filter("segment", "segment")}
                      AND ('__all' IN (${{channel:sqlstring}}) OR hasAny(channels, [${{channel:sqlstring}}]))
                    ORDER BY started_at
                    """
                )
            ],
            "short",
            OK,
            overrides=[
                text_column("journey"),
                text_column("channel_path"),
                text_column("journey_id"),
                time_column("started_at"),
                time_column("ended_at"),
                override("byName", "duration", unit="s"),
                override(
                    "byName",
                    "status",
                    unit="string",
                    custom__cellOptions={"type": "color-text"},
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "completed": {"color": "green", "index": 0},
                                "open": {"color": "blue", "index": 1},
                                "cancelled": {"color": "orange", "index": 2},
                                "abandoned": {"color": "red", "index": 3},
                                "expired": {"color": "text", "index": 4},
                            },
                        }
                    ],
                ),
                override(
                    "byName",
                    "effort_score",
                    thresholds=steps(("green", None), ("orange", 3), ("red", 6)),
                    custom__cellOptions={"type": "color-background"},
                ),
            ],
        ),
        24,
        8,
    )
    lay.add(
        table(
            "Irritants",
            "Irritants of the customer: kind, journey, channel, time and details.",
            [
                ch_target(
                    f"""
                    SELECT occurred_at AS time, kind, journey, channel, details,
                           arrayStringConcat(event_ids, ', ') AS events
                    FROM irritants FINAL
                    WHERE {customer_key_where()}
                      AND {fact_where("$__timeFilter(occurred_at)")}
                    ORDER BY time
                    """
                )
            ],
            "none",
            OK,
            overrides=[
                time_column("time"),
                text_column("journey"),
                text_column("channel"),
                text_column("details"),
                text_column("events"),
                override(
                    "byName",
                    "kind",
                    unit="string",
                    custom__cellOptions={"type": "color-text"},
                    color={"mode": "fixed", "fixedColor": "red"},
                ),
            ],
        ),
        14,
        8,
    )
    lay.add(
        table(
            "Customers with the most irritants",
            "Pick a customer to explore: the customer keys with the most irritants in the period "
            "(click one to open their timeline).",
            [
                ch_target(
                    f"""
                    SELECT customer_key, count() AS irritants, uniqExact(journey_id) AS journeys,
                           groupUniqArray(toString(kind)) AS kinds, max(occurred_at) AS last_seen
                    FROM irritants FINAL
                    WHERE {fact_where("$__timeFilter(occurred_at)")}
                    GROUP BY customer_key
                    ORDER BY irritants DESC
                    LIMIT 20
                    """
                )
            ],
            "short",
            steps(("green", None), ("orange", 3), ("red", 6)),
            overrides=[
                override(
                    "byName",
                    "customer_key",
                    unit="string",
                    links=[
                        {
                            "title": "Explore this customer",
                            "url": f"/d/{UID_EXPLORER}/journey-explorer"
                            "?var-customer=${__value.text}&${__url_time_range}",
                        }
                    ],
                ),
                text_column("kinds"),
                time_column("last_seen"),
                override("byName", "irritants", custom__cellOptions={"type": "color-text"}),
            ],
            sort_by="irritants",
        ),
        10,
        8,
    )
    customer = {
        "name": "customer",
        "label": "Customer id",
        "description": "A customer id, an anonymous id, or a journeys customer_key (anon:<id>).",
        "type": "textbox",
        "query": "",
        "current": {"text": "", "value": ""},
        "options": [],
        "hide": 0,
    }
    return dashboard(
        UID_EXPLORER,
        "journeystream / Journey explorer",
        "One customer's journey across channels: timeline, journeys and irritants.",
        lay,
        [customer, *dimension_variables()],
        "now-7d",
    )


# -- service health ---------------------------------------------------------------------------

JOB = 'job="journeystream", instance=~"$instance"'


def health() -> dict[str, Any]:
    lay = Layout()
    lay.row("Worker")
    lay.add(
        stat(
            "Workers ready",
            "Workers reporting /ready (consuming, sink healthy) out of the workers scraped.",
            [
                prom_target(f"sum(journeystream_ready{{{JOB}}})", "ready", "A"),
                prom_target(f"count(up{{{JOB}}} == 1)", "up", "B"),
            ],
            "short",
            steps(("red", None), ("green", 1)),
        ),
        5,
        4,
    )
    lay.add(
        stat(
            "Consumer lag",
            "Messages behind the end of the partitions, all topics (rule: 10k warning, 100k critical).",
            [prom_target(f"sum(journeystream_consumer_lag{{{JOB}}})", "lag")],
            "short",
            steps(("green", None), ("orange", 10000), ("red", 100000)),
        ),
        5,
        4,
    )
    lay.add(
        stat(
            "Rejected share",
            "Share of consumed messages refused by the event contract over 5 minutes (rule: 5%).",
            [
                prom_target(
                    f"sum(rate(journeystream_events_rejected_total{{{JOB}}}[5m]))"
                    f" / sum(rate(journeystream_events_consumed_total{{{JOB}}}[5m]))",
                    "rejected",
                )
            ],
            "percentunit",
            steps(("green", None), ("orange", 0.02), ("red", 0.05)),
        ),
        5,
        4,
    )
    lay.add(
        stat(
            "Rows waiting for ClickHouse",
            "Rows buffered in the sink, not yet written.",
            [prom_target(f"sum(journeystream_sink_pending_rows{{{JOB}}})", "pending")],
            "short",
            steps(("green", None), ("orange", 20000), ("red", 100000)),
        ),
        5,
        4,
    )
    lay.add(
        stat(
            "State size",
            "Serialized size of the customer states last written, all partitions.",
            [prom_target(f"sum(journeystream_state_bytes{{{JOB}}})", "state")],
            "bytes",
            steps(("green", None), ("orange", 2e9), ("red", 8e9)),
        ),
        4,
        4,
    )

    lay.row("Throughput and lag")
    lay.add(
        timeseries(
            "Throughput",
            "Messages consumed, valid, rejected, and events applied to journeys, per second.",
            [
                prom_target(
                    f"sum(rate(journeystream_events_consumed_total{{{JOB}}}[$__rate_interval]))",
                    "consumed",
                    "A",
                ),
                prom_target(
                    f"sum(rate(journeystream_events_valid_total{{{JOB}}}[$__rate_interval]))", "valid", "B"
                ),
                prom_target(
                    f"sum(rate(journeystream_events_rejected_total{{{JOB}}}[$__rate_interval]))",
                    "rejected",
                    "C",
                ),
                prom_target(
                    f"sum(rate(journeystream_events_applied_total{{{JOB}}}[$__rate_interval]))",
                    "applied",
                    "D",
                ),
                prom_target(
                    f"sum(rate(journeystream_events_late_total{{{JOB}}}[$__rate_interval]))", "late", "E"
                ),
            ],
            "cps",
            extra={"interval": "15s"},
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Consumer lag by topic",
            "Messages behind the end of each topic (sum over partitions).",
            [prom_target(f"sum by (topic) (journeystream_consumer_lag{{{JOB}}})", "{{topic}}")],
            "short",
            steps(("green", None), ("orange", 10000), ("red", 100000)),
            show_thresholds=True,
            extra={"interval": "15s"},
        ),
        12,
        8,
    )

    lay.row("Rejected events")
    lay.add(
        timeseries(
            "Rejected events by reason (live)",
            "Messages refused per second, by reason code (Prometheus).",
            [
                prom_target(
                    f"sum by (reason) (rate(journeystream_events_rejected_total{{{JOB}}}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            "cps",
            steps(("green", None), ("red", 1)),
            stacked=True,
            extra={"interval": "15s"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Rejected events by reason (stored)",
            "Rows of rejected_events per minute, by reason code, from ClickHouse.",
            [
                ch_target(
                    f"""
                    SELECT {bucket("kafka_timestamp")} AS time, reason_code,
                           count() * {PER_MINUTE} AS rejected_per_minute
                    FROM rejected_events FINAL
                    WHERE $__timeFilter(kafka_timestamp)
                    GROUP BY time, reason_code
                    ORDER BY time, reason_code
                    """,
                    time_series=True,
                )
            ],
            "cpm",
            steps(("green", None), ("red", 10)),
            stacked=True,
            bars=True,
            overrides=[override("byFrameRefID", "A", displayName="${__field.labels.reason_code}")],
        ),
        8,
        8,
    )
    lay.add(
        table(
            "Latest rejected messages",
            "The last refused messages with their reason and Kafka coordinates (excerpt only; the "
            "original bytes are on the rejected topic).",
            [
                ch_target(
                    """
                    SELECT kafka_timestamp AS time, reason_code, reason, topic, kafka_partition AS partition,
                           kafka_offset AS offset, size_bytes, excerpt
                    FROM rejected_events FINAL
                    WHERE $__timeFilter(kafka_timestamp)
                    ORDER BY time DESC
                    LIMIT 50
                    """
                )
            ],
            "none",
            OK,
            overrides=[
                time_column("time"),
                text_column("reason_code"),
                text_column("reason"),
                text_column("topic"),
                text_column("excerpt"),
                override("byName", "size_bytes", unit="bytes"),
            ],
        ),
        8,
        8,
    )

    lay.row("ClickHouse sink")
    lay.add(
        timeseries(
            "Sink flush latency",
            "p50 and p99 of one batch write to ClickHouse, by table (rule: p99 > 5 s for 10 min).",
            [
                prom_target(
                    "histogram_quantile(0.99, sum by (table, le) "
                    f"(rate(journeystream_sink_flush_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p99 {{table}}",
                    "A",
                ),
                prom_target(
                    "histogram_quantile(0.5, sum by (table, le) "
                    f"(rate(journeystream_sink_flush_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p50 {{table}}",
                    "B",
                ),
            ],
            "s",
            steps(("green", None), ("orange", 1), ("red", 5)),
            show_thresholds=True,
            extra={"interval": "15s"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Rows written per second",
            "Rows written to ClickHouse per second, by table.",
            [
                prom_target(
                    f"sum by (table) (rate(journeystream_sink_rows_total{{{JOB}}}[$__rate_interval]))",
                    "{{table}}",
                )
            ],
            "cps",
            extra={"interval": "15s"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Sink errors",
            "Failed batch writes per second, by table (each is retried; see JourneystreamSinkFailing).",
            [
                prom_target(
                    f"sum by (table) (rate(journeystream_sink_errors_total{{{JOB}}}[$__rate_interval]))",
                    "{{table}}",
                )
            ],
            "cps",
            steps(("green", None), ("red", 0.01)),
            show_thresholds=True,
            extra={"interval": "15s"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "End-to-end delay",
            "Time from an event's occurred_at to its row in ClickHouse (ingested_at), p50 and p95, "
            "for the selected journeys, channels and segments.",
            [
                ch_target(
                    f"""
                    SELECT {bucket("occurred_at")} AS time,
                           quantile(0.5)(dateDiff('millisecond', occurred_at, ingested_at) / 1000) AS p50,
                           quantile(0.95)(dateDiff('millisecond', occurred_at, ingested_at) / 1000) AS p95
                    FROM interaction_events FINAL
                    WHERE {event_where()}
                    GROUP BY time
                    ORDER BY time
                    """,
                    time_series=True,
                )
            ],
            "s",
            steps(("green", None), ("orange", 10), ("red", 60)),
            show_thresholds=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Stored events and late events per minute",
            "Valid events stored per minute by channel (interaction_events) and events that "
            "arrived after their partition's watermark (kpi_minute late_events).",
            [
                ch_target(
                    f"""
                    SELECT {bucket("occurred_at")} AS time, channel, count() * {PER_MINUTE} AS stored
                    FROM interaction_events FINAL
                    WHERE {event_where()}
                    GROUP BY time, channel
                    ORDER BY time, channel
                    """,
                    "A",
                    time_series=True,
                ),
                ch_target(
                    f"""
                    SELECT {bucket("minute")} AS time, sum(late_events) * {PER_MINUTE} AS late
                    FROM kpi_minute FINAL
                    WHERE {kpi_where()}
                    GROUP BY time
                    ORDER BY time
                    """,
                    "B",
                    time_series=True,
                ),
            ],
            "cpm",
            stacked=False,
            overrides=[
                override("byFrameRefID", "A", displayName="${__field.labels.channel}"),
                override("byName", "late", color={"mode": "fixed", "fixedColor": "red"}),
            ],
        ),
        12,
        8,
    )

    lay.row("State")
    lay.add(
        timeseries(
            "State size by partition",
            "Serialized size of the customer states (RocksDB or memory), per journey-engine partition.",
            [
                prom_target(
                    f"sum by (partition) (journeystream_state_bytes{{{JOB}}})", "partition {{partition}}"
                )
            ],
            "bytes",
            extra={"interval": "15s"},
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Customers and open journeys held",
            "Customer states and open journeys in memory, all partitions.",
            [
                prom_target(f"sum(journeystream_state_customers{{{JOB}}})", "customers", "A"),
                prom_target(f"sum(journeystream_open_journeys{{{JOB}}})", "open journeys", "B"),
                prom_target(
                    f"sum by (kind) (rate(journeystream_irritants_total{{{JOB}}}[$__rate_interval])) * 60",
                    "irritants/min {{kind}}",
                    "C",
                ),
            ],
            "short",
            extra={"interval": "15s"},
        ),
        12,
        8,
    )

    instance = {
        "name": "instance",
        "label": "Worker",
        "type": "query",
        "datasource": PROM,
        "query": 'label_values(up{job="journeystream"}, instance)',
        "definition": 'label_values(up{job="journeystream"}, instance)',
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }
    return dashboard(
        UID_HEALTH,
        "journeystream / Service health",
        "Is the pipeline healthy: throughput, consumer lag, rejected events, sink latency, state size.",
        lay,
        [instance, *dimension_variables()],
        "now-3h",
    )


# -- output ---------------------------------------------------------------------------------

DASHBOARDS = {
    "supervisor-live.json": supervisor,
    "journey-explorer.json": explorer,
    "service-health.json": health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a JSON file is not up to date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run grafana/build_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
