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

With a worker of the app id (its changelog topics exist), the request goes through the
control topic (stages/control.py): the worker that owns the key erases its state, cascades to
the anonymous ids merged into it (their states and login links, wherever they live), deletes
the ClickHouse rows (the embedded store is owned by the worker's process) and records the
request; every part reports back and this command waits for them all. If no worker answers in
time, the request stays on the control topic for the next worker to carry out, the command
deletes the rows itself if it can open the store, and it exits non-zero.
"""

from __future__ import annotations

import asyncio
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
    worker_complete: bool = False  # nothing of the id is left in any worker's state
    errors: list[str] = field(default_factory=list)
    erased_by: str = field(default_factory=lambda: f"{socket.gethostname()}/erase-command/{os.getpid()}")

    @property
    def removed(self) -> int:
        return sum(self.rows_removed.values())

    @property
    def complete(self) -> bool:
        return not any(self.rows_left.values()) and self.worker_complete and not self.errors

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
        lines += [f"  FAILED: {error}" for error in self.errors]
        return lines


def stored_id(settings: Settings, given: str) -> str:
    """The id as the tables hold it: its token when ids are pseudonymised (a token given
    stays as it is), else the id itself."""
    tokens = pseudonyms(settings)
    return given if tokens is None else tokens.token_or_same(given)


def id_hash(stored: str) -> str:
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()


def erase_rows(
    client: Any, database: str, stored: str, *, anonymous: bool, merged: Sequence[str] = ()
) -> ErasureReport:
    """Delete every row of the id (and, for a customer, of the anonymous ids merged into it:
    those its login events link to it, and `merged`, those the worker's state knows of);
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
        linked = sorted({*linked, *merged})
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
    return f"held in {', '.join(held)}"


@dataclass
class WorkerAnswer:
    """The reports of one request's parts (stages/control.py `report_value`)."""

    request: str
    primary: dict[str, Any] | None = None
    others: list[dict[str, Any]] = field(default_factory=list)

    def add(self, report: dict[str, Any]) -> None:
        if report.get("primary"):
            self.primary = self.primary or report
        else:
            self.others.append(report)

    @property
    def done(self) -> bool:
        return self.primary is not None and len(self.others) >= int(self.primary.get("expect", 0))

    def fill(self, report: ErasureReport) -> None:
        """What the workers did, into the command's report."""
        primary = self.primary
        if primary is None:
            return
        report.rows_removed = {t: int(n) for t, n in primary.get("rows_removed", {}).items()}
        report.rows_left = {t: int(n) for t, n in primary.get("rows_left", {}).items()}
        report.linked_anonymous_ids = int(primary.get("linked_ids", 0))
        report.erased_by = str(primary.get("worker", ""))
        parts = [primary, *self.others]
        states = sum(1 for p in parts if p.get("existed") and p.get("part") != "links")
        links = sum(1 for p in parts if p.get("existed") and p.get("part") == "links")
        dropped = sum(int(p.get("items_dropped", 0)) for p in parts)
        workers = ", ".join(sorted({str(p.get("worker")) for p in parts}))
        report.states_removed = states + links
        report.errors += [str(p["error"]) for p in parts if p.get("error")]
        report.worker_complete = self.done
        report.worker_state = (
            f"{states} states and {links} login-link sets removed, {dropped} held or buffered items "
            f"dropped, tombstones on the changelogs; by {workers}"
        )
        if not self.done:
            missing = int(primary.get("expect", 0)) - len(self.others)
            report.worker_state += f"; NOT complete: {missing} parts did not report in time"


async def erase_through_workers(settings: Settings, key: str, timeout_s: float) -> WorkerAnswer:
    """Send the request on the control topic; wait for the reports of every part (or the
    timeout). The reports are read from the end of the topic as it was before the request."""
    import uuid

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from journeystream.kafka_options import kafka_options
    from journeystream.runtime.topics import ensure_topics
    from journeystream.stages.control import erase_request, parse
    from journeystream.stages.routing import Partitioner

    topic = settings.topic_control
    await ensure_topics(settings, [topic])
    answer = WorkerAnswer(str(uuid.uuid4()))
    options = kafka_options(settings)
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    producer = AIOKafkaProducer(**options, acks="all")
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        for tp, end in (await consumer.end_offsets(partitions)).items():
            consumer.seek(tp, end)
        record_key, value = erase_request(answer.request, key)
        await producer.send_and_wait(
            topic, value, key=record_key, partition=Partitioner(len(partitions))(key)
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not answer.done:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for message in records:
                    report = parse(message.value)
                    if isinstance(report, dict) and report.get("request") == answer.request:
                        answer.add(report)
    finally:
        await producer.stop()
        await consumer.stop()
    return answer
