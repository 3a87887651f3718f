"""Keys are placed as Kafka's Java clients (and aiokafka's default partitioner) place them,
and a batch's outbox puts a watermark after the messages it covers, in every partition."""

from __future__ import annotations

import random
import string

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from journeystream.stages.effects import Effects
from journeystream.stages.envelope import Watermark, unpack
from journeystream.stages.routing import Outbox, Partitioner, envelope_records, murmur2


def test_murmur2_equals_the_java_clients_hash() -> None:
    chance = random.Random(1)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", "é-ü-客户".encode()]
    keys += [
        "".join(chance.choices(string.printable, k=chance.randint(0, 40))).encode() for _ in range(2_000)
    ]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF, key


def test_partitions_equal_the_default_partitioners() -> None:
    default = DefaultPartitioner()
    for partitions in (1, 4, 7, 12):
        place = Partitioner(partitions)
        everything = list(range(partitions))
        for n in range(500):
            key = f"customer-{n}"
            assert place(key) == default(key.encode(), everything, everything)


def test_a_watermark_follows_the_messages_it_covers_in_every_partition() -> None:
    outbox, effects = Outbox(), Effects()
    first, second = Watermark("A0", 10), Watermark("A0", 20)
    outbox.add("t", 1, first)  # stands for any message queued before the announcement
    outbox.announce("t", 3, second)
    outbox.flush_to(effects)
    by_partition = {envelope.partition: envelope.messages for envelope in effects.envelopes}
    assert by_partition == {0: [second], 1: [first, second], 2: [second]}
    records = [record for envelope in effects.envelopes for record in envelope_records(envelope)]
    assert {record.partition: unpack(record.value) for record in records} == by_partition
    assert all(record.topic == "t" and record.key is None for record in records)
