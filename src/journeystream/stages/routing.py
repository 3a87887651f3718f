"""Which partition of an internal topic a key belongs to, and the per-batch outbox that
groups a batch's messages into one envelope per destination partition.

Keys are placed as Kafka's Java clients place them (murmur2, positive, modulo the
partition count), so the state of a customer key always lives in the same partition of
the by-customer topic and of its changelogs, whichever producer wrote the input.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable

from journeystream.stages.effects import Effects, Envelope, OutputRecord
from journeystream.stages.envelope import Message, Watermark, encode_envelopes

_CACHE_LIMIT = 1_000_000


class _Words(dict[int, Callable[[bytes], tuple[int, ...]]]):
    """Number of whole words -> a reader of that many little-endian 32-bit words."""

    def __missing__(self, count: int) -> Callable[[bytes], tuple[int, ...]]:
        reader = self[count] = struct.Struct(f"<{count}I").unpack_from
        return reader


_WORDS = _Words()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for k in _WORDS[length >> 2](data) if length >= 4 else ():
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


class Partitioner:
    """Key -> partition, remembered (customers come back; murmur2 in Python is not free)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        partition = self._known.get(key)
        if partition is None:
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            partition = self._known[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
        return partition


class Outbox:
    """Messages of one processed batch, grouped by destination (topic, partition)."""

    def __init__(self) -> None:
        self._messages: defaultdict[tuple[str, int], list[Message]] = defaultdict(list)

    def add(self, topic: str, partition: int, message: Message) -> None:
        self._messages[(topic, partition)].append(message)

    def announce(self, topic: str, partitions: int, watermark: Watermark) -> None:
        """A watermark goes to every partition, after the messages already queued there."""
        for partition in range(partitions):
            self._messages[(topic, partition)].append(watermark)

    def flush_to(self, effects: Effects) -> None:
        for (topic, partition), messages in sorted(self._messages.items()):
            effects.envelopes.append(Envelope(topic, partition, messages))
        self._messages.clear()


def envelope_records(envelope: Envelope) -> list[OutputRecord]:
    """The records an envelope travels in (cut at the size limit)."""
    topic, partition = envelope.topic, envelope.partition
    return [OutputRecord(topic, None, value, partition) for value in encode_envelopes(envelope.messages)]
