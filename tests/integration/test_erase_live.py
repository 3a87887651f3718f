"""Issue 12, `journeystream erase` while the worker runs, on the real broker: a customer with
anonymous web use merged at login, journeys and irritants. The request goes through the
control topic; afterwards no row of any table, no state, no link and no changelog value
mentions the customer id or the anonymous id (raw bytes of every changelog record scanned),
KPI totals are unchanged, erasing again is a no-op that says so, and a new event for the
customer after a restart starts fresh (no repeat contact from the erased history).

The changelogs are created here with a short compaction lag (production: the topic
retention), so the broker's cleaner removes the erased values within the test."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from journeystream.config import Settings, pseudonyms
from journeystream.runtime.topics import TABLES, changelog_topic, ensure_topics
from journeystream.supervise import WorkerProcess, metric_sum
from tests.integration.helpers import kpi_cells, produce, query, wait_for, wait_until_caught_up, worker_env
from tests.integration.test_erase_offline import ANONYMOUS, CUSTOMER, OTHER, _event, _mentions, _run, _stream

pytestmark = pytest.mark.integration

FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "max.compaction.lag.ms": "2000",
    "segment.ms": "2000",
    "min.cleanable.dirty.ratio": "0.01",
}


def _traffic(round_: int) -> list[tuple[bytes, bytes]]:
    """Other visitors logging in: writes to every partition of both id changelogs (links and
    customers), which rolls their segments so the cleaner can compact the erased values."""
    messages = []
    for n in range(24):
        anonymous, customer = f"anon-traffic-{round_}-{n}", f"CUST-TRAFFIC-{round_}-{n}"
        ids = {"anonymous_id": anonymous, "session_id": f"s-traffic-{round_}-{n}"}
        view = _event(1000 * round_ + 2 * n, 30, "web", "page_view", **ids)
        login = _event(1000 * round_ + 2 * n + 1, 31, "web", "login", customer_id=customer, **ids)
        messages += [(anonymous.encode(), view.replace(b'"billing"', b'"delivery"'))]
        messages += [(anonymous.encode(), login.replace(b'"billing"', b'"delivery"'))]
    return messages


async def _changelog_values(bootstrap: str, topics: list[str]) -> list[bytes]:
    """Every value of every record the changelogs hold now (raw bytes)."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return values
            values += [record.value for records in batch.values() for record in records if record.value]
    finally:
        await consumer.stop()


async def _create_changelogs(bootstrap: str, settings: Settings) -> list[str]:
    topics = [changelog_topic(settings, table) for table in TABLES]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, settings.partitions, 1, topic_configs=FAST_COMPACTION) for t in topics]
        )
    finally:
        await admin.close()
    return topics


def _replayed_kpis(
    bootstrap: str, name: str, folder: Path, stream: bytes, extra: dict[str, str]
) -> dict[tuple[object, ...], tuple[object, ...]]:
    folder.mkdir()
    file = folder / "stream.jsonl"
    file.write_bytes(stream)
    env = worker_env(bootstrap, name, folder / "data", **extra)
    replayed = _run(env, "replay", str(file), "--close-until", "now")
    assert replayed.returncode == 0, replayed.stderr
    return kpi_cells(env)


def _store_folders(state: Path) -> set[str]:
    """The RocksDB stores (one folder per store and partition) in a process's state folder."""
    return {entry.name for entry in state.iterdir() if entry.is_dir()}


def _billing(
    cells: dict[tuple[object, ...], tuple[object, ...]],
) -> dict[tuple[object, ...], tuple[object, ...]]:
    return {key: value for key, value in cells.items() if key[2] == "billing"}


@pytest.mark.parametrize("pseudonymised", [False, True], ids=["raw-ids-memory", "pseudonymised-rocksdb"])
async def test_erase_through_a_running_worker(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, pseudonymised: bool
) -> None:
    extra = {}
    if pseudonymised:  # the tables hold tokens; the command is given the raw id
        (tmp_path / "pseudonym.key").write_text("7d1e5c3a9b8f4e2d6c0a1b3e5f7d9c8b")
        extra["pseudonym_key_file"] = str(tmp_path / "pseudonym.key")
    # two processes: the helper's erasures reach ClickHouse through the worker. The state is
    # on disk in one run (its files are scanned), in memory in the other
    store = {"store": "rocksdb://"} if pseudonymised else {}
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "data", processes="2", **extra, **store)
    settings = Settings.from_env(env)
    tokens = pseudonyms(settings)
    stored = (lambda raw: raw) if tokens is None else tokens.token
    customer, anonymous, other = stored(CUSTOMER), stored(ANONYMOUS), stored(OTHER)
    changelogs = await _create_changelogs(kafka_bootstrap, settings)
    await ensure_topics(settings)
    stream = _stream()
    lines = [line for line in stream.splitlines() if line]
    await produce(kafka_bootstrap, settings.topic_interactions, [(b"k", line) for line in lines])

    if pseudonymised:
        # a first life of one process keeps every partition's state on disk; in the second
        # the helper takes half of them, and the worker's copies of those must go: the
        # erasure below reaches only the owner's
        first = WorkerProcess({**env, "JOURNEYSTREAM_PROCESSES": "1"}, tmp_path / "worker-first.log")
        first.start()
        try:
            first.wait_ready()
            wait_until_caught_up(first, settings.partitions)
        finally:
            assert first.stop() == 0, f"worker did not stop cleanly; see {first.log_path}"
        assert len(_store_folders(tmp_path / "data" / "state")) == 3 * settings.partitions

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        wait_until_caught_up(worker, settings.partitions)
        held = await _changelog_values(kafka_bootstrap, changelogs)
        assert any(customer.encode() in value for value in held)  # the scan below means something
        assert any(anonymous.encode() in value for value in held)

        erased = await asyncio.to_thread(_run, env, "erase", CUSTOMER, "--timeout", "60")
        assert erased.returncode == 0, erased.stdout + erased.stderr
        assert ": erased" in erased.stdout and "1 merged anonymous ids" in erased.stdout, erased.stdout
        # the customer's state, the merged anonymous key's (a tombstone), the anonymous id's links
        # (the tombstone may be gone already: it is forgotten a day after the merge, in event time)
        assert re.search(r"worker state: [12] states and 1 login-link sets removed", erased.stdout), (
            erased.stdout
        )
        # again, by the id as stored (the token, when pseudonymised): either form is accepted
        again = await asyncio.to_thread(_run, env, "erase", customer, "--timeout", "60")
        assert again.returncode == 0, again.stdout + again.stderr
        assert ": no-op" in again.stdout and "nothing was held for this id" in again.stdout, again.stdout
        parts = "journeystream_erasure_parts_total"
        expected = {
            ("customer", "erased"): 1,
            ("customer", "no-op"): 1,
            ("links", "erased"): 1,
            ("", "failed"): 0,
        }

        def counted() -> dict[tuple[str, str], float]:
            metrics = worker.metrics()
            return {
                (part, outcome): metric_sum(
                    metrics, parts, **({"part": part} if part else {}), outcome=outcome
                )
                for part, outcome in expected
            }

        # a helper's counters reach the worker's /metrics within its report interval (0.5 s)
        wait_for(lambda: counted() == expected, 10, "the erasure parts counted")

        # the erased values leave the changelogs once compacted: segments roll at the next
        # writes after the lag, then the broker's cleaner (every 15 s) compacts them
        deadline, round_ = time.monotonic() + 120, 0
        while True:
            await asyncio.sleep(3)
            round_ += 1
            await produce(kafka_bootstrap, settings.topic_interactions, _traffic(round_))
            values = await _changelog_values(kafka_bootstrap, changelogs)
            left = [v for v in values if customer.encode() in v or anonymous.encode() in v]
            if not left:
                break
            assert time.monotonic() < deadline, f"{len(left)} changelog values still hold the ids: {left[:3]}"
        wait_until_caught_up(worker, settings.partitions)
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    for needle in (customer, anonymous, stored("s-erase-1"), stored("agent-e1")):
        assert _mentions(env, needle) == {}, needle
    data = tmp_path / "data"  # state/ of the worker, process-1/state/ of its helper
    state_files = [f for f in data.rglob("*") if f.is_file() and "state" in f.relative_to(data).parts]
    assert bool(state_files) == pseudonymised  # the RocksDB run only
    if pseudonymised:  # each partition's state in one process only, its owner's
        worker_held, helper_held = (
            _store_folders(data / "state"),
            _store_folders(data / "process-1" / "state"),
        )
        assert worker_held and helper_held and not worker_held & helper_held, (worker_held, helper_held)
    for file in state_files:  # RocksDB's tables, logs and manifests: raw bytes, and hex (its LOG)
        content = file.read_bytes()
        for needle in (customer.encode(), anonymous.encode()):
            assert needle not in content and needle.hex().encode() not in content.lower(), file
    assert _mentions(env, other)  # another customer is untouched
    live_kpis = _billing(kpi_cells(env))
    assert len(live_kpis) >= 5
    assert live_kpis == _billing(
        _replayed_kpis(kafka_bootstrap, f"{unique_name}-replay", tmp_path / "replay", stream, extra)
    )
    digest = hashlib.sha256(customer.encode()).hexdigest()
    recorded = query(
        env, "SELECT id_sha256, id_kind, linked_ids, states_removed, outcome, erased_by FROM {db}.erasures"
    )
    assert sorted((r[0], r[1], r[2], r[3], r[4]) for r in recorded) == [
        (digest, "customer", 0, 0, "no-op"),
        (digest, "customer", 1, 1, "erased"),
    ]
    assert all(f"/{unique_name}/" in r[5] for r in recorded)  # by the worker

    # restarted on the same data dir: nothing of the erased history comes back
    restarted = WorkerProcess(env, tmp_path / "worker-2.log")
    restarted.start()
    try:
        restarted.wait_ready()
        contact = _event(
            99, 16, "phone", "contact_start", attributes={"direction": "inbound"}, customer_id=CUSTOMER
        )
        await produce(kafka_bootstrap, settings.topic_interactions, [(CUSTOMER.encode(), contact)])
        wait_until_caught_up(restarted, settings.partitions)
    finally:
        assert restarted.stop() == 0, f"worker did not stop cleanly; see {restarted.log_path}"
    journeys = query(
        env, "SELECT event_count FROM {db}.journeys FINAL WHERE customer_key = '" + customer + "'"
    )
    assert journeys == [(1,)]
    irritants = query(env, "SELECT kind FROM {db}.irritants FINAL WHERE customer_key = '" + customer + "'")
    assert irritants == []  # no repeat contact: the contacts 6 and 1 minutes before were erased
    assert orjson.loads(contact)["customer_id"] == CUSTOMER
