"""A worker of several processes: their metrics merged for /metrics and /ready, a helper's
settings, and the pipe through which a helper's store calls reach the worker's writer."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from journeystream.config import Settings
from journeystream.errors import ConfigError, SinkClosedError
from journeystream.metrics import Metrics
from journeystream.runtime.driver import StreamDriver
from journeystream.runtime.processes import (
    Helpers,
    MergedMetrics,
    RemoteWriter,
    helper_settings,
    merge,
    merged_readiness,
    remove_retired_helpers,
)
from journeystream.sinks.batch import Batch
from journeystream.sinks.clickhouse import with_client
from journeystream.supervise import parse_metrics


def _process_metrics(partitions: list[int], applied: int, ready: int, evaluated: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.on_applied(applied)
    metrics.on_flushed("journeys", applied, 0.2)
    for partition in partitions:
        metrics.consumer_lag.labels("t.interactions", str(partition)).set(10 * partition)
    metrics.ready.set(ready)
    metrics.alert_evaluated.set(evaluated)
    return registry


def test_merged_metrics_sum_counters_and_histograms_and_keep_each_partition_from_its_owner() -> None:
    own = _process_metrics([0, 2], applied=100, ready=1, evaluated=0.0)
    helper = _process_metrics([1, 3], applied=50, ready=0, evaluated=1_700_000_000.0)

    merged = parse_metrics(generate_latest(_merged(own, [helper])).decode())

    assert merged["journeystream_events_applied_total"] == 150.0
    assert merged['journeystream_sink_rows_total{table="journeys"}'] == 150.0
    assert merged['journeystream_sink_flush_seconds_count{table="journeys"}'] == 2.0
    assert merged['journeystream_sink_flush_seconds_bucket{le="0.25",table="journeys"}'] == 2.0
    lags = {
        series: value for series, value in merged.items() if series.startswith("journeystream_consumer_lag")
    }
    assert lags == {
        f'journeystream_consumer_lag{{partition="{p}",topic="t.interactions"}}': 10.0 * p for p in range(4)
    }
    assert merged["journeystream_ready"] == 0.0  # the worker is ready when all its processes are
    assert merged["journeystream_alert_evaluated_seconds"] == 1_700_000_000.0  # the leader's


def test_merged_metrics_without_a_report_yet_are_the_worker_s_own() -> None:
    own = _process_metrics([0], applied=7, ready=1, evaluated=0.0)
    assert parse_metrics(generate_latest(_merged(own, [])).decode()) == parse_metrics(
        generate_latest(own).decode()
    )


def _merged(own: CollectorRegistry, helpers: list[CollectorRegistry]) -> CollectorRegistry:
    merged = CollectorRegistry()
    for family in merge([list(own.collect()), *(list(h.collect()) for h in helpers)]):
        merged.register(_Fixed(family))
    return merged


class _Fixed:
    def __init__(self, family: Any) -> None:
        self.family = family

    def collect(self) -> list[Any]:
        return [self.family]


def test_the_worker_registry_exposes_its_helpers_reports() -> None:
    own = _process_metrics([0], applied=5, ready=1, evaluated=0.0)
    helpers = Helpers(_settings(processes="2"), writer=None, rules=())  # type: ignore[arg-type]
    helpers.reports[1] = (
        list(_process_metrics([1], applied=6, ready=1, evaluated=0.0).collect()),
        {"ready": True},
    )
    merged = parse_metrics(generate_latest(MergedMetrics(own, helpers)).decode())
    assert merged["journeystream_events_applied_total"] == 11.0
    assert merged["journeystream_ready"] == 1.0


def test_readiness_needs_every_process() -> None:
    own = {"ready": True, "sink_failing": False, "pending_rows": 3}
    assert merged_readiness(own, [{"ready": True, "sink_failing": False, "pending_rows": 4}]) == {
        "ready": True,
        "sink_failing": False,
        "pending_rows": 7,
        "processes": 2,
    }
    assert not merged_readiness(own, [{"ready": False}])["ready"]  # a helper not reported yet
    assert merged_readiness(own, [{"ready": True, "sink_failing": True, "pending_rows": 0}])["sink_failing"]


def _settings(**values: str) -> Settings:
    return Settings.from_env({f"JOURNEYSTREAM_{key.upper()}": value for key, value in values.items()})


def test_a_helper_has_its_own_stores_and_membership_id() -> None:
    settings = _settings(processes="3", data_dir="/var/lib/js", group_instance_id="pod-0")
    second = helper_settings(settings, 2)
    assert second.data_dir == str(Path("/var/lib/js") / "process-2")
    assert second.group_instance_id == "pod-0-2"
    assert helper_settings(_settings(processes="2"), 1).group_instance_id == ""  # dynamic stays dynamic
    assert second.clickhouse_dsn == settings.clickhouse_dsn  # one store, owned by the worker


def test_the_data_of_helpers_a_worker_no_longer_has_is_deleted(tmp_path: Path) -> None:
    """JOURNEYSTREAM_PROCESSES lowered from 4 to 2: helpers 2 and 3 are gone, and their
    RocksDB copies with them (an erasure would never reach them again)."""
    for number in (1, 2, 3):
        (tmp_path / f"process-{number}" / "state" / "customers-0").mkdir(parents=True)
    (tmp_path / "state" / "customers-1").mkdir(parents=True)  # the worker's own
    (tmp_path / "process-notes").mkdir()  # not a helper's
    assert remove_retired_helpers(tmp_path, processes=2) == ["process-2", "process-3"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["process-1", "process-notes", "state"]
    assert remove_retired_helpers(tmp_path / "missing", processes=1) == []


@pytest.mark.parametrize("text", ["0", "65", "two"])
def test_processes_out_of_range_stop_start_up(text: str) -> None:
    with pytest.raises(Exception, match="JOURNEYSTREAM_PROCESSES"):
        _settings(processes=text)


class _Store:
    """The worker's writer as the serving thread sees it: calls run on the caller's thread."""

    database = "journeys_db"

    def __init__(self) -> None:
        self.inserted: list[tuple[str, list[Any]]] = []

    def call(self, function: Any) -> Any:
        return function("client")

    def insert(self, client: str, batch: Batch) -> None:
        if batch.table == "broken":
            raise ValueError("Code: 60. Table journeys_db.broken does not exist")
        self.inserted.append((client, batch.data))


def _count_rows(client: str, table: str, factor: int) -> str:
    return f"{client}:{table}:{factor}"


async def test_a_helper_s_store_calls_are_carried_out_by_the_worker_s_writer() -> None:
    store = _Store()
    helpers = Helpers(_settings(processes="2"), store, ())  # type: ignore[arg-type]
    ours, theirs = multiprocessing.Pipe()
    serving = threading.Thread(target=helpers._serve, args=(1, ours, _Ended()), daemon=True)
    serving.start()
    remote = RemoteWriter(theirs)
    try:
        assert remote.database == "journeys_db"
        batch = Batch("journeys", ["id", "n"], ["id"])
        batch.append(("j1", 1))
        await remote.write(batch)
        assert store.inserted == [("client", [["j1"], [1]])]
        assert await remote.run(with_client(_count_rows, "kpi_minute", 3)) == "client:kpi_minute:3"
        broken = Batch("broken", ["id"], ["id"])
        broken.append(("x",))
        with pytest.raises(ValueError, match="does not exist"):  # the sink retries it, with backoff
            await remote.write(broken)
        with pytest.raises(TypeError, match="with_client"):  # a lambda does not pickle: said at once
            await remote.run(lambda client: client)
        await remote.report([], {"ready": True})
        assert helpers.readiness() == [{"ready": True}]
    finally:
        remote.close()
    serving.join(5)
    assert not serving.is_alive()


async def test_a_helper_whose_worker_is_gone_gets_an_error_not_a_hang() -> None:
    ours, theirs = multiprocessing.Pipe()
    ours.send(("ok", "journeys_db"))  # the answer to the helper's first request
    remote = RemoteWriter(theirs)
    assert ours.recv() == ("database", None)
    ours.close()  # the worker's end, as when it dies
    batch = Batch("journeys", ["id"], ["id"])
    batch.append(("j1",))
    try:
        with pytest.raises(SinkClosedError, match="the worker process is gone"):
            await asyncio.wait_for(remote.write(batch), 5)
    finally:
        remote.close()


class _Ended:
    """A helper process that has ended (what `_serve` joins once its pipe closes)."""

    pid = 4242
    exitcode = 0

    def join(self, timeout: float | None = None) -> None:
        pass


def test_a_batch_travels_as_its_columns_and_token() -> None:
    batch = Batch("journeys", ["id", "n", "at"], ["id", "at"])
    for n in range(3):
        batch.append((f"j{n}", n, 1_700_000_000_000 + n))
    copy = pickle.loads(pickle.dumps(batch))
    assert (copy.table, copy.columns, copy.key_columns) == (batch.table, batch.columns, batch.key_columns)
    assert copy.data == [["j0", "j1", "j2"], [0, 1, 2], [1_700_000_000_000 + n for n in range(3)]]
    assert copy.token() == batch.token() and len(copy) == 3


def test_more_processes_than_partitions_stop_start_up_with_one_line() -> None:
    with pytest.raises(ConfigError, match="JOURNEYSTREAM_PROCESSES=5: more than JOURNEYSTREAM_PARTITIONS=4"):
        _settings(processes="5", partitions="4")
    assert _settings(processes="4", partitions="4").processes == 4


async def test_a_member_given_no_partitions_is_ready_not_stuck_rebalancing() -> None:
    """More members than partitions (workers or processes): the idle one is ready, so the
    worker's /ready does not wait for it forever."""
    driver = StreamDriver(_settings(), cast(Any, None), Metrics(CollectorRegistry()))
    driver.consuming = True
    assert not driver.is_ready()  # before its first assignment
    await driver.assigned(set())
    assert driver.is_ready()


def test_a_helper_that_ends_before_reaching_the_worker_does_not_hold_its_start() -> None:
    """E.g. an import error in the helper: the worker goes on (and stops, told by on_lost)
    instead of waiting START_TIMEOUT_S for a hello that never comes."""
    helpers = Helpers(_settings(processes="2"), _Store(), ())  # type: ignore[arg-type]
    lost: list[str] = []
    helpers.on_lost = lost.append
    ours, theirs = multiprocessing.Pipe()
    theirs.close()
    serving = threading.Thread(target=helpers._serve, args=(1, ours, _Ended()), daemon=True)
    serving.start()
    waiting = threading.Thread(target=helpers.wait_started, daemon=True)
    waiting.start()
    waiting.join(5)
    assert not waiting.is_alive()
    serving.join(5)
    assert lost == ["helper process 4242 ended (exit code 0)"]
