"""A worker of several processes (JOURNEYSTREAM_PROCESSES): the stages are Python under one
GIL, so a second core needs a second process.

The first process (the worker) owns the ClickHouse store (the embedded one belongs to one
process), the endpoints and the helpers. Each helper is a whole stream driver (runtime/
driver.py): a member of the consumer group with its own partitions, stores
(DATA_DIR/process-N), producer, checkpoint and alert runner. Its ClickHouse work (row
batches, erasures, alert queries) goes to the worker over a pipe and is answered once done
there, so a helper's checkpoint keeps its order: rows durable, then records and changelogs,
then its offsets. Every half second a helper sends its metrics and readiness; the worker's
/metrics and /ready show the sum of all processes.

Failure: a helper that dies stops the worker (a non-zero exit, and the supervisor starts it
again, like any crashed worker); a worker that dies takes its helpers with it (the kernel
kills them, PR_SET_PDEATHSIG), so no helper writes on after its store is gone. What they had
not committed, their partitions' next owners read again.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from journeystream.config import Settings
from journeystream.core.alerts import Rule
from journeystream.errors import SinkClosedError
from journeystream.sinks.batch import Batch
from journeystream.sinks.clickhouse import ClickHouseWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

START_TIMEOUT_S = 120.0  # a helper's imports and settings, on a slow machine
STOP_TIMEOUT_S = 120.0  # a helper's last checkpoint, then leaving the group
PR_SET_PDEATHSIG = 1

# Gauges that do not add up across processes (every other series is a sum: counters and
# histograms by nature, gauges because each partition is reported by its owner only).
_LOWEST = frozenset({"journeystream_ready"})
_HIGHEST = frozenset({"journeystream_alert_evaluated_seconds"})


HELPER_DIR = "process-"  # DATA_DIR/process-N: helper N's data dir


def helper_settings(settings: Settings, index: int) -> Settings:
    """A helper's settings: its own stores, its own static membership id (when set)."""
    return dataclasses.replace(
        settings,
        data_dir=str(Path(settings.data_dir) / f"{HELPER_DIR}{index}"),
        group_instance_id=f"{settings.group_instance_id}-{index}" if settings.group_instance_id else "",
    )


def remove_retired_helpers(data_dir: Path, processes: int) -> list[str]:
    """Delete the data dirs of helpers this worker no longer has (JOURNEYSTREAM_PROCESSES
    lowered since the last start): their RocksDB copies would keep states erased since.
    Returns the folders' names."""
    removed = []
    for entry in data_dir.glob(f"{HELPER_DIR}*"):
        number = entry.name.removeprefix(HELPER_DIR)
        if entry.is_dir() and number.isdigit() and int(number) >= processes:
            shutil.rmtree(entry)
            removed.append(entry.name)
    return sorted(removed)


# ---- in the worker -------------------------------------------------------------------------


class Helpers:
    """The worker's helper processes: started, served and stopped from the worker."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter, rules: Sequence[Rule]) -> None:
        self.settings = settings
        self.writer = writer
        self.rules = tuple(rules)
        self.count = settings.processes - 1
        self.reports: dict[int, tuple[list[Metric], dict[str, Any]]] = {}
        self.on_lost: Callable[[str], None] = lambda reason: None
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._hellos = {index: threading.Event() for index in range(1, self.count + 1)}

    def start(self) -> None:
        """Spawned, not forked: the worker holds threads, an event loop and the store."""
        context = multiprocessing.get_context("spawn")
        for index in range(1, self.count + 1):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=run_helper,
                args=(helper_settings(self.settings, index), index, theirs, self.rules, os.getpid()),
                name=f"journeystream-process-{index}",
            )
            process.start()
            theirs.close()
            thread = threading.Thread(target=self._serve, args=(index, ours, process), name=f"helper-{index}")
            thread.daemon = True
            thread.start()
            self._processes.append(process)
            self._threads.append(thread)
        log.info(
            "started %d helper processes: %s", self.count, ", ".join(str(p.pid) for p in self._processes)
        )

    def wait_started(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every helper has reached the worker (its imports done, its driver next): the
        worker's own consumer joins the group then, so that most processes join the same
        generation rather than one rebalance each."""
        for hello in self._hellos.values():
            hello.wait(timeout)

    def stop(self) -> None:
        """Each helper checkpoints and leaves the group (a SIGTERM, as for the worker), its
        last rows still written through this process; then the worker stops its own driver."""
        self._stopping = True
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self._processes:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                log.error("helper process %s did not stop in %.0fs; killed", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.join()
        for thread in self._threads:
            thread.join(5.0)

    def readiness(self) -> list[dict[str, Any]]:
        """Each helper's last reported readiness (not ready until it has reported)."""
        return [
            self.reports[i][1] if i in self.reports else {"ready": False} for i in range(1, self.count + 1)
        ]

    def families(self) -> list[list[Metric]]:
        return [families for families, _ in list(self.reports.values())]

    def _serve(
        self, index: int, connection: Connection, process: multiprocessing.process.BaseProcess
    ) -> None:
        """One helper's requests, one at a time, on this thread; the store work itself runs on
        the writer's thread, after or before the worker's own."""
        while True:
            try:
                kind, payload = connection.recv()
            except (EOFError, OSError):
                break
            try:
                reply: tuple[str, Any] = ("ok", self._handle(index, kind, payload))
            except Exception as exc:  # the helper raises it where it asked
                reply = ("error", exc)
            try:
                connection.send(reply)
            except (EOFError, OSError):
                break
            except Exception as exc:  # an answer or error that does not pickle
                connection.send(("error", SinkClosedError(f"{type(exc).__name__}: {exc}")))
        connection.close()
        self._hellos[index].set()  # a helper that died before its first request: no wait for it
        process.join(5.0)
        if not self._stopping:
            reason = f"helper process {process.pid} ended (exit code {process.exitcode})"
            log.error("%s; stopping the worker", reason)
            self.on_lost(reason)

    def _handle(self, index: int, kind: str, payload: Any) -> Any:
        writer = self.writer
        if kind == "write":
            batch: Batch = payload
            return writer.call(lambda client: writer.insert(client, batch))
        if kind == "run":
            return writer.call(payload)
        if kind == "database":  # a helper's first request
            self._hellos[index].set()
            return writer.database
        if kind == "report":
            self.reports[index] = payload
            return None
        raise ValueError(f"unknown request {kind!r}")


class MergedMetrics(CollectorRegistry):
    """The worker's registry and its helpers' last reports as one registry for /metrics."""

    def __init__(self, registry: CollectorRegistry, helpers: Helpers) -> None:
        super().__init__()
        self.own = registry
        self.helpers = helpers

    def collect(self) -> Iterator[Metric]:
        yield from merge([list(self.own.collect()), *self.helpers.families()])


def merge(sources: Iterable[Iterable[Metric]]) -> list[Metric]:
    """Families of the same name from several processes as one: samples with the same name
    and labels summed (lowest or highest for the gauges in `_LOWEST` and `_HIGHEST`, the
    earliest `_created`), in the order they first appear."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                known = merged.get(key)
                merged[key] = (
                    sample.value if known is None else _combine(family.name, sample.name, known, sample.value)
                )
    for name, family in families.items():
        family.samples = [
            Sample(sample, dict(labels), value) for (sample, labels), value in values[name].items()
        ]
    return list(families.values())


def _combine(family: str, sample: str, known: float, value: float) -> float:
    if family in _LOWEST or sample.endswith("_created"):
        return min(known, value)
    if family in _HIGHEST:
        return max(known, value)
    return known + value


def merged_readiness(own: dict[str, Any], helpers: list[dict[str, Any]]) -> dict[str, Any]:
    everyone = [own, *helpers]
    return {
        "ready": all(part.get("ready", False) for part in everyone),
        "sink_failing": any(part.get("sink_failing", False) for part in everyone),
        "pending_rows": sum(int(part.get("pending_rows", 0)) for part in everyone),
        "processes": len(everyone),
    }


# ---- in a helper ---------------------------------------------------------------------------


class RemoteWriter:
    """A helper's store: each call is sent to the worker and answered once done there.
    One call at a time, from a thread of its own (the event loop never waits on the pipe)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-proxy")
        self.database = str(self.call_remote("database", None))

    def call_remote(self, kind: str, payload: Any) -> Any:
        try:
            self._connection.send((kind, payload))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # before anything is sent
            raise TypeError(
                f"{kind}: cannot go to the worker process ({exc}); pass with_client(function, ...)"
            ) from exc
        except OSError as exc:
            raise SinkClosedError(f"the worker process is gone: {exc}") from exc
        try:
            status, value = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise SinkClosedError(f"the worker process is gone: {exc}") from exc
        if status == "error":
            raise value
        return value

    async def write(self, batch: Batch) -> None:
        await self._in_thread("write", batch)

    async def run(self, function: Callable[[Any], T]) -> T:
        result: T = await self._in_thread("run", function)
        return result

    async def report(self, families: list[Metric], readiness: dict[str, Any]) -> None:
        await self._in_thread("report", (families, readiness))

    async def _in_thread(self, kind: str, payload: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.call_remote, kind, payload)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._connection.close()


def run_helper(
    settings: Settings, index: int, connection: Connection, rules: Sequence[Rule], parent: int
) -> None:
    """A helper process's entry point (spawned by `Helpers.start`)."""
    _die_with(parent)
    from mode import Worker

    from journeystream.metrics import Metrics
    from journeystream.runtime.app import WorkerService

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    writer = RemoteWriter(connection)
    service = WorkerService(
        settings, writer, Metrics(CollectorRegistry()), rules, reporter=writer, process=index
    )
    worker = Worker(service, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        writer.close()
    raise SystemExit(1 if service.failed else 0)


def _die_with(parent: int) -> None:
    """Ask the kernel for a SIGKILL when the worker dies (Linux), and make sure it has not
    died already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's end stops the helper instead
        log.warning("helper process: no PR_SET_PDEATHSIG here; it ends when it next reaches the worker")
    if os.getppid() != parent:
        os._exit(1)
