"""Carrying out the parts of erasure requests this worker's stages did (stages/control.py):
the primary part's ClickHouse rows are deleted and the request recorded in `erasures`
(by the process that owns the store: a helper process sends the work to it), then every part is
reported on the control topic. The checkpoint calls this once the parts' state changes
(tombstones on the changelogs) are durable, before it commits the offsets that read them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from journeystream.erasure import ErasureReport, erase_rows, record
from journeystream.runtime.producer import Producer
from journeystream.sinks.clickhouse import StoreAccess, with_client
from journeystream.stages.control import control_record, report_value
from journeystream.stages.effects import ErasurePart

log = logging.getLogger(__name__)


def worker_name(app_id: str) -> str:
    return f"{socket.gethostname()}/{app_id}/{os.getpid()}"


class Eraser:
    def __init__(
        self,
        writer: StoreAccess,
        producer: Producer,
        topic: str,
        worker: str,
        on_part: Callable[[str, str], None] = lambda part, outcome: None,
    ) -> None:
        self.writer = writer
        self.producer = producer
        self.topic = topic
        self.worker = worker
        self.on_part = on_part  # (part, outcome: erased, no-op or failed)

    async def carry_out(self, parts: Sequence[ErasurePart]) -> None:
        records = [control_record(self.topic, part, await self._report(part)) for part in parts]
        await self.producer.send(records)
        await self.producer.drain()

    async def _report(self, part: ErasurePart) -> bytes:
        if not part.primary:
            self.on_part(part.part, "erased" if part.existed else "no-op")
            return report_value(part, self.worker)
        try:
            report = await self.writer.run(with_client(erase_part, self.writer.database, part, self.worker))
        except Exception as exc:  # reported (the command exits non-zero); a new request retries
            log.error("erasure %s: ClickHouse rows not erased: %s", part.request, exc)
            self.on_part(part.part, "failed")
            return report_value(part, self.worker, error=f"ClickHouse rows not erased: {exc}")
        log.info("erasure %s: %s", part.request, report.lines()[0])
        self.on_part(part.part, "failed" if report.outcome == "incomplete" else report.outcome)
        return report_value(
            part, self.worker, report.rows_removed, report.rows_left, report.linked_anonymous_ids
        )


def erase_part(client: Any, database: str, part: ErasurePart, worker: str) -> ErasureReport:
    """Delete one erasure part's ClickHouse rows and record the report (on the store's thread)."""
    if part.customer_id is not None:
        report = erase_rows(client, database, part.customer_id, anonymous=False, merged=part.anonymous_ids)
    else:
        report = erase_rows(client, database, part.anonymous_ids[0], anonymous=True)
    report.states_removed = int(part.existed)
    report.worker_state = f"erased by {worker}"
    report.worker_complete = True
    report.erased_by = worker
    record(client, database, report)
    return report
