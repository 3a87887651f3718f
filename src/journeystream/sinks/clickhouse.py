"""The ClickHouse writer behind the batching sink.

clickhouse-connect is synchronous and a chDB session should stay on the thread that opened
it, so the client is opened, used and closed on one dedicated thread; the event loop never
blocks on the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from journeystream.sinks.batch import Batch
from journeystream.sinks.store import StoreTarget, connect

T = TypeVar("T")


class ClickHouseWriter:
    def __init__(self, target: StoreTarget) -> None:
        self.database = target.database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = self._thread.submit(connect, target).result()

    def call(self, function: Callable[[Any], T]) -> T:
        """Run `function(client)` on the store thread and wait for it (for setup and tests)."""
        return self._thread.submit(function, self._client).result()

    async def run(self, function: Callable[[Any], T]) -> T:
        """Run `function(client)` on the store thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, self._client)

    async def write(self, batch: Batch) -> None:
        await self.run(lambda client: self._insert(client, batch))

    def _insert(self, client: Any, batch: Batch) -> None:
        client.insert(
            f"{self.database}.{batch.table}",
            batch.data,
            column_names=list(batch.columns),
            column_oriented=True,
            settings={"insert_deduplication_token": batch.token()},
        )

    def close(self) -> None:
        self.call(lambda client: client.close())
        self._thread.shutdown(wait=True)
