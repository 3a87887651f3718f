"""The batching sink: size and age bounds, retries without loss or duplicates, backpressure,
acks only after durability — against a scripted writer, then against real embedded ClickHouse."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from journeystream.config import Settings
from journeystream.errors import SinkClosedError
from journeystream.sinks.batch import Batch
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.sink import BatchingSink, TableSpec
from journeystream.sinks.store import StoreTarget, migrate

TABLE = TableSpec("t", ("id", "value"), key_columns=("id",))


class ScriptedWriter:
    """Records what was written; fails the first `failures` attempts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.written: list[tuple[str, list[object], str]] = []

    async def write(self, batch: Batch) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store down")
        self.written.append((batch.table, list(batch.data[0]), batch.token()))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_sink(writer: ScriptedWriter, clock: FakeClock | None = None, max_rows: int = 3) -> BatchingSink:
    return BatchingSink(
        writer, [TABLE], max_rows=max_rows, max_age_s=1.0, max_backoff_s=0.01, clock=clock or FakeClock()
    )


async def test_flushes_when_full() -> None:
    writer = ScriptedWriter()
    sink = make_sink(writer)
    for i in range(2):
        sink.add("t", (i, "v"))
        await sink.maybe_flush()
    assert writer.written == []
    sink.add("t", (2, "v"))
    await sink.maybe_flush()
    assert [ids for _, ids, _ in writer.written] == [[0, 1, 2]]
    assert sink.pending_rows == 0


async def test_flushes_when_old_enough() -> None:
    clock = FakeClock()
    writer = ScriptedWriter()
    sink = make_sink(writer, clock, max_rows=100)
    sink.add("t", (1, "v"))
    clock.now = 0.999
    await sink.maybe_flush()
    assert writer.written == []
    clock.now = 1.0  # the age bound is reached exactly
    await sink.maybe_flush()
    assert [ids for _, ids, _ in writer.written] == [[1]]


async def test_failed_write_is_retried_with_the_same_token_and_callbacks_wait() -> None:
    writer = ScriptedWriter(failures=3)
    sink = make_sink(writer)
    acked: list[int] = []

    async def ack() -> None:
        acked.append(1)

    sink.add("t", (1, "a"))
    sink.after_flush(ack)
    await sink.flush()
    assert writer.attempts == 4
    assert len(writer.written) == 1  # written once, after the failures
    assert acked == [1]
    assert not sink.failing


async def test_callbacks_run_only_after_the_rows_before_them_are_written() -> None:
    writer = ScriptedWriter(failures=2)
    sink = make_sink(writer, max_rows=100)
    order: list[str] = []

    async def ack() -> None:
        order.append(f"ack after {len(writer.written)} writes")

    sink.add("t", (1, "a"))
    sink.after_flush(ack)
    await sink.flush()
    assert order == ["ack after 1 writes"]


async def test_each_table_is_reported_once_its_rows_are_written_in_order() -> None:
    """What depends on one table (an event's raw row being queryable) is told before the
    later tables are written; a table without rows is reported too, in its place."""
    tables = [TableSpec(name, ("id", "value"), key_columns=("id",)) for name in ("a", "b", "c")]
    log: list[str] = []

    class LoggingWriter(ScriptedWriter):
        async def write(self, batch: Batch) -> None:
            await super().write(batch)
            log.append(f"write:{batch.table}")

    sink = BatchingSink(LoggingWriter(), tables, max_rows=10, max_age_s=1.0, clock=FakeClock())
    sink.add("c", (1, "v"))
    sink.add("a", (2, "v"))
    await sink.flush(lambda table: log.append(f"written:{table}"))
    assert log == ["write:a", "written:a", "written:b", "write:c", "written:c"]


async def test_backpressure_while_the_store_is_down() -> None:
    """While a flush is failing, the next maybe_flush waits instead of letting rows pile up."""
    writer = ScriptedWriter(failures=10_000)
    sink = make_sink(writer, max_rows=2)
    sink.add("t", (1, "a"))
    sink.add("t", (2, "b"))
    first = asyncio.create_task(sink.maybe_flush())
    await asyncio.sleep(0.05)
    assert not first.done() and sink.failing
    sink.add("t", (3, "c"))
    sink.add("t", (4, "d"))
    second = asyncio.create_task(sink.maybe_flush())
    await asyncio.sleep(0.05)
    assert not second.done()  # blocked behind the failing flush: the caller stops consuming
    writer.failures = 0  # the store comes back
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [ids for _, ids, _ in writer.written] == [[1, 2], [3, 4]]


async def test_closed_sink_refuses_rows() -> None:
    sink = make_sink(ScriptedWriter())
    sink.add("t", (1, "a"))
    await sink.close()
    with pytest.raises(SinkClosedError):
        sink.add("t", (2, "b"))


def test_token_depends_on_row_keys() -> None:
    first, second, third = (
        Batch("t", ("id", "v"), ("id",)),
        Batch("t", ("id", "v"), ("id",)),
        Batch("t", ("id", "v"), ("id",)),
    )
    first.append((1, "x"))
    second.append((1, "y"))  # same key, other value: same row identity
    third.append((2, "x"))
    assert first.token() == second.token() != third.token()


async def test_real_embedded_clickhouse_writes_each_row_once(tmp_path: Path) -> None:
    """A batch written twice (a retry after an unknown outcome) lands once."""
    settings = Settings.from_env({"JOURNEYSTREAM_DATA_DIR": str(tmp_path)})
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        batch = Batch(
            "rejected_events",
            (
                "topic",
                "kafka_partition",
                "kafka_offset",
                "kafka_key",
                "kafka_timestamp",
                "reason_code",
                "reason",
                "size_bytes",
                "excerpt",
                "rejected_at",
            ),
            ("topic", "kafka_partition", "kafka_offset"),
        )
        now_ms = 1_900_000_000_000 - 1  # inside the retention window for decades
        for offset in range(1000):
            batch.append(("in", 0, offset, None, now_ms, "not_json", "bad", 3, "abc", now_ms))
        await writer.write(batch)
        await writer.write(batch)
        rows = writer.call(
            lambda c: (
                c.query(
                    f"SELECT count(), uniqExact(kafka_offset) FROM {writer.database}.rejected_events"
                ).result_rows
            )
        )
        assert rows == [(1000, 1000)]
    finally:
        writer.close()


async def test_rows_added_together_are_written_like_rows_added_one_by_one() -> None:
    one_by_one, together = ScriptedWriter(), ScriptedWriter()
    rows = [("t", (f"id{n}", n)) for n in range(5)]
    first = BatchingSink(one_by_one, [TableSpec("t", ("id", "v"), ("id",))], max_rows=100, max_age_s=60)
    second = BatchingSink(together, [TableSpec("t", ("id", "v"), ("id",))], max_rows=100, max_age_s=60)
    for table, row in rows:
        first.add(table, row)
    second.add_many(rows)
    assert first.pending_rows == second.pending_rows == 5
    await first.flush()
    await second.flush()
    assert one_by_one.written == together.written


def test_inserts_into_embedded_clickhouse_leave_pandas_unimported(tmp_path: Path) -> None:
    """clickhouse-connect imports pandas on the first insert (is the data a DataFrame?) unless
    told it is absent (sinks/store.py): 0.15-0.7 s under the GIL and ~43 MB per process. In a
    fresh interpreter, since this one may have imported pandas already."""
    script = f"""
import asyncio, sys
from journeystream.config import Settings
from journeystream.sinks.batch import Batch
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.store import StoreTarget, migrate
settings = Settings.from_env({{"JOURNEYSTREAM_DATA_DIR": {str(tmp_path)!r}}})
writer = ClickHouseWriter(StoreTarget.from_settings(settings))
writer.call(lambda client: migrate(client, settings, writer.database))
batch = Batch("rejected_events", ("topic", "kafka_partition", "kafka_offset", "kafka_key",
    "kafka_timestamp", "reason_code", "reason", "size_bytes", "excerpt", "rejected_at"),
    ("topic", "kafka_partition", "kafka_offset"))
batch.append(("in", 0, 1, None, 1_900_000_000_000, "not_json", "bad", 3, "abc", 1_900_000_000_000))
asyncio.run(writer.write(batch))
count = writer.call(lambda c: c.query(f"SELECT count() FROM {{writer.database}}.rejected_events").result_rows)
writer.close()
print(count, "pandas" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[-2] == "[(1,)] False", done.stdout + done.stderr
