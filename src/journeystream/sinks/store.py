"""Connecting to ClickHouse (embedded chDB or a server) and applying the DDL.

The same code serves both: `chdb:///path` opens embedded ClickHouse in this process (one
path per process, one process per path), `http(s)://user:pass@host:port/db` a server. Over
https the server's certificate is verified (JOURNEYSTREAM_CLICKHOUSE_CA_FILE, else the system's
CAs); the password may come from JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE instead of the DSN.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver import options as clickhouse_options

from journeystream.config import Settings, mask_password
from journeystream.errors import ConfigError, MigrationError

log = logging.getLogger(__name__)


def _without_pandas() -> None:
    """Tell clickhouse-connect that pandas is absent, as it is where not installed (chDB
    installs it). Every insert asks whether its rows are a DataFrame, which imports pandas
    on the first one: 0.15-0.7 s holding the GIL in the middle of the first checkpoint, and
    ~43 MB of memory per process, for rows that are always lists of tuples here. The
    attributes are the ones clickhouse-connect itself sets when the import fails."""
    if "pd" not in vars(clickhouse_options):
        clickhouse_options.pd = None
        clickhouse_options.pd_time_test = None


_without_pandas()

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Where the tables live: a DSN to connect with, the database name, and for a server the
    password read from a file (else the DSN's) and the CA file that verifies it (https)."""

    dsn: str
    database: str
    password: str = field(default="", repr=False)
    ca_file: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreTarget:
        database = settings.clickhouse_database
        parts = urlsplit(settings.clickhouse_dsn)
        if parts.scheme in ("http", "https") and parts.path.strip("/"):
            database = parts.path.strip("/")  # the DSN's path names the database (SPEC §5)
        if not _IDENTIFIER.fullmatch(database):
            raise ConfigError(f"ClickHouse database name {database!r} is not a plain identifier")
        return cls(
            settings.clickhouse_dsn, database, settings.clickhouse_password, settings.clickhouse_ca_file
        )

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")


def connect(target: StoreTarget) -> Any:
    """A clickhouse-connect client, not bound to the database (every statement qualifies it)."""
    parts = urlsplit(target.dsn)
    if parts.scheme == "chdb":
        path = parts.path if not parts.netloc else parts.netloc + parts.path
        Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"unsupported ClickHouse DSN scheme in {mask_password(target.dsn)!r}")
    secure = parts.scheme == "https"
    return clickhouse_connect.get_client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8443 if secure else 8123),
        username=unquote(parts.username or "default"),
        password=target.password or unquote(parts.password or ""),
        secure=secure,
        verify=True,
        ca_cert=(target.ca_file or None) if secure else None,
    )


def schemas_dir(settings: Settings | None = None) -> Path:
    """The DDL directory: JOURNEYSTREAM_SCHEMAS_DIR (container images), else the checkout's."""
    if settings is not None and settings.schemas_dir:
        return Path(settings.schemas_dir)
    return Path(__file__).resolve().parents[3] / "schemas" / "clickhouse"


def migration_statements(
    settings: Settings, database: str, directory: Path | None = None
) -> list[tuple[str, str]]:
    """(file name, statement) pairs of every DDL file, in file-name order, placeholders filled."""
    directory = directory or schemas_dir(settings)
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise MigrationError(f"no *.sql files in {directory}")
    values = {
        "db": database,
        "events_ttl_days": settings.events_ttl_days,
        "facts_ttl_days": settings.facts_ttl_days,
    }
    statements = []
    for file in files:
        text = Template(file.read_text()).substitute(values)
        for statement in _split_statements(text):
            statements.append((file.name, statement))
    return statements


def migrate(client: Any, settings: Settings, database: str) -> int:
    """Create the database and every table if missing. Idempotent; returns statements run."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    statements = migration_statements(settings, database)
    for name, statement in statements:
        try:
            client.command(statement)
        except Exception as exc:
            raise MigrationError(f"{name}: {exc}") from exc
    log.info("schema up to date: %d statements from %s", len(statements), schemas_dir(settings))
    return len(statements)


def _split_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in body.split(";") if part.strip()]
