"""`journeystream erase`: remove a customer (or a visitor's anonymous id) from ClickHouse.

What this module does: it finds the anonymous ids merged into the customer (the login events
of `interaction_events`, which carry both ids), then deletes every row that carries the
customer id or one of those anonymous ids, with lightweight `DELETE`s, and checks that none
is left: `interaction_events` (customer_id, anonymous_id), `rejected_events` (kafka_key: the
producer's routing key), `journeys` and `irritants` (customer_key `C` or `anon:X`). KPI cells
are anonymous counts and stay. Each request is recorded in `erasures` (a SHA-256 of the id,
never the id) and reported; a second request for the same id finds nothing and says so.

With pseudonymised ids the stored ids are tokens: the id given may be the raw id (its token is
computed with the key) or the token itself.

What it does not do (yet): erase worker state. Customer states, login links, dedup ids and
held items live in the worker's stores and changelog topics; a request that must reach them
is not built, so the command checks for that state (the changelog topics of the app id) and
reports the erasure as incomplete, with a non-zero exit, when it exists or cannot be checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from journeystream.config import Settings, pseudonyms
from journeystream.sinks.rows import now_ms

ERASABLE: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("interaction_events", (("customer_id", "customers"), ("anonymous_id", "anonymous"))),
    ("rejected_events", (("kafka_key", "keys"),)),
    ("journeys", (("customer_key", "customer_keys"),)),
    ("irritants", (("customer_key", "customer_keys"),)),
)
"""Every table holding ids: which columns hold which of the ids erased."""


@dataclass
class ErasureReport:
    id_sha256: str
    kind: str  # "customer" or "anonymous"
    linked_anonymous_ids: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)
    rows_left: dict[str, int] = field(default_factory=dict)
    states_removed: int = 0
    worker_state: str = "not checked"
    erased_by: str = field(default_factory=lambda: f"{socket.gethostname()}/erase-command/{os.getpid()}")

    @property
    def removed(self) -> int:
        return sum(self.rows_removed.values())

    @property
    def complete(self) -> bool:
        return not any(self.rows_left.values()) and self.worker_state == "none"

    @property
    def outcome(self) -> str:
        if not self.complete:
            return "incomplete"
        return "erased" if self.removed or self.states_removed else "no-op"

    def lines(self) -> list[str]:
        counts = ", ".join(f"{table} {rows}" for table, rows in self.rows_removed.items())
        lines = [
            f"erasure of {self.kind} id sha256:{self.id_sha256[:16]}…: {self.outcome}",
            f"  ClickHouse rows removed: {counts} (KPI cells untouched); "
            f"{self.linked_anonymous_ids} merged anonymous ids",
            f"  worker state: {self.worker_state}",
        ]
        if self.outcome == "no-op":
            lines.append("  nothing was held for this id: already erased, or never seen")
        lines += [
            f"  FAILED: {rows} rows of {table} are still there"
            for table, rows in self.rows_left.items()
            if rows
        ]
        return lines


def stored_id(settings: Settings, given: str) -> str:
    """The id as the tables hold it: its token when ids are pseudonymised (a token given
    stays as it is), else the id itself."""
    tokens = pseudonyms(settings)
    return given if tokens is None else tokens.token_or_same(given)


def id_hash(stored: str) -> str:
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()


def erase_rows(client: Any, database: str, stored: str, *, anonymous: bool) -> ErasureReport:
    """Delete every row of the id (and, for a customer, of the anonymous ids merged into it);
    count what was removed and what is left."""
    report = ErasureReport(id_hash(stored), "anonymous" if anonymous else "customer")
    customers: list[str] = [] if anonymous else [stored]
    linked: list[str] = []
    if not anonymous:
        linked = [
            row[0]
            for row in client.query(
                f"SELECT DISTINCT anonymous_id FROM {database}.interaction_events "
                "WHERE customer_id = {id:String} AND anonymous_id IS NOT NULL",
                parameters={"id": stored},
            ).result_rows
        ]
    anonymous_ids = [stored] if anonymous else linked
    report.linked_anonymous_ids = len(linked)
    values = {
        "customers": customers,
        "anonymous": anonymous_ids,
        "keys": customers + anonymous_ids,
        "customer_keys": customers + [f"anon:{a}" for a in anonymous_ids],
    }
    for table, columns in ERASABLE:
        clauses = [f"{column} IN {_literal(values[kind])}" for column, kind in columns if values[kind]]
        if not clauses:
            report.rows_removed[table] = report.rows_left[table] = 0
            continue
        where = " OR ".join(clauses)
        count = _count(client, database, table, where)
        if count:
            client.command(delete_statement(database, table, _engine(client, database, table), where))
        report.rows_removed[table] = count
        report.rows_left[table] = _count(client, database, table, where) if count else 0
    return report


def record(client: Any, database: str, report: ErasureReport) -> None:
    client.insert(
        f"{database}.erasures",
        [
            [
                now_ms(),
                report.id_sha256,
                report.kind,
                report.linked_anonymous_ids,
                report.rows_removed,
                report.states_removed,
                report.outcome,
                report.erased_by,
            ]
        ],
        column_names=[
            "erased_at",
            "id_sha256",
            "id_kind",
            "linked_ids",
            "rows_removed",
            "states_removed",
            "outcome",
            "erased_by",
        ],
    )


def delete_statement(database: str, table: str, engine_full: str, where: str) -> str:
    """A lightweight DELETE of the rows `where` selects. On a replicated cluster (the tables of
    deploy/clickhouse/replicated: `T` is Distributed over `T_local`) a Distributed table takes
    no DELETE: the statement goes to `T_local ON CLUSTER`, so every shard and replica
    applies it."""
    distributed = _DISTRIBUTED.match(engine_full)
    if distributed is None:
        return f"DELETE FROM {database}.{table} WHERE {where}"
    cluster, local = distributed.group("cluster"), distributed.group("local")
    return f"DELETE FROM {database}.{local} ON CLUSTER '{cluster}' WHERE {where}"


_DISTRIBUTED = re.compile(r"Distributed\('(?P<cluster>[^']+)',\s*'[^']*',\s*'(?P<local>\w+)'")


def _engine(client: Any, database: str, table: str) -> str:
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return str(rows[0][0]) if rows else ""


def _count(client: Any, database: str, table: str, where: str) -> int:
    return int(client.query(f"SELECT count() FROM {database}.{table} WHERE {where}").result_rows[0][0])


def _literal(ids: Sequence[str]) -> str:
    """A ClickHouse tuple of string literals (quotes and backslashes escaped)."""
    quoted = ("'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'" for value in ids)
    return "(" + ", ".join(quoted) + ")"


async def worker_state(settings: Settings, timeout_s: float = 5.0) -> str:
    """ "none" when no worker state of the app id exists in Kafka (no changelog topic, as after
    a replay); else what stands in the way of a complete erasure."""
    from aiokafka.admin import AIOKafkaAdminClient

    from journeystream.errors import KafkaConnectError
    from journeystream.kafka_options import check_kafka, kafka_options
    from journeystream.runtime.topics import TABLES, changelog_topic

    try:
        await check_kafka(settings, timeout_s)
    except KafkaConnectError as exc:
        return f"NOT checked ({exc}): a worker's changelogs may still hold the id"
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    held = sorted(topic for topic in (changelog_topic(settings, t) for t in TABLES) if topic in existing)
    if not held:
        return "none"
    return (
        f"NOT erased: {', '.join(held)} exist; erasing a running or stopped worker's state is not "
        "built yet (issue 12)"
    )
