"""The worker process: faust-streaming's service layer (mode) runs the stream driver as a
service with its lifecycle, signals and timers; the HTTP endpoints have their own thread.

Faust's agents, tables and web server are not used: the hot path is batch at a time on
aiokafka (runtime/driver.py), and the endpoints must answer while a batch holds the loop.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from mode import Service

from journeystream.config import Settings
from journeystream.core.alerts import Rule
from journeystream.metrics import Metrics
from journeystream.process import tune_gc
from journeystream.runtime.driver import StreamDriver
from journeystream.runtime.http import HttpEndpoints
from journeystream.sinks.clickhouse import ClickHouseWriter

log = logging.getLogger(__name__)

GAUGES_S = 2.0


class WorkerService(Service):
    def __init__(
        self,
        settings: Settings,
        writer: ClickHouseWriter,
        metrics: Metrics,
        rules: Sequence[Rule] = (),
        client_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.driver = StreamDriver(settings, writer, metrics, rules, client_options)
        self.http = HttpEndpoints(settings.http_host, settings.http_port, metrics.registry, self.readiness)
        self.failed = False
        super().__init__(**kwargs)

    def readiness(self) -> dict[str, Any]:
        driver = self.driver
        return {
            "ready": driver.is_ready(),
            "sink_failing": driver.sink.failing,
            "pending_rows": driver.sink.pending_rows,
        }

    async def on_start(self) -> None:
        tune_gc()
        self.http.start()
        try:
            await self.driver.start()
        except Exception:
            self.failed = True
            raise

    async def on_stop(self) -> None:
        await self.driver.stop()
        self.http.stop()

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

    @Service.task
    async def _alerts(self) -> None:
        interval = self.settings.alert_eval_ms / 1000
        while not self.should_stop:
            await self.sleep(interval)
            await self.driver.evaluate_alerts()
