"""Issue 12, `journeystream erase` with no worker running (after a `replay`), on the real
broker (the command checks it for worker state): a customer with anonymous web use merged at
login, journeys and irritants; after the erasure no row of any table mentions the customer id
or the anonymous id, KPI totals are unchanged, the request is in `erasures` (hashed), another
customer is untouched, and erasing again is a no-op that says so. With the worker's changelog
topics present and no worker running, the command deletes the rows itself, leaves the request
on the control topic, says the worker state is not erased yet and exits non-zero; the next
worker carries the request out."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.supervise import WorkerProcess, worker_env
from tests.integration.helpers import kpi_cells, query

pytestmark = pytest.mark.integration

CUSTOMER, ANONYMOUS, OTHER = "CUST-ERASE-7731", "anon-erase-f00d", "CUST-KEEP-4242"


def _event(n: int, minutes: float, channel: str, kind: str, **fields: object) -> bytes:
    at = datetime.fromtimestamp(time.time() - 86_400 + minutes * 60, UTC)
    body = {
        "event_id": f"erase-{n}",
        "occurred_at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "channel": channel,
        "type": kind,
        "journey": "billing",
        **fields,
    }
    return orjson.dumps(body) + b"\n"


def _stream() -> bytes:
    c, a, o = {"customer_id": CUSTOMER}, {"anonymous_id": ANONYMOUS}, {"customer_id": OTHER}
    lines = [
        _event(1, 0, "web", "page_view", session_id="s-erase-1", **a),
        _event(2, 1, "web", "journey_start", session_id="s-erase-1", **a),
        _event(3, 2, "web", "login", session_id="s-erase-1", **c, **a),
        _event(4, 3, "web", "journey_step", session_id="s-erase-1", **c),
        _event(5, 10, "phone", "contact_start", attributes={"direction": "inbound"}, **c),
        _event(6, 11, "phone", "contact_answered", attributes={"wait_s": 900}, agent_id="agent-e1", **c),
        _event(7, 14, "phone", "complaint", attributes={"reason": "billing_error"}, **c),
        _event(8, 15, "phone", "contact_end", **c),
        _event(9, 20, "phone", "contact_start", attributes={"direction": "inbound"}, **o),
        _event(10, 21, "phone", "complaint", attributes={"reason": "billing_error"}, **o),
    ]
    return b"".join(lines)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "journeystream", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _replayed(bootstrap: str, name: str, folder: Path) -> dict[str, str]:
    """The settings of a store filled by `replay` of the stream (journeys closed by now)."""
    file = folder / "stream.jsonl"
    file.write_bytes(_stream())
    env = worker_env(bootstrap, name, folder / "data")
    replayed = _run(env, "replay", str(file), "--close-until", "now")
    assert replayed.returncode == 0, replayed.stderr
    return env


def _mentions(env: dict[str, str], needle: str) -> dict[str, int]:
    tables = [row[0] for row in query(env, "SELECT name FROM system.tables WHERE database = '{db}'")]
    found = {}
    for table in tables:
        rows = query(env, f"SELECT * FROM {{db}}.{table}")
        hits = sum(needle in repr(row) for row in rows)
        if hits:
            found[table] = hits
    return found


async def test_erase_after_a_replay_removes_every_row_and_keeps_kpis(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = _replayed(kafka_bootstrap, unique_name, tmp_path)
    before = _mentions(env, CUSTOMER)
    assert {"interaction_events", "journeys", "irritants"} <= set(before), before
    assert _mentions(env, ANONYMOUS).get("journeys") or _mentions(env, ANONYMOUS).get("interaction_events")
    kpis = kpi_cells(env)
    other = _mentions(env, OTHER)
    assert other

    erased = _run(env, "erase", CUSTOMER)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert ": erased" in erased.stdout and "worker state: none" in erased.stdout
    assert "1 merged anonymous ids" in erased.stdout
    for needle in (CUSTOMER, ANONYMOUS, "s-erase-1", "agent-e1"):
        assert _mentions(env, needle) == {}, needle
    assert kpi_cells(env) == kpis  # anonymous counts stay
    assert _mentions(env, OTHER) == other

    again = _run(env, "erase", CUSTOMER)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ": no-op" in again.stdout and "nothing was held for this id" in again.stdout
    digest = hashlib.sha256(CUSTOMER.encode()).hexdigest()
    recorded = query(env, "SELECT id_sha256, id_kind, linked_ids, outcome, rows_removed FROM {db}.erasures")
    assert [(r[0], r[1], r[2], r[3]) for r in sorted(recorded, key=lambda r: r[3])] == [
        (digest, "customer", 1, "erased"),
        (digest, "customer", 0, "no-op"),
    ]
    assert sum(next(r[4] for r in recorded if r[3] == "erased").values()) >= 8

    # an anonymous visitor who never logged in
    assert _run(env, "erase", "--anonymous-id", "anon-never-seen").returncode == 0


async def test_with_worker_state_and_no_worker_the_request_waits_for_the_next_worker(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = _replayed(kafka_bootstrap, unique_name, tmp_path)
    settings = Settings.from_env(env)
    await ensure_topics(settings)  # what a worker of this app id leaves behind
    erased = _run(env, "erase", CUSTOMER, "--timeout", "3")
    assert erased.returncode == 1
    assert ": incomplete" in erased.stdout and "worker state: NOT erased: no worker answered" in erased.stdout
    assert _mentions(env, CUSTOMER) == {}  # the ClickHouse part is done all the same
    request = re.search(r"request (\S+) stays on", erased.stdout)
    assert request is not None, erased.stdout

    # the next worker of the app id carries the request out and reports it
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        reports = await _reports(kafka_bootstrap, settings.topic_control, request.group(1))
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"
    assert [(r["part"], r["primary"], r["error"]) for r in reports] == [("customer", True, None)]


async def _reports(
    bootstrap: str, topic: str, request: str, timeout: float = 60.0
) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    try:
        while not found and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = orjson.loads(record.value)
                    if value.get("kind") == "report" and value.get("request") == request:
                        found.append(value)
    finally:
        await consumer.stop()
    return found
