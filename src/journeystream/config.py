"""Settings from JOURNEYSTREAM_* environment variables, with documented defaults.

`Settings.from_env()` reads and checks them once; the object is frozen. Secrets (the SASL
password, passwords read from `*_FILE` settings, the DSN's and the Alertmanager URL's
password) are masked by `Settings.describe()`, which is all that is ever logged, and left out
of the object's repr. Secret files are read once, at start: an unreadable or empty one, or a
combination of settings that cannot work (SASL without a user, a CA file on a PLAINTEXT
connection, ...), stops the process with one line naming the setting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from journeystream.core.alerts import Rule, load_rules
from journeystream.core.config import RulesConfig
from journeystream.core.pseudonym import MIN_KEY_BYTES, Pseudonyms
from journeystream.errors import ConfigError

PREFIX = "JOURNEYSTREAM_"
MAX_PROCESSES = 64


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _check_processes(values: dict[str, Any]) -> None:
    if values["processes"] > values["partitions"]:
        raise ConfigError(
            f"{PREFIX}PROCESSES={values['processes']}: more than {PREFIX}PARTITIONS={values['partitions']}; "
            "a process takes whole partitions, so the extra ones would have nothing to do"
        )


def _processes(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PROCESSES:
        raise ValueError(f"must be 1..{MAX_PROCESSES}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MASK = "***"


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
    secret: bool = False
    """Never shown: masked by describe(), left out of repr and of error messages."""


# One row per setting: (attribute name, env suffix, default, parser, description).
# The README's configuration table is generated from this list (`journeystream config --markdown`).
_SETTINGS: dict[str, _Setting] = {
    "kafka_bootstrap": _Setting(
        "KAFKA_BOOTSTRAP", "127.0.0.1:9092", str, "Kafka bootstrap servers (comma-separated host:port)"
    ),
    "kafka_security_protocol": _Setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _choice(*KAFKA_SECURITY_PROTOCOLS),
        "Kafka security protocol of every client: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL "
        "(SASL over TLS: what managed Kafka services expect)",
    ),
    "kafka_sasl_mechanism": _Setting(
        "KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        _choice(*KAFKA_SASL_MECHANISMS),
        "SASL mechanism (SASL_* protocols): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    ),
    "kafka_sasl_username": _Setting(
        "KAFKA_SASL_USERNAME", "", str, "SASL user name; required with the SASL_* protocols"
    ),
    "kafka_sasl_password": _Setting(
        "KAFKA_SASL_PASSWORD",
        "",
        str,
        "SASL password (never logged); prefer KAFKA_SASL_PASSWORD_FILE",
        secret=True,
    ),
    "kafka_sasl_password_file": _Setting(
        "KAFKA_SASL_PASSWORD_FILE",
        "",
        str,
        "File holding the SASL password (e.g. a mounted Kubernetes secret), read once at start; "
        "a trailing newline is ignored",
    ),
    "kafka_ssl_cafile": _Setting(
        "KAFKA_SSL_CAFILE",
        "",
        str,
        "PEM file of the CA(s) that sign the brokers' certificates (SSL, SASL_SSL); "
        "empty = the system's trusted CAs",
    ),
    "kafka_ssl_certfile": _Setting(
        "KAFKA_SSL_CERTFILE", "", str, "PEM client certificate for mutual TLS (mTLS); empty = none"
    ),
    "kafka_ssl_keyfile": _Setting(
        "KAFKA_SSL_KEYFILE", "", str, "PEM private key of the client certificate (mTLS)"
    ),
    "kafka_ssl_key_password_file": _Setting(
        "KAFKA_SSL_KEY_PASSWORD_FILE",
        "",
        str,
        "File holding the password of an encrypted client key; empty = the key is not encrypted",
    ),
    "kafka_ssl_check_hostname": _Setting(
        "KAFKA_SSL_CHECK_HOSTNAME",
        "true",
        _boolean,
        "Check that the broker's certificate names the host connected to; turn off only for "
        "brokers reached by an address their certificate does not list",
    ),
    "app_id": _Setting(
        "APP_ID",
        "journeystream",
        str,
        "Kafka consumer group of the workers and prefix of the internal topics",
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
    "topic_retention_ms": _Setting(
        "TOPIC_RETENTION_MS",
        "604800000",
        _positive_int,
        "Life of what the service writes to Kafka, set on the topics it creates: retention.ms of "
        "rejected, journeys, irritants, alerts and the internal topics (and of the input topic when "
        "the worker creates it); max.compaction.lag.ms of the changelogs. The bound on how long an id "
        "survives in those topics (see Privacy)",
    ),
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
    "clickhouse_password_file": _Setting(
        "CLICKHOUSE_PASSWORD_FILE",
        "",
        str,
        "File holding the ClickHouse password (the DSN then carries the user only), read once at start",
    ),
    "clickhouse_ca_file": _Setting(
        "CLICKHOUSE_CA_FILE",
        "",
        str,
        "PEM CA file that signs the ClickHouse server's certificate (https:// DSN); "
        "empty = the system's trusted CAs",
    ),
    "events_ttl_days": _Setting(
        "EVENTS_TTL_DAYS",
        "90",
        _positive_int,
        "Retention of interaction_events and rejected_events; refused at start when the retention "
        "horizon (now + a year + this) passes the end of ClickHouse's DateTime (2106-02-07)",
    ),
    "facts_ttl_days": _Setting(
        "FACTS_TTL_DAYS",
        "730",
        _positive_int,
        "Retention of journeys, irritants, kpi_minute and alerts; same limit as EVENTS_TTL_DAYS",
    ),
    "pseudonym_key_file": _Setting(
        "PSEUDONYM_KEY_FILE",
        "",
        str,
        "File holding the secret key of pseudonymised ids (at least 16 bytes, e.g. `openssl rand -hex 32`), "
        "read once at start: customer, anonymous, session and agent ids are replaced at ingest by keyed "
        "hashes (see Privacy); empty = ids are stored as they come",
    ),
    "sink_batch_rows": _Setting(
        "SINK_BATCH_ROWS", "20000", _positive_int, "A sink flushes once it holds this many rows"
    ),
    "sink_flush_ms": _Setting(
        "SINK_FLUSH_MS",
        "250",
        _positive_int,
        "... or once its oldest row is this old: the checkpoint interval of a caught-up worker, most of "
        "the delay from an event to its row (p99 under 2 s at 5 000 events/s with 250)",
    ),
    "checkpoint_backlog_ms": _Setting(
        "CHECKPOINT_BACKLOG_MS",
        "5000",
        _positive_int,
        "While the worker reads a backlog (full fetches), it checkpoints this often instead of every "
        "SINK_FLUSH_MS, with SINK_BATCH_ROWS scaled alike: fewer, larger writes of the same states",
    ),
    "checkpoint_customers": _Setting(
        "CHECKPOINT_CUSTOMERS",
        "20000",
        _positive_int,
        "A checkpoint starts once this many customers changed since the last one, whatever the interval: "
        "each is held as objects until its state is written (a bound on memory while a backlog of new "
        "customers is read)",
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
    "processes": _Setting(
        "PROCESSES",
        "1",
        _processes,
        "Processes of one worker, 1..64 and at most PARTITIONS: the worker starts PROCESSES - 1 "
        "helpers, each a member of the consumer group with its own partitions and stores "
        "(DATA_DIR/process-N); they write to "
        "ClickHouse through the first process, which owns the store and serves /metrics for all. "
        "Set it to the worker's cores: the stages are Python, one core per process",
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
    "alertmanager_username": _Setting(
        "ALERTMANAGER_USERNAME", "", str, "Basic-auth user for Alertmanager; empty = no authentication"
    ),
    "alertmanager_password_file": _Setting(
        "ALERTMANAGER_PASSWORD_FILE",
        "",
        str,
        "File holding the Alertmanager basic-auth password, read once at start",
    ),
    "alertmanager_ca_file": _Setting(
        "ALERTMANAGER_CA_FILE",
        "",
        str,
        "PEM CA file that signs Alertmanager's certificate (https:// URL); empty = the system's trusted CAs",
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
        "Stage state store: memory:// (restored from the changelog topics at every start) or rocksdb:// "
        "(on disk under DATA_DIR/state; a restart restores only the changelog tail)",
    ),
    "data_dir": _Setting("DATA_DIR", ".local/data", str, "Local state: stage stores, embedded ClickHouse"),
    "http_host": _Setting("HTTP_HOST", "127.0.0.1", str, "Bind address of /metrics, /health, /ready"),
    "http_port": _Setting("HTTP_PORT", "6066", _port, "Port of /metrics, /health, /ready"),
    "log_level": _Setting("LOG_LEVEL", "info", str, "crit, error, warn, info or debug"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str = field(repr=False)
    kafka_sasl_password_file: str
    kafka_ssl_cafile: str
    kafka_ssl_certfile: str
    kafka_ssl_keyfile: str
    kafka_ssl_key_password_file: str
    kafka_ssl_check_hostname: bool
    app_id: str
    topic_interactions: str
    topic_rejected: str
    topic_journeys: str
    topic_irritants: str
    topic_alerts: str
    topic_retention_ms: int
    partitions: int
    clickhouse_dsn: str
    clickhouse_database: str
    clickhouse_password_file: str
    clickhouse_ca_file: str
    events_ttl_days: int
    facts_ttl_days: int
    pseudonym_key_file: str
    sink_batch_rows: int
    sink_flush_ms: int
    checkpoint_backlog_ms: int
    checkpoint_customers: int
    sink_max_backoff_ms: int
    allowed_lateness_ms: int
    abandon_after_ms: int
    idle_timeout_ms: int
    quiet_after_ms: int
    kafka_session_timeout_ms: int
    group_instance_id: str
    processes: int
    kpi_horizon_ms: int
    alert_rules: str
    alertmanager_url: str
    alertmanager_username: str
    alertmanager_password_file: str
    alertmanager_ca_file: str
    alert_eval_ms: int
    alert_resend_ms: int
    schemas_dir: str
    store: str
    data_dir: str
    http_host: str
    http_port: int
    log_level: str
    # Secrets read from the *_FILE settings at start (not settings themselves).
    kafka_ssl_key_password: str = field(default="", repr=False)
    clickhouse_password: str = field(default="", repr=False)
    alertmanager_password: str = field(default="", repr=False)
    pseudonym_key: str = field(default="", repr=False)

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
                shown = MASK if setting.secret else repr(text)
                raise ConfigError(f"{PREFIX}{setting.env}={shown}: {exc}") from None
        if not values["clickhouse_dsn"]:
            path = Path(values["data_dir"], "clickhouse").resolve()
            values["clickhouse_dsn"] = f"chdb://{path}"
        _check_processes(values)
        _check_retention(values, time.time())
        values.update(_check_kafka_security(values))
        values.update(_check_clickhouse_security(values))
        values.update(_check_alertmanager_security(values))
        values.update(_read_pseudonym_key(values))
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """Every setting as it may be logged: passwords masked (`***` when set, empty when not)."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        for name in SECRET_FIELDS:
            shown[name] = MASK if getattr(self, name) else ""
        shown["clickhouse_dsn"] = mask_password(self.clickhouse_dsn)
        shown["alertmanager_url"] = mask_password(self.alertmanager_url)
        return shown

    def secrets(self) -> list[str]:
        """Every secret value these settings hold (for tests that scan outputs for leaks)."""
        found = [str(getattr(self, name)) for name in SECRET_FIELDS]
        found += [urlsplit(url).password or "" for url in (self.clickhouse_dsn, self.alertmanager_url)]
        return [secret for secret in found if secret]

    @property
    def topic_by_device(self) -> str:
        """Internal topic: events needing identity resolution, keyed by anonymous id."""
        return f"{self.app_id}.by-device"

    @property
    def topic_by_customer(self) -> str:
        """Internal topic: everything for the journey engine, keyed by customer key."""
        return f"{self.app_id}.by-customer"

    @property
    def topic_control(self) -> str:
        """Internal topic: erasure requests keyed by the key they target, and their reports."""
        return f"{self.app_id}.control"


SECRET_FIELDS = (
    *(name for name, setting in _SETTINGS.items() if setting.secret),
    "kafka_ssl_key_password",
    "clickhouse_password",
    "alertmanager_password",
    "pseudonym_key",
)


def _name(attribute: str) -> str:
    return PREFIX + _SETTINGS[attribute].env


def read_secret_file(attribute: str, path: str) -> str:
    """The content of a secret file named by the setting `attribute`, without its trailing
    newline; ConfigError (naming the setting, never the content) when unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{_name(attribute)}={path!r}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{_name(attribute)}={path!r}: not UTF-8 text") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{_name(attribute)}={path!r}: the file is empty")
    return secret


DATETIME_END_S = 2**32 - 1
"""The last second ClickHouse's DateTime holds: 2106-02-07T06:28:15Z."""
FUTURE_MARGIN_DAYS = 366
"""Room for event times ahead of the wall clock (skewed producers, simulated futures)."""


def max_ttl_days(now_s: float) -> int:
    """The longest retention whose TTL expression (event time + N days) stays inside
    ClickHouse's DateTime for events up to a year ahead of `now_s`. Past it the expression
    wraps round to 1970-1971 and ClickHouse drops every insert without an error."""
    return int((DATETIME_END_S - now_s) // 86_400) - FUTURE_MARGIN_DAYS


def _check_retention(values: dict[str, Any], now_s: float) -> None:
    """Refuse a TTL the tables cannot express (one rule per TTL setting)."""
    limit = max_ttl_days(now_s)
    for attribute in ("events_ttl_days", "facts_ttl_days"):
        days = values[attribute]
        if days > limit:
            raise ConfigError(
                f"{_name(attribute)}={days}: the TTL horizon (event time + {days} days) passes the end "
                f"of ClickHouse's DateTime range (2106-02-07), so ClickHouse would silently drop every "
                f"insert into the tables it governs; use at most {limit} days"
            )


def _check_readable(attribute: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{_name(attribute)}={path!r}: cannot read it ({exc.strerror})") from None


def _check_kafka_security(values: dict[str, Any]) -> dict[str, Any]:
    """Refuse combinations that cannot work; read the secret files. Returns resolved values."""
    protocol = values["kafka_security_protocol"]
    protocol_name = f"{_name('kafka_security_protocol')}={protocol}"
    resolved: dict[str, Any] = {}
    sasl = ("kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file")
    if protocol.startswith("SASL_"):
        if not values["kafka_sasl_username"]:
            raise ConfigError(f"{_name('kafka_sasl_username')} is required with {protocol_name}")
        if values["kafka_sasl_password"] and values["kafka_sasl_password_file"]:
            raise ConfigError(
                f"set either {_name('kafka_sasl_password')} or {_name('kafka_sasl_password_file')}, not both"
            )
        if values["kafka_sasl_password_file"]:
            resolved["kafka_sasl_password"] = read_secret_file(
                "kafka_sasl_password_file", values["kafka_sasl_password_file"]
            )
        elif not values["kafka_sasl_password"]:
            raise ConfigError(
                f"{_name('kafka_sasl_password_file')} (or {_name('kafka_sasl_password')}) "
                f"is required with {protocol_name}"
            )
    else:
        for attribute in sasl:
            if values[attribute]:
                raise ConfigError(f"{_name(attribute)} is set but {protocol_name} does not use SASL")
    tls = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password_file")
    if not protocol.endswith("SSL"):
        for attribute in tls:
            if values[attribute]:
                raise ConfigError(f"{_name(attribute)} is set but {protocol_name} does not use TLS")
        return resolved
    for attribute in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        if values[attribute]:
            _check_readable(attribute, values[attribute])
    if values["kafka_ssl_keyfile"] and not values["kafka_ssl_certfile"]:
        raise ConfigError(
            f"{_name('kafka_ssl_keyfile')} is set without {_name('kafka_ssl_certfile')} "
            "(the client certificate it belongs to)"
        )
    if values["kafka_ssl_key_password_file"]:
        if not values["kafka_ssl_certfile"]:
            raise ConfigError(
                f"{_name('kafka_ssl_key_password_file')} is set without {_name('kafka_ssl_certfile')}"
            )
        resolved["kafka_ssl_key_password"] = read_secret_file(
            "kafka_ssl_key_password_file", values["kafka_ssl_key_password_file"]
        )
    return resolved


def _check_clickhouse_security(values: dict[str, Any]) -> dict[str, Any]:
    parts = urlsplit(values["clickhouse_dsn"])
    resolved: dict[str, Any] = {}
    if values["clickhouse_password_file"]:
        if parts.scheme not in ("http", "https"):
            raise ConfigError(
                f"{_name('clickhouse_password_file')} is set but {_name('clickhouse_dsn')} "
                "is not a server (http:// or https://)"
            )
        if parts.password is not None:
            raise ConfigError(
                f"{_name('clickhouse_dsn')} has a password and {_name('clickhouse_password_file')} "
                "is set: use one of them"
            )
        resolved["clickhouse_password"] = read_secret_file(
            "clickhouse_password_file", values["clickhouse_password_file"]
        )
    _check_https_ca(values, "clickhouse_ca_file", "clickhouse_dsn")
    return resolved


def _check_alertmanager_security(values: dict[str, Any]) -> dict[str, Any]:
    url = values["alertmanager_url"]
    parts = urlsplit(url)
    resolved: dict[str, Any] = {}
    auth = ("alertmanager_username", "alertmanager_password_file", "alertmanager_ca_file")
    if not url:
        for attribute in auth:
            if values[attribute]:
                raise ConfigError(f"{_name(attribute)} is set but {_name('alertmanager_url')} is empty")
        return resolved
    if bool(values["alertmanager_username"]) != bool(values["alertmanager_password_file"]):
        raise ConfigError(
            f"set both {_name('alertmanager_username')} and {_name('alertmanager_password_file')}, or neither"
        )
    if values["alertmanager_username"]:
        if parts.username is not None:
            raise ConfigError(
                f"{_name('alertmanager_url')} has a user and {_name('alertmanager_username')} is set: "
                "use one of them"
            )
        resolved["alertmanager_password"] = read_secret_file(
            "alertmanager_password_file", values["alertmanager_password_file"]
        )
    _check_https_ca(values, "alertmanager_ca_file", "alertmanager_url")
    return resolved


def _read_pseudonym_key(values: dict[str, Any]) -> dict[str, Any]:
    path = values["pseudonym_key_file"]
    if not path:
        return {}
    key = read_secret_file("pseudonym_key_file", path)
    if len(key.encode("utf-8")) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{_name('pseudonym_key_file')}={path!r}: the key holds fewer than {MIN_KEY_BYTES} bytes "
            "(make one with: openssl rand -hex 32)"
        )
    return {"pseudonym_key": key}


def pseudonyms(settings: Settings) -> Pseudonyms | None:
    """The pseudonymiser of JOURNEYSTREAM_PSEUDONYM_KEY_FILE (None: ids are kept as they come)."""
    if not settings.pseudonym_key:
        return None
    return Pseudonyms(settings.pseudonym_key.encode("utf-8"))


def _check_https_ca(values: dict[str, Any], ca_attribute: str, url_attribute: str) -> None:
    """A CA file only makes sense for an https:// URL, and must be readable."""
    if not values[ca_attribute]:
        return
    if urlsplit(values[url_attribute]).scheme != "https":
        raise ConfigError(f"{_name(ca_attribute)} is set but {_name(url_attribute)} is not https://")
    _check_readable(ca_attribute, values[ca_attribute])


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
