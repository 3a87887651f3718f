"""Producing a checkpoint's records a batch per partition (aiokafka's batch API), never
awaiting a record at a time. Futures are kept until the checkpoint drains them: a record
counts as written only once the broker acknowledged it."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from journeystream.stages.effects import OutputRecord
from journeystream.stages.routing import murmur2

BATCH_BYTES = 512 * 1024  # below the broker's default 1 MiB per batch, even uncompressed


class Producer:
    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._inflight: list[asyncio.Future[Any]] = []
        self._partition_counts: dict[str, int] = {}
        self._round_robin = itertools.count()

    async def send(self, records: Iterable[OutputRecord]) -> None:
        """Queue records (grouped into one batch per partition); drain() waits for them."""
        self._inflight.extend(await self.send_tracked(records))

    async def send_tracked(self, records: Iterable[OutputRecord]) -> list[asyncio.Future[Any]]:
        """Queue records; returns the futures of their batches, in order per partition
        (each resolves to the RecordMetadata of its batch's first record)."""
        records = list(records)
        for topic in {record.topic for record in records if record.partition is None}:
            await self._learn_partitions(topic)
        grouped: defaultdict[tuple[str, int], list[OutputRecord]] = defaultdict(list)
        for record in records:
            grouped[(record.topic, self._partition(record))].append(record)
        futures = []
        for (topic, partition), group in grouped.items():
            batch = self._producer.create_batch()
            for record in group:
                headers = list(record.headers) if record.headers else []
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
                    futures.append(await self._producer.send_batch(batch, topic, partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures

    async def drain(self) -> None:
        """Wait until every record queued by send() is acknowledged; raises if one failed."""
        inflight, self._inflight = self._inflight, []
        if inflight:
            await asyncio.gather(*inflight)

    async def _learn_partitions(self, topic: str) -> None:
        if topic not in self._partition_counts:
            self._partition_counts[topic] = len(await self._producer.partitions_for(topic))

    def _partition(self, record: OutputRecord) -> int:
        if record.partition is not None:
            return record.partition
        count = self._partition_counts[record.topic]
        if record.key is None:
            return next(self._round_robin) % count
        return (murmur2(record.key) & 0x7FFFFFFF) % count  # as Kafka's Java clients place keys
