"""The Grafana dashboards against the real schema (embedded ClickHouse), no Kafka broker.

A fresh store is filled with simulated, recent data (tests/dashboard_data.py). Then every
ClickHouse query of every dashboard (panel targets, template variables, annotations) has its
Grafana variables and ClickHouse-plugin macros expanded here, as Grafana 11 and the plugin v4
would, and runs: it must return rows with the columns its panel type needs. The JSON is
checked for the structure Grafana 11 expects, and Prometheus panels may only use metrics that
journeystream.metrics defines.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.core import kpis
from journeystream.metrics import Metrics
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.store import StoreTarget, migrate
from tests.dashboard_data import Filled, fill

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
SCHEMA_VERSION = 39  # Grafana 11.0 .. 11.x dashboards
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "state-timeline"}
DIMENSIONS = ("journey", "channel", "segment")
RANGE_S = 24 * 3600  # every query runs over the last 24 hours
# Grafana's built-in variables that may appear in queries.
BUILTIN_VARIABLES = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__all"}
PLUGIN_MACROS = {
    "timeFilter",
    "timeFilter_ms",
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "interval_s",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


DASHBOARDS = {path.name: load(path) for path in DASHBOARD_FILES}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def uid_of(datasource: Any) -> str | None:
    return datasource.get("uid") if isinstance(datasource, dict) else None


def clickhouse_panels() -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file, panel) for every panel with ClickHouse targets."""
    found = []
    for name, board in DASHBOARDS.items():
        for panel in panels(board):
            targets = panel.get("targets", [])
            if targets and all(uid_of(t.get("datasource")) == "clickhouse" for t in targets):
                found.append((name, panel))
    return found


def panel_id(item: tuple[str, dict[str, Any]]) -> str:
    name, panel = item
    return f"{name.removesuffix('.json')}:{panel['title']}"


# -- Grafana variable and plugin macro expansion ---------------------------------------------


def sqlstring(values: list[str]) -> str:
    """Grafana's `sqlstring` format: each value quoted, quotes doubled, comma-separated."""
    return ",".join("'" + value.replace("'", "''") + "'" for value in values)


def grafana_interval_s(range_s: float, min_interval_s: float, max_points: int = 1000) -> int:
    """$__interval as Grafana picks it: range / data points, rounded to a tidy step, not
    below the panel's min interval."""
    raw = max(range_s / max_points, min_interval_s)
    for step in (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if raw <= step:
            return step
    return 86400


def duration_s(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    assert match, f"unsupported duration {text!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass
class Expander:
    """Expands a query as Grafana (template variables) then the plugin (macros) would."""

    variables: dict[str, dict[str, Any]]  # name -> the variable's JSON definition
    selection: dict[str, list[str] | None]  # name -> values, None = All
    to_s: int

    def expand(self, sql: str, panel: dict[str, Any] | None = None) -> str:
        range_s = RANGE_S
        min_interval = 1
        if panel is not None:
            if panel.get("timeFrom"):
                range_s = duration_s(panel["timeFrom"])
            if panel.get("interval"):
                min_interval = duration_s(panel["interval"])
        from_s = self.to_s - range_s
        interval_s = grafana_interval_s(range_s, min_interval)
        text = _VARIABLE.sub(self._variable, sql)
        text = _MACRO.sub(lambda m: self._macro(m, from_s, interval_s), text)
        assert "$" not in text, f"unexpanded $ left in:\n{text}"
        return text

    def _variable(self, match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name.startswith("__"):
            return match.group(0)  # a plugin macro: expanded in the second pass
        assert name in self.variables, f"variable ${name} is not defined by the dashboard"
        fmt = match.group(2)
        assert fmt == "sqlstring", f"${{{name}}} must be written ${{{name}:sqlstring}} in SQL"
        definition = self.variables[name]
        if definition["type"] == "textbox":
            value = self.selection.get(name) or [""]
            return sqlstring(value[:1])
        chosen = self.selection.get(name)
        if chosen is None:  # All: Grafana inserts a custom allValue verbatim, unformatted
            assert definition.get("includeAll") and definition.get("allValue"), name
            return str(definition["allValue"])
        return sqlstring(chosen)

    def _macro(self, match: re.Match[str], from_s: int, interval_s: int) -> str:
        name, argument = match.group(1), match.group(2)
        assert name in PLUGIN_MACROS, f"unknown macro $__{name}"
        if name == "timeFilter":
            return f"{argument} >= toDateTime({from_s}) AND {argument} <= toDateTime({self.to_s})"
        if name == "timeFilter_ms":
            return (
                f"{argument} >= fromUnixTimestamp64Milli({from_s * 1000}) "
                f"AND {argument} <= fromUnixTimestamp64Milli({self.to_s * 1000})"
            )
        if name == "fromTime":
            return f"toDateTime({from_s})"
        if name == "toTime":
            return f"toDateTime({self.to_s})"
        if name == "fromTime_ms":
            return f"fromUnixTimestamp64Milli({from_s * 1000})"
        if name == "toTime_ms":
            return f"fromUnixTimestamp64Milli({self.to_s * 1000})"
        return str(interval_s)  # interval_s


def base_type(name: str) -> str:
    while True:
        match = re.fullmatch(r"(?:Nullable|LowCardinality)\((.*)\)", name)
        if not match:
            return name
        name = match.group(1)


def is_numeric(type_name: str) -> bool:
    return re.fullmatch(r"U?Int\d+|Float\d+|Decimal.*", base_type(type_name)) is not None


def is_time(type_name: str) -> bool:
    return base_type(type_name).startswith("DateTime")


def is_text(type_name: str) -> bool:
    return base_type(type_name) in ("String", "Array(String)") or base_type(type_name).startswith("Enum")


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


# -- the filled store ----------------------------------------------------------------------


@dataclass
class Store:
    writer: ClickHouseWriter
    filled: Filled
    to_s: int

    def run(self, sql: str) -> Result:
        def query(client: Any) -> Result:
            result = client.query(sql)
            return Result(
                list(result.column_names), [t.name for t in result.column_types], list(result.result_rows)
            )

        return self.writer.call(query)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    settings = Settings.from_env({"JOURNEYSTREAM_DATA_DIR": str(tmp_path_factory.mktemp("dashboards"))})
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        now_ms = int(time.time() * 1000)
        filled = fill(writer, settings, now_ms)
        # Dashboards name tables without a database (the datasource's defaultDatabase).
        writer.call(lambda client: client.command(f"USE {writer.database}"))
        yield Store(writer, filled, now_ms // 1000 + 1)
    finally:
        writer.close()  # chDB: one open path per process


def expander(board: dict[str, Any], store: Store, selection: dict[str, list[str] | None]) -> Expander:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    return Expander(variables, selection, store.to_s)


def all_selected(board: dict[str, Any], store: Store) -> dict[str, list[str] | None]:
    selection: dict[str, list[str] | None] = {name: None for name in DIMENSIONS}
    selection["customer"] = [store.filled.busy_customer]
    return selection


# -- structure ------------------------------------------------------------------------------


def provisioned_datasources() -> dict[str, str]:
    uids = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            uids[source["uid"]] = source["type"]
    return uids


def test_dashboard_files_are_generated_and_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert sorted(rendered) == [path.name for path in DASHBOARD_FILES]
    for path in DASHBOARD_FILES:
        assert path.read_text() == rendered[path.name], f"{path.name}: run grafana/build_dashboards.py"


def test_three_dashboards_with_unique_uids() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert len(DASHBOARDS) == 3
    assert len(set(uids)) == 3
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) for uid in uids)
    titles = {board["title"] for board in DASHBOARDS.values()}
    assert any("Supervisor" in t for t in titles)
    assert any("explorer" in t for t in titles)
    assert any("health" in t for t in titles)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure_for_grafana_11(name: str) -> None:
    board = DASHBOARDS[name]
    sources = provisioned_datasources()
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert board.get("id") is None  # provisioned dashboards must not carry a database id
    assert board["refresh"] in ("5s", "10s")
    assert board["time"]["to"] == "now"
    assert isinstance(board["title"], str) and board["title"]

    variables = {v["name"]: v for v in board["templating"]["list"]}
    for dimension in DIMENSIONS:
        variable = variables[dimension]
        assert variable["type"] == "query"
        assert variable["multi"] is True and variable["includeAll"] is True
        assert variable["allValue"] == "'__all'"
        assert uid_of(variable["datasource"]) == "clickhouse"
        assert "kpi_minute" in variable["query"]
    for variable in variables.values():
        if "datasource" in variable:
            assert uid_of(variable["datasource"]) in sources

    all_panels = panels(board)
    titles = [panel["title"] for panel in all_panels]
    assert len(titles) == len(set(titles)), "panel titles must be unique in a dashboard"
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    boxes = []
    for panel in all_panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}
        assert all(isinstance(grid[k], int) for k in grid)
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), panel
        assert uid_of(panel["datasource"]) in sources
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{panel['title']}: no unit"
        thresholds = defaults["thresholds"]
        assert thresholds["mode"] in ("absolute", "percentage")
        assert thresholds["steps"] and thresholds["steps"][0]["value"] is None
        assert all(isinstance(step["color"], str) for step in thresholds["steps"])
        values = [step["value"] for step in thresholds["steps"][1:]]
        assert values == sorted(values), f"{panel['title']}: thresholds must ascend"
        targets = panel["targets"]
        assert targets, panel["title"]
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs))
        for target in targets:
            source = uid_of(target["datasource"])
            assert source in sources
            if source == "clickhouse":
                assert target["editorType"] == "sql"
                assert (target["queryType"], target["format"]) in (("table", 1), ("timeseries", 0))
                assert target["rawSql"].strip()
            else:
                assert target["expr"].strip()
        for item in panel["fieldConfig"]["overrides"]:
            if item["matcher"]["id"] == "byFrameRefID":
                assert item["matcher"]["options"] in refs, panel["title"]
    # no two panels overlap on the grid
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            )
            assert not overlap, f"{title_a!r} overlaps {title_b!r}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_referenced_variable_is_defined(name: str) -> None:
    board = DASHBOARDS[name]
    defined = {v["name"] for v in board["templating"]["list"]}
    texts = [v.get("query", "") for v in board["templating"]["list"] if isinstance(v.get("query"), str)]
    for panel in panels(board):
        for target in panel.get("targets", []):
            texts.append(target.get("rawSql") or target.get("expr") or "")
    for annotation in board["annotations"]["list"]:
        texts.append(annotation.get("target", {}).get("rawSql", ""))
    for text in texts:
        for match in _VARIABLE.finditer(text):
            variable = match.group(1) or match.group(3)
            if variable.startswith("__"):
                assert variable in BUILTIN_VARIABLES or variable.removeprefix("__") in PLUGIN_MACROS, variable
            else:
                assert variable in defined, f"{name}: ${variable} used but not defined"


def metric_names() -> set[str]:
    """Every sample name the worker's registry can expose (counters get _total, ...)."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = {"up"}  # Prometheus' own per-target series
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_prometheus_panels_use_only_defined_metrics() -> None:
    known = metric_names()
    assert "journeystream_events_consumed_total" in known
    assert "journeystream_sink_flush_seconds_bucket" in known
    used: set[str] = set()
    for board in DASHBOARDS.values():
        for panel in panels(board):
            for target in panel.get("targets", []):
                if uid_of(target.get("datasource")) != "prometheus":
                    continue
                expr = target["expr"]
                names = set(re.findall(r"\b(journeystream_\w+)", expr))
                names |= set(re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{", expr))
                assert names, f"{panel['title']}: no metric in {expr!r}"
                unknown = names - known
                assert not unknown, f"{panel['title']}: unknown metrics {unknown}"
                used |= names
        for variable in board["templating"]["list"]:
            if uid_of(variable.get("datasource")) == "prometheus":
                assert set(re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{", variable["query"])) <= known
    # the service-health panels cover the health signals the issue lists
    for wanted in (
        "journeystream_events_consumed_total",
        "journeystream_consumer_lag",
        "journeystream_events_rejected_total",
        "journeystream_sink_flush_seconds_bucket",
        "journeystream_state_bytes",
    ):
        assert wanted in used


# -- every ClickHouse query against the filled store ---------------------------------------


def test_store_was_filled(store: Store) -> None:
    for table in ("interaction_events", "rejected_events", "journeys", "irritants", "kpi_minute", "alerts"):
        assert store.filled.rows[table] > 0, table
        assert store.run(f"SELECT count() FROM {table} FINAL").rows[0][0] > 0


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variable_queries_return_values(store: Store, name: str) -> None:
    board = DASHBOARDS[name]
    exp = expander(board, store, all_selected(board, store))
    for variable in board["templating"]["list"]:
        if uid_of(variable.get("datasource")) != "clickhouse":
            continue
        result = store.run(exp.expand(variable["query"]))
        assert len(result.columns) == 1
        values = [row[0] for row in result.rows]
        assert values and all(isinstance(v, str) and v for v in values), variable["name"]


def check_columns(panel: dict[str, Any], results: list[Result]) -> None:
    """The columns the panel type and its field overrides need."""
    kind = panel["type"]
    title = panel["title"]
    names = {name for result in results for name in result.columns}
    for item in panel["fieldConfig"]["overrides"]:
        if item["matcher"]["id"] == "byName":
            assert item["matcher"]["options"] in names, f"{title}: override for missing column"
    for result in results:
        numeric = [n for n, t in zip(result.columns, result.types, strict=True) if is_numeric(t)]
        times = [n for n, t in zip(result.columns, result.types, strict=True) if is_time(t)]
        if kind == "timeseries":
            assert "time" in times, f"{title}: needs a DateTime column named time"
            assert numeric, f"{title}: needs numeric columns"
            others = set(result.columns) - {"time"} - set(numeric)
            assert all(is_text(result.types[result.columns.index(n)]) for n in others), title
            stamps = result.column("time")
            assert stamps == sorted(stamps), f"{title}: time series must be ordered by time"
        elif kind == "stat":
            assert numeric and len(numeric) == len(result.columns), f"{title}: stat needs numbers only"
        elif kind == "bargauge":
            texts = [n for n, t in zip(result.columns, result.types, strict=True) if is_text(t)]
            assert len(texts) == 1 and len(numeric) >= 1, f"{title}: bar gauge needs label + value"
        elif kind == "state-timeline":
            assert "time" in times and len(result.columns) >= 2, title
        elif kind == "table":
            assert result.columns, title
        if kind != "table":
            for column in numeric:
                values = [v for v in result.column(column) if v is not None and not math.isnan(float(v))]
                assert values, f"{title}: column {column} has no value"


@pytest.mark.parametrize("item", clickhouse_panels(), ids=panel_id)
def test_panel_queries_return_rows_with_expected_columns(
    store: Store, item: tuple[str, dict[str, Any]]
) -> None:
    name, panel = item
    board = DASHBOARDS[name]
    exp = expander(board, store, all_selected(board, store))
    results = []
    for target in panel["targets"]:
        sql = exp.expand(target["rawSql"], panel)
        result = store.run(sql)
        assert result.rows, f"{panel['title']} / {target['refId']} returned no row:\n{sql}"
        results.append(result)
    check_columns(panel, results)


@pytest.mark.parametrize("item", clickhouse_panels(), ids=panel_id)
def test_panel_queries_run_with_chosen_values(store: Store, item: tuple[str, dict[str, Any]]) -> None:
    """Selected values (not All) expand to valid SQL too (rows depend on the choice)."""
    name, panel = item
    board = DASHBOARDS[name]
    selection = all_selected(board, store)
    selection.update({"journey": ["claim"], "channel": ["phone", "web"], "segment": ["standard"]})
    exp = expander(board, store, selection)
    for target in panel["targets"]:
        store.run(exp.expand(target["rawSql"], panel))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_annotation_queries_return_events(store: Store, name: str) -> None:
    board = DASHBOARDS[name]
    exp = expander(board, store, all_selected(board, store))
    for annotation in board["annotations"]["list"]:
        if uid_of(annotation.get("datasource")) != "clickhouse":
            continue
        result = store.run(exp.expand(annotation["target"]["rawSql"]))
        assert result.rows and {"time", "text"} <= set(result.columns)


# -- the panels compute what core/kpis.py defines ------------------------------------------


def find_target(board_name: str, title: str) -> dict[str, Any]:
    for panel in panels(DASHBOARDS[board_name]):
        if panel["title"] == title:
            return dict(panel["targets"][0])
    raise AssertionError(f"no panel {title!r} in {board_name}")


def cells_in_range(store: Store) -> list[tuple[kpis.CellKey, kpis.KpiCounts]]:
    low_ms = (store.to_s - RANGE_S) * 1000
    high_ms = store.to_s * 1000
    return [(key, counts) for key, counts in store.filled.kpis.cells() if low_ms <= key[0] <= high_ms]


def test_journey_kpi_table_matches_core_rates(store: Store) -> None:
    board = DASHBOARDS["supervisor-live.json"]
    target = find_target("supervisor-live.json", "Journey KPIs")
    result = store.run(expander(board, store, all_selected(board, store)).expand(target["rawSql"]))
    cells = cells_in_range(store)
    checked = 0
    for row in result.rows:
        values = dict(zip(result.columns, row, strict=True))
        counts = kpis.rollup(cells, -(2**62), 2**62, journey=values["journey"])
        assert values["started"] == counts.journeys_started
        for metric in (
            "abandonment_rate",
            "completion_rate",
            "digital_containment",
            "cross_channel_share",
            "bounce_rate",
        ):
            expected = getattr(kpis, metric)(counts)
            if expected is None:
                assert values[metric] is None or math.isnan(values[metric])
            else:
                assert values[metric] == pytest.approx(expected), (values["journey"], metric)
                checked += 1
    assert checked >= 10


def test_wait_quantiles_match_core_estimate(store: Store) -> None:
    board = DASHBOARDS["supervisor-live.json"]
    target = find_target("supervisor-live.json", "Wait p80")
    sql = expander(board, store, all_selected(board, store)).expand(target["rawSql"])  # 24 h, not 15 min
    value = store.run(sql).rows[0][0]
    buckets = kpis.rollup(cells_in_range(store), -(2**62), 2**62).wait_buckets
    expected = kpis.wait_quantile(buckets, 0.8)
    assert expected is not None and value == pytest.approx(expected)


def test_firing_alerts_panel_lists_only_firing_episodes(store: Store) -> None:
    board = DASHBOARDS["supervisor-live.json"]
    target = find_target("supervisor-live.json", "Firing alerts")
    result = store.run(expander(board, store, all_selected(board, store)).expand(target["rawSql"]))
    rules = result.column("rule")
    assert sorted(rules) == ["FailureDemandHigh", "PhoneContactAbandonmentHigh"]
    assert rules[0] == "PhoneContactAbandonmentHigh"  # critical first


def test_explorer_finds_the_customer_timeline(store: Store) -> None:
    board = DASHBOARDS["journey-explorer.json"]
    target = find_target("journey-explorer.json", "Timeline across channels")
    customer = store.filled.busy_customer
    sql = expander(board, store, all_selected(board, store)).expand(target["rawSql"])
    result = store.run(sql)
    own = store.run(
        f"SELECT count() FROM interaction_events FINAL WHERE customer_id = '{customer}' "
        f"AND occurred_at >= toDateTime({store.to_s - RANGE_S})"
    ).rows[0][0]
    assert len(result.rows) >= own > 0
    stamps = result.column("time")
    assert stamps == sorted(stamps)
