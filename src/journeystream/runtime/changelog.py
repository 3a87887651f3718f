"""Restoring stores from their changelog partitions, in batches, from the offset each
store already holds to the end of the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from journeystream.runtime.store import PartitionStore

log = logging.getLogger(__name__)

RESTORE_BATCH = 20_000


async def restore(
    stores: Sequence[PartitionStore], changelog_topic: Callable[[str], str], client_options: dict[str, Any]
) -> None:
    if not stores:
        return
    started = time.monotonic()
    by_tp = {TopicPartition(changelog_topic(store.name), store.partition): store for store in stores}
    consumer = AIOKafkaConsumer(
        **client_options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    read = 0
    try:
        tps = list(by_tp)
        consumer.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        todo = set()
        for tp, store in by_tp.items():
            start = store.backend.next_offset()
            if start > ends[tp]:
                log.warning("%s: the local store is ahead of its changelog (recreated?); rebuilding it", tp)
                store.backend.clear()
                start = 0
            start = max(start, beginnings[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo.add(tp)
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=RESTORE_BATCH)
            for tp, records in batches.items():
                by_tp[tp].restored(((r.key, r.value) for r in records), records[-1].offset + 1)
                read += len(records)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    by_tp[tp].restored((), ends[tp])
                    todo.discard(tp)
    finally:
        await consumer.stop()
    log.info(
        "restored %s: %d changelog records in %.2fs",
        ", ".join(f"{store.name}-{store.partition}" for store in stores),
        read,
        time.monotonic() - started,
    )
