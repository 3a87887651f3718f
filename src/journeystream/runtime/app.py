"""The worker process: faust-streaming's service layer (mode) runs the stream driver as a
service with its lifecycle, signals and timers; the HTTP endpoints have their own thread.
With JOURNEYSTREAM_PROCESSES > 1 the same service runs in each helper process, without
endpoints, reporting its metrics to the worker (runtime/processes.py).

Faust's agents, tables and web server are not used: the hot path is batch at a time on
aiokafka (runtime/driver.py), and the endpoints must answer while a batch holds the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from mode import Service

from journeystream.config import Settings
from journeystream.core.alerts import Rule
from journeystream.metrics import Metrics
from journeystream.process import tune_gc
from journeystream.runtime.driver import StreamDriver
from journeystream.runtime.http import HttpEndpoints
from journeystream.runtime.processes import Helpers, MergedMetrics, RemoteWriter, merged_readiness
from journeystream.sinks.clickhouse import StoreAccess

log = logging.getLogger(__name__)

GAUGES_S = 2.0
READY_WATCH_S = 0.2
REPORT_S = 0.5  # a helper's counters in the worker's /metrics are at most this old (gauges: GAUGES_S)


class WorkerService(Service):
    def __init__(
        self,
        settings: Settings,
        writer: StoreAccess,
        metrics: Metrics,
        rules: Sequence[Rule] = (),
        client_options: dict[str, Any] | None = None,
        helpers: Helpers | None = None,
        reporter: RemoteWriter | None = None,
        process: int = 0,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.driver = StreamDriver(settings, writer, metrics, rules, client_options, process)
        self.helpers = helpers  # the worker's helper processes, when it has some
        self.reporter = reporter  # in a helper: where its metrics and readiness go
        self.http: HttpEndpoints | None = None
        if reporter is None:
            exposed = metrics.registry if helpers is None else MergedMetrics(metrics.registry, helpers)
            self.http = HttpEndpoints(settings.http_host, settings.http_port, exposed, self.readiness)
        self.failed = False
        self._reported_ready = False
        self._reported_at = 0.0
        super().__init__(**kwargs)

    def own_readiness(self) -> dict[str, Any]:
        driver = self.driver
        return {
            "ready": driver.is_ready(),
            "sink_failing": driver.sink.failing,
            "pending_rows": driver.sink.pending_rows,
        }

    def readiness(self) -> dict[str, Any]:
        """/ready: every process of the worker ready, its sinks' rows summed."""
        helpers = self.helpers.readiness() if self.helpers is not None else []
        return merged_readiness(self.own_readiness(), helpers)

    async def on_start(self) -> None:
        tune_gc()
        if self.helpers is not None:
            self.helpers.on_lost = self._helper_lost
            self.helpers.start()  # from this thread: a helper dies with the thread that made it
            await asyncio.to_thread(self.helpers.wait_started)
        if self.http is not None:
            self.http.start()
        try:
            await self.driver.start()
        except Exception:
            self.failed = True
            raise

    async def on_stop(self) -> None:
        if self.helpers is not None:  # their last rows go through this process's store
            # and the partitions they give up as they leave the group are not taken over
            # (restored, read) by a worker on its way out: it checkpoints and stops first
            await self.driver.finish()
            await asyncio.to_thread(self.helpers.stop)
        await self.driver.stop()
        if self.reporter is not None:
            await self._report()
        if self.http is not None:
            self.http.stop()

    def _helper_lost(self, reason: str) -> None:
        """From a helper's serving thread: the worker stops as a whole (non-zero exit)."""
        self.failed = True
        os.kill(os.getpid(), signal.SIGTERM)

    @Service.task
    async def _run(self) -> None:
        try:
            await self.driver.run()
        except Exception:
            log.exception("the stream driver failed; stopping (the next start reads from the last commit)")
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own orderly stop

    @Service.timer(GAUGES_S)
    async def _gauges(self) -> None:
        await self.driver.update_gauges()
        if self.reporter is not None:
            await self._report()

    @Service.timer(READY_WATCH_S)
    async def _ready_watch(self) -> None:
        """In a helper: a change of readiness is reported at once (the worker's /ready waits
        for every process), the counters every REPORT_S (a report costs ~1 ms)."""
        if self.reporter is None:
            return
        changed = self.driver.is_ready() != self._reported_ready
        if changed or time.monotonic() - self._reported_at >= REPORT_S:
            await self._report()

    async def _report(self) -> None:
        assert self.reporter is not None
        readiness = self.own_readiness()
        try:
            await self.reporter.report(list(self.metrics.registry.collect()), readiness)
        except Exception as exc:  # the worker is gone or stopping: the helper stops with it
            log.warning("metrics not reported to the worker: %s", exc)
            return
        self._reported_ready = bool(readiness["ready"])
        self._reported_at = time.monotonic()

    @Service.task
    async def _alerts(self) -> None:
        interval = self.settings.alert_eval_ms / 1000
        while not self.should_stop:
            await self.sleep(interval)
            await self.driver.evaluate_alerts()
