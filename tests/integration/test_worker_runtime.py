"""The worker's runtime on the real broker: the allowed lateness it is given is the one it
applies; its data dir is created; a broker that never answers ends start-up with one line
and a non-zero exit; building the processors of a large state does not cost the worker its
place in the group; a checkpoint starts once enough customers changed, whatever the interval."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.core import journeys as journeys_module
from journeystream.core.journeys import JourneyEngine
from journeystream.core.state import CustomerState
from journeystream.metrics import Metrics
from journeystream.runtime.assignment import Assignment
from journeystream.runtime.changelog import CHECKPOINT_MARKER, marker_value, restore
from journeystream.runtime.driver import StreamDriver
from journeystream.runtime.producer import Producer
from journeystream.runtime.store import MemoryBackend, PartitionStore
from journeystream.runtime.topics import changelog_topic, ensure_topics
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.store import StoreTarget, migrate
from journeystream.stages.effects import OutputRecord
from journeystream.stages.journeys import CUSTOMERS, KPI_CELLS
from journeystream.supervise import WorkerProcess, free_port_pair, metric_sum
from tests.integration.helpers import consume_all, produce, wait_for, worker_env

pytestmark = pytest.mark.integration


def _event(n: int, at_ms: int, customer: str = "C-late") -> bytes:
    seconds, millis = divmod(at_ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    return orjson.dumps(
        {
            "event_id": f"{customer}-{n}",
            "occurred_at": stamp,
            "customer_id": customer,
            "channel": "web",
            "type": "page_view",
            "journey": "claim",
            "attributes": {"page": "/claim"},
        }
    )


async def test_the_configured_lateness_is_applied_and_the_data_dir_is_created(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    env = worker_env(
        kafka_bootstrap,
        unique_name,
        data_dir,
        allowed_lateness_ms="60000",
        partitions="1",
        clickhouse_dsn=f"chdb://{tmp_path / 'clickhouse'}",  # elsewhere: the data dir is not made by it
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    # the third event is 30 s behind the second: late with the default 5 s, in order with 60 s
    events = [_event(1, base), _event(2, base + 40_000), _event(3, base + 10_000)]
    await produce(kafka_bootstrap, settings.topic_interactions, [(b"C-late", value) for value in events])

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()

        def applied_all() -> bool:
            return metric_sum(worker.metrics(), "journeystream_events_applied_total") >= 3

        wait_for(applied_all, 60, "three applied events")  # the quiet partition's clock moves on
        metrics = worker.metrics()
        assert metrics["journeystream_events_late_total"] == 0.0
        assert metric_sum(metrics, "journeystream_stage_late_items") == 0.0
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"
    assert data_dir.is_dir()


def test_an_unreachable_broker_ends_start_up_with_one_line(tmp_path: Path) -> None:
    port = free_port_pair()  # nothing listens there
    env = {
        **os.environ,
        **worker_env(f"127.0.0.1:{port}", "unreachable", tmp_path / "data"),
    }
    command = [sys.executable, "-m", "journeystream", "worker"]
    # retried with backoff, then given up: a hang would hit the timeout
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"journeystream: Kafka broker unreachable at 127.0.0.1:{port} after ")


SESSION_TIMEOUT_MS = 6_000  # the broker's group.min.session.timeout.ms
SLOW_BUILD_S = 9.0  # longer than the session: what 1 000 000 stored customers take


async def _drive(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, done: Callable[[Metrics], bool]
) -> tuple[list[TopicPartition], StreamDriver]:
    """Run a stream driver in this process until `done`, then a session timeout more (a
    lost membership shows by then); the partitions it built, in order."""
    builds: list[TopicPartition] = []
    build = Assignment.build

    def counted_build(assignment: Assignment, tp: TopicPartition) -> None:
        builds.append(tp)
        build(assignment, tp)

    monkeypatch.setattr(Assignment, "build", counted_build)
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    writer.call(lambda client: migrate(client, settings, writer.database))
    metrics = Metrics(CollectorRegistry())
    driver = StreamDriver(settings, writer, metrics)
    await driver.start()
    running = asyncio.create_task(driver.run())
    try:
        deadline = time.monotonic() + 120
        while not done(metrics):
            assert time.monotonic() < deadline, "not done within 120 s"
            assert not running.done(), "the driver stopped"
            await asyncio.sleep(0.5)
        await asyncio.sleep(SESSION_TIMEOUT_MS / 1000)
    finally:
        await driver.stop()
        await running
        writer.close()
    return builds, driver


def _built_once(builds: list[TopicPartition], driver: StreamDriver) -> None:
    assert len(builds) == len(set(builds)), f"partitions built more than once: {sorted(builds)}"
    topology = driver.topology
    topics = {topology.interactions, topology.control, topology.by_device, topology.by_customer}
    assert {tp.topic for tp in builds} == topics


async def test_a_build_longer_than_the_session_timeout_happens_once_and_the_worker_goes_on(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a journey partition's processors from a large store blocks whatever thread
    does it for seconds. Done in the rebalance listener (no heartbeats are sent there), it
    cost the worker its membership, and the rejoin built everything again, in a loop."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, kafka_session_timeout_ms=str(SESSION_TIMEOUT_MS))
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    customers = [f"C-{n}" for n in range(40)]
    events = [(c.encode(), _event(n, base + n * 1_000, c)) for c in customers for n in range(3)]
    await produce(kafka_bootstrap, settings.topic_interactions, events)

    slowed: list[TopicPartition] = []
    build = Assignment.build

    def slow_build(assignment: Assignment, tp: TopicPartition) -> None:
        if tp.topic == assignment.topology.by_customer and not slowed:
            slowed.append(tp)
            time.sleep(SLOW_BUILD_S)  # holds its thread, as indexing a large store does
        build(assignment, tp)

    monkeypatch.setattr(Assignment, "build", slow_build)

    def applied_all(metrics: Metrics) -> bool:
        return metrics.registry.get_sample_value("journeystream_events_applied_total") == len(events)

    builds, driver = await _drive(settings, monkeypatch, applied_all)
    _built_once(builds, driver)


FIRE_S = 0.03  # per customer whose deadline fires (a real one: ~30 microseconds)
STARTS = 300  # 9 s of firing at once: longer than the session


async def test_deadlines_longer_than_the_session_timeout_fire_in_steps_and_the_worker_goes_on(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watermark that jumps (here the quiet partitions' clock, an hour on) makes every
    stored customer's deadline due at once; fired in one call, a million of them held the
    loop past the session timeout. The engine fires them in steps the loop turns between."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, kafka_session_timeout_ms=str(SESSION_TIMEOUT_MS))
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    starts = []
    for n in range(STARTS):
        event = orjson.loads(_event(0, base + n, f"S-{n}"))
        starts.append((f"S-{n}".encode(), orjson.dumps({**event, "type": "journey_start"})))
    await produce(kafka_bootstrap, settings.topic_interactions, starts)

    fire_due = JourneyEngine._fire_due

    def slow_fire_due(engine: JourneyEngine, state: CustomerState, before: int) -> None:
        if state.journeys and before - state.latest > 600_000:  # the jump's, not an event's own
            time.sleep(FIRE_S)
        fire_due(engine, state, before)

    monkeypatch.setattr(JourneyEngine, "_fire_due", slow_fire_due)
    monkeypatch.setattr(journeys_module, "CHECK_EVERY", 4)  # deadlines this slow: asked more often

    def all_closed(metrics: Metrics) -> bool:
        value = metrics.registry.get_sample_value
        closed = sum(
            value("journeystream_journeys_closed_total", {"status": s}) or 0.0
            for s in ("abandoned", "expired")
        )
        return closed == STARTS

    builds, driver = await _drive(settings, monkeypatch, all_closed)
    _built_once(builds, driver)


async def test_a_restore_undoes_a_checkpoint_cut_short_in_the_changelog(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A kill while a checkpoint's records are written leaves their first batches in the
    changelog without the marker that ends them. The next restore applies what the last
    marker ends and writes the earlier values over the rest; a later restore agrees and
    undoes nothing more."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, partitions="1")
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    topic = changelog_topic(settings, KPI_CELLS)
    options = {"bootstrap_servers": kafka_bootstrap}
    finished = [(b"cell", b"1"), (b"mark", b"m1"), (CHECKPOINT_MARKER, marker_value(1))]
    cut_short = [(b"cell", b"2"), (b"other", b"x")]  # the marks of this checkpoint never came
    kafka_producer = AIOKafkaProducer(**options, enable_idempotence=True)
    await kafka_producer.start()
    stores = []
    try:
        producer = Producer(kafka_producer)
        written = [OutputRecord(topic, key, value, 0) for key, value in finished + cut_short]
        await asyncio.gather(*await producer.send_tracked(written))
        for _ in range(2):
            stores.append(PartitionStore(KPI_CELLS, 0, MemoryBackend()))
            await restore([stores[-1:]], partial(changelog_topic, settings), options, producer.send_tracked)
    finally:
        await kafka_producer.stop()
    assert [dict(store.items()) for store in stores] == [{b"cell": b"1", b"mark": b"m1"}] * 2
    log = await consume_all(kafka_bootstrap, topic, 8)
    assert [(record.key, record.value) for record in log[5:]] == [
        (b"cell", b"1"),
        (b"other", None),
        (CHECKPOINT_MARKER, marker_value(1)),
    ]
    consumer = AIOKafkaConsumer(**options)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, 0)])
    finally:
        await consumer.stop()
    assert ends[TopicPartition(topic, 0)] == 8  # the second restore undid nothing


async def test_a_restore_brings_the_kpi_cells_back_to_the_checkpoint_the_customer_states_finished(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A kill between the KPI cells' changelog and the customer states' (each acknowledged
    before the next) leaves the cells one checkpoint ahead: the facts of that checkpoint
    come again from the older customer states, maybe in another order. The restore undoes
    the cells' checkpoint in the log too, so the next worker counts those facts once."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, partitions="1")
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    cells_topic, customers_topic = changelog_topic(settings, KPI_CELLS), changelog_topic(settings, CUSTOMERS)
    options = {"bootstrap_servers": kafka_bootstrap}
    cells_log = [
        (b"cell", b"v1"),
        (b"mark", b"seq1"),
        (CHECKPOINT_MARKER, marker_value(1)),
        (b"cell", b"v2"),  # checkpoint 2: finished for the cells...
        (b"new-cell", b"v1"),
        (CHECKPOINT_MARKER, marker_value(2)),
    ]
    customers_log = [(b"c1", b"state1"), (CHECKPOINT_MARKER, marker_value(1))]  # ...not here
    kafka_producer = AIOKafkaProducer(**options, enable_idempotence=True)
    await kafka_producer.start()
    restores = []
    try:
        producer = Producer(kafka_producer)
        written = [OutputRecord(cells_topic, key, value, 0) for key, value in cells_log]
        written += [OutputRecord(customers_topic, key, value, 0) for key, value in customers_log]
        await asyncio.gather(*await producer.send_tracked(written))
        for _ in range(2):
            group = [PartitionStore(name, 0, MemoryBackend()) for name in (CUSTOMERS, KPI_CELLS)]
            await restore([group], partial(changelog_topic, settings), options, producer.send_tracked)
            restores.append(group)
    finally:
        await kafka_producer.stop()
    for customers, cells in restores:
        assert dict(customers.items()) == {b"c1": b"state1"}
        assert dict(cells.items()) == {b"cell": b"v1", b"mark": b"seq1"}
        assert cells.checkpoint == customers.checkpoint == 1  # the next checkpoint is 2 for both
    log = await consume_all(kafka_bootstrap, cells_topic, 9)
    assert [(record.key, record.value) for record in log[6:]] == [
        (b"cell", b"v1"),
        (b"new-cell", None),
        (CHECKPOINT_MARKER, marker_value(1)),
    ]
    assert len(await consume_all(kafka_bootstrap, customers_topic, 2)) == 2  # nothing to undo there


async def test_a_first_checkpoint_cut_short_is_undone_not_taken_for_a_log_from_before_markers(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """The first restore of a partition finds its logs empty and starts them with a marker
    (checkpoint 0). A kill in the middle of the first checkpoint then leaves records after
    that marker, which the next restore undoes: without it, a log holding only the first
    batches of KPI cells looked like one from before markers and was applied as it stood."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, partitions="1")
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    cells_topic = changelog_topic(settings, KPI_CELLS)
    options = {"bootstrap_servers": kafka_bootstrap}
    kafka_producer = AIOKafkaProducer(**options, enable_idempotence=True)
    await kafka_producer.start()
    try:
        producer = Producer(kafka_producer)

        async def restored() -> list[PartitionStore]:
            group = [PartitionStore(name, 0, MemoryBackend()) for name in (CUSTOMERS, KPI_CELLS)]
            await restore([group], partial(changelog_topic, settings), options, producer.send_tracked)
            return group

        first = await restored()
        cut_short = [OutputRecord(cells_topic, key, b"counts", 0) for key in (b"cell-a", b"cell-b")]
        await asyncio.gather(*await producer.send_tracked(cut_short))  # then the kill
        second = await restored()
    finally:
        await kafka_producer.stop()
    assert [store.checkpoint for store in first] == [0, 0]
    assert [dict(store.items()) for store in second] == [{}, {}]
    log = await consume_all(kafka_bootstrap, cells_topic, 6)
    assert [(record.key, record.value) for record in log] == [
        (CHECKPOINT_MARKER, marker_value(0)),
        (b"cell-a", b"counts"),
        (b"cell-b", b"counts"),
        (b"cell-a", None),
        (b"cell-b", None),
        (CHECKPOINT_MARKER, marker_value(0)),
    ]


def _series(worker: WorkerProcess, names: tuple[str, ...]) -> set[str]:
    """The labelled series of `names` the worker reports (one per partition it owns)."""
    return {series for series in worker.metrics() if series.split("{", 1)[0] in names and "{" in series}


async def test_a_worker_that_gives_partitions_up_stops_reporting_their_gauges(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A second worker joins the group and takes half the partitions: the first one's lag,
    reorder-buffer and state gauges for them go away (stale series were summed into every
    dashboard: lag that no worker had), and the two report disjoint partitions."""
    envs = [worker_env(kafka_bootstrap, unique_name, tmp_path / f"data{n}") for n in range(2)]
    settings = Settings.from_env(envs[0])
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    customers = [f"C-{n}" for n in range(40)]  # every partition of every stage gets some
    await produce(
        kafka_bootstrap,
        settings.topic_interactions,
        [(c.encode(), _event(0, base + n, c)) for n, c in enumerate(customers)],
    )
    names = (
        "journeystream_consumer_lag",
        "journeystream_buffered_items",
        "journeystream_watermark_seconds",
        "journeystream_open_journeys",
        "journeystream_state_customers",
        "journeystream_kpi_cells",
    )
    first, second = (WorkerProcess(env, tmp_path / f"worker{n}.log") for n, env in enumerate(envs))
    first.start()
    try:
        first.wait_ready()
        wait_for(
            lambda: len(_series(first, ("journeystream_open_journeys",))) == 4,
            120,
            "all four journey partitions",
        )
        everything = _series(first, names)
        second.start()
        try:
            second.wait_ready()

            def split() -> bool:
                ours, theirs = _series(first, names), _series(second, names)
                return bool(ours) and bool(theirs) and not ours & theirs and ours | theirs == everything

            wait_for(split, 60, "the two workers to report disjoint partitions, all of them between them")
        finally:
            assert second.stop() == 0, f"worker did not stop cleanly; see {second.log_path}"
    finally:
        assert first.stop() == 0, f"worker did not stop cleanly; see {first.log_path}"


async def test_a_checkpoint_starts_once_the_customers_changed_reach_their_bound(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """With both checkpoint intervals at 10 minutes and the rows' bound out of reach, the
    customers changed since the last checkpoint start one: a backlog of new customers is
    written (and its customers can leave memory) before the interval ends."""
    env = worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "data",
        partitions="1",
        sink_flush_ms="600000",
        checkpoint_backlog_ms="600000",
        sink_batch_rows="1000000",
        checkpoint_customers="100",
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    base = int(time.time() * 1000) - 3_600_000
    customers = [f"C-{n}" for n in range(1_000)]  # one event each, a second apart
    await produce(
        kafka_bootstrap,
        settings.topic_interactions,
        [(c.encode(), _event(0, base + n * 1000, c)) for n, c in enumerate(customers)],
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()

        def written() -> bool:
            # rows are written first in a checkpoint and the checkpoint counted once it is
            # all done (states, offsets): both, each in its own time
            metrics = worker.metrics()
            rows = metric_sum(metrics, "journeystream_sink_rows_total", table="interaction_events")
            return rows >= 100 and metric_sum(metrics, "journeystream_checkpoint_seconds_count") >= 1

        wait_for(written, 90, "rows written by a checkpoint the changed customers started, and it done")
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"
