"""The ClickHouse writer behind the batching sink.

clickhouse-connect is synchronous and a chDB session should stay on the thread that opened
it, so the client is opened, used and closed on one dedicated thread; the event loop never
blocks on the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

from journeystream.sinks.batch import Batch
from journeystream.sinks.store import StoreTarget, connect

T = TypeVar("T")


class StoreAccess(Protocol):
    """What the runtime needs of the store: the embedded or server writer in the process that
    owns it, or a helper process's proxy to that writer (runtime/processes.py)."""

    database: str

    async def write(self, batch: Batch) -> None: ...

    async def run(self, function: Callable[[Any], T]) -> T: ...


def with_client(function: Callable[..., T], *args: Any) -> Callable[[Any], T]:
    """`function(client, *args)` as a one-argument call that pickles (`function` defined at
    module level): a helper process sends it to the process that owns the store."""
    return partial(_call, function, args)


def _call(function: Callable[..., T], args: tuple[Any, ...], client: Any) -> T:
    return function(client, *args)


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
        await self.run(lambda client: self.insert(client, batch))

    def insert(self, client: Any, batch: Batch) -> None:
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
