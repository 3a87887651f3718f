"""Settings from JOURNEYSTREAM_* environment variables, with documented defaults.

`Settings.from_env()` reads and checks them once; the object is frozen. Secrets (the DSN's
password) are masked by `Settings.describe()`, which is all that is ever logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from journeystream.core.alerts import Rule, load_rules
from journeystream.core.config import RulesConfig
from journeystream.errors import ConfigError

PREFIX = "JOURNEYSTREAM_"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def _store(text: str) -> str:
    if text not in ("memory://", "rocksdb://"):
        raise ValueError("must be memory:// or rocksdb://")
    return text


@dataclass(frozen=True, slots=True)
class _Setting:
    env: str
    default: str
    parse: Callable[[str], Any]
    doc: str


# One row per setting: (attribute name, env suffix, default, parser, description).
# The README's configuration table is generated from this list (`journeystream config --markdown`).
_SETTINGS: dict[str, _Setting] = {
    "kafka_bootstrap": _Setting(
        "KAFKA_BOOTSTRAP", "127.0.0.1:9092", str, "Kafka bootstrap servers (comma-separated host:port)"
    ),
    "app_id": _Setting(
        "APP_ID", "journeystream", str, "Faust app id = Kafka consumer group and prefix of internal topics"
    ),
    "topic_interactions": _Setting(
        "TOPIC_INTERACTIONS", "journeystream.interactions", str, "Input topic of interaction events"
    ),
    "topic_rejected": _Setting(
        "TOPIC_REJECTED",
        "journeystream.rejected",
        str,
        "Rejected messages: original bytes, reason in headers",
    ),
    "topic_journeys": _Setting(
        "TOPIC_JOURNEYS", "journeystream.journeys", str, "Latest state of each journey"
    ),
    "topic_irritants": _Setting("TOPIC_IRRITANTS", "journeystream.irritants", str, "Irritants detected"),
    "topic_alerts": _Setting("TOPIC_ALERTS", "journeystream.alerts", str, "Threshold alert notifications"),
    "partitions": _Setting(
        "PARTITIONS",
        "4",
        _positive_int,
        "Partitions of the topics the worker creates (must equal the input topic's)",
    ),
    "clickhouse_dsn": _Setting(
        "CLICKHOUSE_DSN",
        "",
        str,
        "ClickHouse DSN: chdb:///path (embedded) or http://user:pass@host:8123/db; "
        "empty = embedded under DATA_DIR/clickhouse",
    ),
    "clickhouse_database": _Setting(
        "CLICKHOUSE_DATABASE", "journeystream", str, "ClickHouse database holding the tables"
    ),
    "events_ttl_days": _Setting(
        "EVENTS_TTL_DAYS", "90", _positive_int, "Retention of interaction_events and rejected_events"
    ),
    "facts_ttl_days": _Setting(
        "FACTS_TTL_DAYS", "730", _positive_int, "Retention of journeys, irritants, kpi_minute and alerts"
    ),
    "sink_batch_rows": _Setting(
        "SINK_BATCH_ROWS", "20000", _positive_int, "A sink flushes once it holds this many rows"
    ),
    "sink_flush_ms": _Setting(
        "SINK_FLUSH_MS", "1000", _positive_int, "... or once its oldest row is this old"
    ),
    "sink_max_backoff_ms": _Setting(
        "SINK_MAX_BACKOFF_MS", "30000", _positive_int, "Longest wait between retries of a failed flush"
    ),
    "allowed_lateness_ms": _Setting(
        "ALLOWED_LATENESS_MS",
        "5000",
        _positive_int,
        "Event-time disorder absorbed exactly (watermark = highest time seen minus this)",
    ),
    "abandon_after_ms": _Setting(
        "ABANDON_AFTER_MS",
        "1800000",
        _positive_int,
        "A started journey with no step, completion or cancel for this long is abandoned",
    ),
    "idle_timeout_ms": _Setting(
        "IDLE_TIMEOUT_MS",
        "86400000",
        _positive_int,
        "A journey that never started a process expires after this much silence",
    ),
    "quiet_after_ms": _Setting(
        "QUIET_AFTER_MS",
        "2000",
        _positive_int,
        "Live mode: an input partition silent this long lets its watermark follow the wall clock",
    ),
    "kafka_session_timeout_ms": _Setting(
        "KAFKA_SESSION_TIMEOUT_MS",
        "10000",
        _positive_int,
        "Consumer group session timeout (how fast a dead worker's partitions move)",
    ),
    "group_instance_id": _Setting(
        "GROUP_INSTANCE_ID",
        "",
        str,
        "Static consumer-group membership id, unique per worker (e.g. the pod name): a restarted worker "
        "takes its partitions back without a rebalance; empty = dynamic membership",
    ),
    "kpi_horizon_ms": _Setting(
        "KPI_HORIZON_MS",
        "21600000",
        _positive_int,
        "KPI minute cells stay in worker state this long behind the watermark; an event later "
        "than this is stored but no longer counted in kpi_minute (see journeystream_kpi_too_late_total)",
    ),
    "alert_rules": _Setting(
        "ALERT_RULES",
        "",
        str,
        "YAML file of threshold alert rules (e.g. deploy/alerts.example.yaml), validated at start; "
        "empty = no alerting",
    ),
    "alertmanager_url": _Setting(
        "ALERTMANAGER_URL",
        "",
        str,
        "Alertmanager base URL (e.g. http://127.0.0.1:9093); alerts are posted to /api/v2/alerts, "
        "with retries; empty = alerts go to the alerts topic and table only",
    ),
    "alert_eval_ms": _Setting(
        "ALERT_EVAL_MS", "5000", _positive_int, "How often the alert evaluator looks for complete minutes"
    ),
    "alert_resend_ms": _Setting(
        "ALERT_RESEND_MS",
        "60000",
        _positive_int,
        "Firing alerts are re-posted to Alertmanager this often (keep below its resolve_timeout)",
    ),
    "schemas_dir": _Setting(
        "SCHEMAS_DIR", "", str, "Directory of the ClickHouse DDL; empty = schemas/clickhouse of the checkout"
    ),
    "store": _Setting(
        "STORE",
        "memory://",
        _store,
        "Faust table store: memory:// or rocksdb:// (state survives restarts locally)",
    ),
    "data_dir": _Setting("DATA_DIR", ".local/data", str, "Local state: Faust tables, embedded ClickHouse"),
    "http_host": _Setting("HTTP_HOST", "127.0.0.1", str, "Bind address of /metrics, /health, /ready"),
    "http_port": _Setting("HTTP_PORT", "6066", _port, "Port of /metrics, /health, /ready"),
    "log_level": _Setting("LOG_LEVEL", "info", str, "crit, error, warn, info or debug"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str
    app_id: str
    topic_interactions: str
    topic_rejected: str
    topic_journeys: str
    topic_irritants: str
    topic_alerts: str
    partitions: int
    clickhouse_dsn: str
    clickhouse_database: str
    events_ttl_days: int
    facts_ttl_days: int
    sink_batch_rows: int
    sink_flush_ms: int
    sink_max_backoff_ms: int
    allowed_lateness_ms: int
    abandon_after_ms: int
    idle_timeout_ms: int
    quiet_after_ms: int
    kafka_session_timeout_ms: int
    group_instance_id: str
    kpi_horizon_ms: int
    alert_rules: str
    alertmanager_url: str
    alert_eval_ms: int
    alert_resend_ms: int
    schemas_dir: str
    store: str
    data_dir: str
    http_host: str
    http_port: int
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting; raise ConfigError naming the variable on a bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, setting in _SETTINGS.items():
            text = env.get(PREFIX + setting.env, setting.default)
            try:
                values[name] = setting.parse(text)
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}{setting.env}={text!r}: {exc}") from None
        if not values["clickhouse_dsn"]:
            path = Path(values["data_dir"], "clickhouse").resolve()
            values["clickhouse_dsn"] = f"chdb://{path}"
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """Every setting as it may be logged: passwords in the DSN are masked."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        shown["clickhouse_dsn"] = mask_password(self.clickhouse_dsn)
        shown["alertmanager_url"] = mask_password(self.alertmanager_url)
        return shown

    @property
    def topic_by_device(self) -> str:
        """Internal topic: events needing identity resolution, keyed by anonymous id."""
        return f"{self.app_id}.by-device"

    @property
    def topic_by_customer(self) -> str:
        """Internal topic: everything for the journey engine, keyed by customer key."""
        return f"{self.app_id}.by-customer"

    @property
    def kafka_url(self) -> str:
        """The bootstrap servers in Faust's `kafka://` form."""
        return ";".join(f"kafka://{server.strip()}" for server in self.kafka_bootstrap.split(","))


def mask_password(dsn: str) -> str:
    """`http://user:secret@host` → `http://user:***@host`."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def settings_table() -> str:
    """The configuration table of the README, in Markdown."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in _SETTINGS.values():
        default = f"`{setting.default}`" if setting.default else "(see meaning)"
        rows.append(f"| `{PREFIX}{setting.env}` | {default} | {setting.doc} |")
    return "\n".join(rows)


def rules_config(settings: Settings) -> RulesConfig:
    """The journey and irritant rule parameters the settings choose."""
    return RulesConfig(
        allowed_lateness_ms=settings.allowed_lateness_ms,
        abandon_after_ms=settings.abandon_after_ms,
        idle_timeout_ms=settings.idle_timeout_ms,
    )


def load_alert_rules(settings: Settings) -> list[Rule]:
    """The validated rules of JOURNEYSTREAM_ALERT_RULES ([] when unset); ConfigError names
    the file and every problem found in it."""
    if not settings.alert_rules:
        return []
    path = Path(settings.alert_rules)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{PREFIX}ALERT_RULES={settings.alert_rules!r}: cannot read it ({exc.strerror})"
        ) from None
    return load_rules(text, str(path))
