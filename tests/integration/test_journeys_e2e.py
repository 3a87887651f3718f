"""Issue 3's acceptance on the real broker: a simulated stream of 50 000 events from 2 000
customers, with disorder within the allowed lateness and 1% duplicates, gives exactly the
simulator's ground truth in ClickHouse; `replay` of the same file gives the same tables;
killing the worker with SIGKILL at random moments along the way changes nothing, and neither
does killing one of two workers that share the stream."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from journeystream.config import Settings
from journeystream.core.kpis import COUNTER_FIELDS
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import GroundTruth, SimConfig, SimMessage, generate_with_truth, write_jsonl
from journeystream.supervise import WorkerProcess, metric_sum
from tests.integration.helpers import (
    irritants_table,
    journeys_table,
    kpi_cells,
    kpi_cells_union,
    produce,
    union_by_version,
    wait_for,
    wait_until_caught_up,
    worker_env,
)

pytestmark = pytest.mark.integration

EVENTS = 50_000
CUSTOMERS = 2_000
PARTITIONS = 4


@dataclass
class Stream:
    messages: list[SimMessage]
    truth: GroundTruth
    file: Path
    replay_journeys: dict[str, tuple[Any, ...]]
    replay_irritants: dict[str, tuple[Any, ...]]
    replay_kpis: dict[tuple[Any, ...], tuple[Any, ...]]


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """The simulated stream (entirely in the past, so the wall clock has passed every
    deadline), its JSONL file, and what `journeystream replay` makes of that file."""
    folder = tmp_path_factory.mktemp("stream")
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        seed=11,
        customers=CUSTOMERS,
        events=EVENTS,
        start_ms=now_ms - 12 * 86_400_000,
        events_per_second=5.0,
        duplicate_share=0.01,
        max_disorder_ms=4_000,
    )
    messages, truth = generate_with_truth(config)
    assert truth.duplicates >= EVENTS // 200 and len(truth.journeys) > 5_000
    file = folder / "stream.jsonl"
    write_jsonl(messages, file)
    env = {"JOURNEYSTREAM_DATA_DIR": str(folder / "replay")}
    subprocess.run(
        [sys.executable, "-m", "journeystream", "replay", str(file), "--close-until", "now"],
        env={**_os_env(), **env},
        check=True,
        capture_output=True,
        timeout=600,
    )
    return Stream(messages, truth, file, journeys_table(env), irritants_table(env), kpi_cells(env))


class ProbeWhileBusy:
    """Asks /metrics and /ready, with a 1 s timeout, every 0.2 s on a thread of its own."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> ProbeWhileBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _probe(self) -> None:
        while not self._stop.wait(0.2):
            for path in ("/metrics", "/ready"):
                try:
                    status, _ = self.worker.get(path, timeout=1.0)
                except OSError as error:
                    self.failures.append(f"{path}: {error}")
                    continue
                if status not in ((200,) if path == "/metrics" else (200, 503)):  # 503: not ready yet
                    self.failures.append(f"{path}: {status}")
                self.answers += 1


def _applied(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("journeystream_events_applied_total", 0.0)
    except OSError:  # not serving yet (starting, or rejoining the consumer group)
        return 0.0


def _has_applied_or_nothing_left(worker: WorkerProcess, count: int) -> bool:
    try:
        metrics = worker.metrics()
    except OSError:
        return False
    if metrics.get("journeystream_events_applied_total", 0.0) >= count:
        return True
    lags = [value for series, value in metrics.items() if series.startswith("journeystream_consumer_lag{")]
    waiting = sum(lags) + metric_sum(metrics, "journeystream_buffered_items")
    # every input partition reports its lag (four topics of PARTITIONS each) and none waits
    return metrics.get("journeystream_ready") == 1.0 and len(lags) >= 4 * PARTITIONS and waiting == 0


def _serving(worker: WorkerProcess) -> bool:
    try:
        return worker.get("/health")[0] == 200
    except OSError:
        return False


def _has_applied(worker: WorkerProcess, count: int) -> bool:
    return _applied(worker) >= count


def _os_env() -> dict[str, str]:
    return dict(os.environ)


def assert_equals_ground_truth(
    journeys: dict[str, tuple[Any, ...]], irritants: dict[str, tuple[Any, ...]], truth: GroundTruth
) -> None:
    statuses = {journey_id: row[4] for journey_id, row in journeys.items()}
    assert Counter(statuses.values()) == Counter(truth.journeys.values())
    assert statuses == truth.journeys
    kinds = {irritant_id: row[1] for irritant_id, row in irritants.items()}
    assert Counter(kinds.values()) == Counter(truth.irritants.values())
    assert kinds == truth.irritants


@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "2-processes"])
async def test_live_journeys_and_irritants_equal_ground_truth_and_replay(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream, processes: int
) -> None:
    """With JOURNEYSTREAM_PROCESSES=2 the helper takes half the partitions and writes
    through the worker's store; /metrics and /ready speak for both processes."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "data", processes=str(processes))
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    # the whole stream waits in the topic first: a backlog, read in order, never "quiet"
    await produce(kafka_bootstrap, settings.topic_interactions, [(m.key, m.value) for m in stream.messages])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        wait_for(partial(_serving, worker), 120, "the endpoints")  # up before the driver starts
        with ProbeWhileBusy(worker) as probe:
            wait_for(partial(_has_applied, worker, EVENTS * 9 // 10), 300, "most of the stream applied")
        # the endpoints answered within 1 s while the worker worked through its backlog
        assert probe.answers >= 5 and probe.failures == [], probe.failures
        worker.wait_ready()
        wait_until_caught_up(worker, PARTITIONS)
        metrics = worker.metrics()
        assert metrics.get("journeystream_events_late_total") == 0.0
        assert metric_sum(metrics, "journeystream_state_bytes") > 100_000  # 2 000 customers' states
        assert {series for series in metrics if series.startswith("journeystream_open_journeys")} == {
            f'journeystream_open_journeys{{partition="{p}"}}' for p in range(PARTITIONS)
        }
        assert len(worker.helper_pids()) == processes - 1
        assert orjson.loads(worker.get("/ready")[1])["processes"] == processes
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    journeys, irritants = journeys_table(env), irritants_table(env)
    assert_equals_ground_truth(journeys, irritants, stream.truth)
    assert journeys == stream.replay_journeys  # every column, every journey
    assert irritants == stream.replay_irritants
    assert_kpis_match(kpi_cells(env), stream)


def _consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("journeystream_events_consumed_total", 0.0)
    except OSError:
        return 0.0


def _kill_at_random_moment(worker: WorkerProcess, moment: str, chance: random.Random) -> str:
    """SIGKILL the worker at a moment of the kind named; returns what happened."""
    started = time.monotonic()
    if moment == "starting":  # within the first 3 s: joining the group, restoring, first batches
        time.sleep(chance.uniform(0.2, 3.0))
    elif moment == "before-first-commit":  # its partitions are assigned, its first batches read
        worker.wait_ready(timeout=120)  # assigned and consuming; the first checkpoint comes >= 1 s later
        time.sleep(chance.uniform(0.0, 0.4))
    else:  # mid-stream (of the worker or of its helper), once a random share is applied
        target = chance.randint(2_000, 15_000)
        # or less, when the lives before left less to do (two processes often do)
        reached = partial(_has_applied_or_nothing_left, worker, target)
        wait_for(reached, 180, f"{target} applied events, or nothing left", interval=0.05)
        time.sleep(chance.uniform(0.0, 2.0))  # anywhere in the checkpoint cycle, not only after one
    applied, consumed, checkpoints = _applied(worker), _consumed(worker), _checkpoints(worker)
    helpers = worker.helper_pids()
    if moment == "helper":  # a helper dies: the worker stops by itself, non-zero
        os.kill(helpers[0], signal.SIGKILL)
        assert worker.wait(120) == 1, f"the worker went on without its helper; see {worker.log_path}"
    else:  # the worker dies: the kernel kills its helpers at once
        assert worker.kill() == -9
        wait_for(lambda: not any(_alive(pid) for pid in helpers), 10, "the helpers to die with the worker")
    seconds = time.monotonic() - started
    return (
        f"{moment}: {seconds:.1f}s after start, {consumed:.0f} consumed, {applied:.0f} applied, "
        f"{checkpoints:.0f} checkpoints"
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended, not reaped yet


def _checkpoints(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("journeystream_checkpoint_seconds_count", 0.0)
    except OSError:
        return 0.0


@pytest.mark.crash
@pytest.mark.parametrize(
    ("processes", "store"),
    [(1, "memory://"), (2, "memory://"), (2, "rocksdb://")],
    ids=["1-process", "2-processes", "2-processes-rocksdb"],
)
async def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream, processes: int, store: str
) -> None:
    """Default settings (dynamic group membership): four kills, at start, before the first
    commit, and mid-stream twice, then a run to the end. Every table equals the ground truth
    and the replay. With two processes the last kill is the helper's (the worker then stops
    by itself), the others the worker's (its helper dies with it). With RocksDB every life
    starts from the stores the killed one left on disk (only their changelog tail is read),
    and deletes the copies of partitions that went to the other process."""
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "data", processes=str(processes), store=store)
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    await produce(kafka_bootstrap, settings.topic_interactions, [(m.key, m.value) for m in stream.messages])
    seed = int(os.environ.get("JOURNEYSTREAM_TEST_CRASH_SEED", str(random.randrange(10**6))))
    print(f"crash seed {seed} (JOURNEYSTREAM_TEST_CRASH_SEED repeats it)")
    chance = random.Random(seed)
    moments = ["starting", "before-first-commit", "mid-stream", "mid-stream" if processes == 1 else "helper"]
    for moment in moments:
        worker = WorkerProcess(env, tmp_path / "worker.log")
        worker.start()
        print("kill", _kill_at_random_moment(worker, moment, chance))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    started = time.monotonic()
    worker.start()
    try:
        # the last killed worker may have applied and committed everything: this one may
        # have nothing left to apply, so it is timed to readiness, then to caught up
        worker.wait_ready(timeout=120)
        print(f"last run: ready {time.monotonic() - started:.1f}s after start")
        wait_until_caught_up(worker, PARTITIONS)
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    journeys, irritants = journeys_table(env), irritants_table(env)
    assert_equals_ground_truth(journeys, irritants, stream.truth)
    assert journeys == stream.replay_journeys
    assert irritants == stream.replay_irritants
    assert_kpis_match(kpi_cells(env), stream)


@pytest.mark.crash
async def test_two_workers_one_killed_mid_stream_their_union_equals_ground_truth(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream
) -> None:
    """Two workers share the consumer group, each with its own embedded ClickHouse; one is
    killed mid-stream and the other takes its partitions over. What they stored together
    equals the ground truth and the replay."""
    envs = [worker_env(kafka_bootstrap, unique_name, tmp_path / f"data{n}") for n in range(2)]
    settings = Settings.from_env(envs[0])
    await ensure_topics(settings)
    await produce(kafka_bootstrap, settings.topic_interactions, [(m.key, m.value) for m in stream.messages])
    workers = [WorkerProcess(env, tmp_path / f"worker{n}.log") for n, env in enumerate(envs)]
    for worker in workers:
        worker.start()
    survivor = workers[1]
    try:
        # the one that got going first is killed: the other may have had the group to
        # itself for a few seconds and left its later partitions little to do
        wait_for(lambda: any(_has_applied(w, 3_000) for w in workers), 180, "a worker's first applied events")
        victim = next(w for w in workers if _has_applied(w, 3_000))
        survivor = workers[1 - workers.index(victim)]
        assert victim.kill() == -9
        assert _applied(survivor) < EVENTS, "the stream was over before the kill"
        wait_until_caught_up(survivor, PARTITIONS)
    finally:
        for worker in workers:
            if worker is not survivor:
                worker.kill()  # when the wait failed: nothing left behind
        assert survivor.stop() == 0, f"worker did not stop cleanly; see {survivor.log_path}"

    journeys = union_by_version([journeys_table(env) for env in envs], version_column=16)
    irritants = {key: row for env in envs for key, row in irritants_table(env).items()}
    assert_equals_ground_truth(journeys, irritants, stream.truth)
    assert journeys == stream.replay_journeys
    assert irritants == stream.replay_irritants
    assert_kpis_match(kpi_cells_union(envs), stream)


def assert_kpis_match(live: dict[tuple[Any, ...], tuple[Any, ...]], stream: Stream) -> None:
    """The live KPI cells equal the replay's, cell by cell, and their totals equal the
    ground truth: distinct events, journeys by closing status, irritants by kind."""
    assert live == stream.replay_kpis
    assert_kpi_totals_equal_truth(live, stream.truth)


def assert_kpi_totals_equal_truth(cells: dict[tuple[Any, ...], tuple[Any, ...]], truth: GroundTruth) -> None:
    totals = [sum(column) for column in list(zip(*cells.values(), strict=True))[: len(COUNTER_FIELDS)]]
    total = dict(zip(COUNTER_FIELDS, totals, strict=True))
    assert total["events"] == truth.distinct_event_ids
    assert total["journeys_started"] == len(truth.journeys)
    for status, count in Counter(truth.journeys.values()).items():
        assert total[f"journeys_{status}"] == count, status
    for kind, count in Counter(truth.irritants.values()).items():
        assert total[f"irritant_{kind}"] == count, kind


def test_replay_alone_equals_ground_truth(stream: Stream) -> None:
    assert_equals_ground_truth(stream.replay_journeys, stream.replay_irritants, stream.truth)
    assert_kpi_totals_equal_truth(stream.replay_kpis, stream.truth)
