"""The worker's stage processors in process, without Kafka or ClickHouse: stage A on 4 input
partitions, B and C on 4 partitions each, every internal envelope encoded to bytes and
unpacked again (as over the internal topics), and a checkpoint every CHECKPOINT_BATCHES
batches (collect, state changes into dict stores). What the worker's main thread does
per event, less aiokafka, the sink and the event loop.

`run()`: events per second, the median of REPEATS runs (min and max too), with batches
and checkpoints sized like the end-to-end bench's (2 500 records per partition and batch,
a checkpoint every ~40 000 events, as every 5 s of a backlog).

`python -m bench.stages digest [events customers seed]` prints a sha256 over every row,
record, internal envelope and state change, in order: two trees that print the same digest
(with the same PYTHONHASHSEED) produced byte-identical outputs. Simulated with invalid
messages, duplicates and disorder; `HORIZON_MS` / `STEP_S` shorten the KPI horizon and
lengthen the checkpoint interval so that KPI cells are evicted and late facts refused.
"""

from __future__ import annotations

import gc
import hashlib
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

from journeystream.core.config import RulesConfig
from journeystream.process import tune_gc
from journeystream.simulate import SimConfig, generate
from journeystream.stages.effects import Effects, InputRecord
from journeystream.stages.identity import IdentityProcessor
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.journeys import JourneyProcessor
from journeystream.stages.routing import Partitioner, envelope_records
from journeystream.stages.topology import Topology

PARTITIONS = 4
EVENTS = 100_000
CUSTOMERS = 10_000
REPEATS = 3
BATCH = int(os.environ.get("BATCH", 2_500))  # records per input partition and batch
CHECKPOINT_BATCHES = int(os.environ.get("CK", 16))
HORIZON_MS = int(os.environ.get("HORIZON_MS", 6 * 3_600_000))
STEP_S = float(os.environ.get("STEP_S", 1.0))  # monotonic seconds between checkpoints
_T0 = 1_767_225_600_000


def build(events: int, customers: int, seed: int) -> list[list[InputRecord]]:
    """The simulator's messages, each input partition's in order (placed by key)."""
    config = SimConfig(
        seed=seed,
        customers=customers,
        events=events,
        start_ms=_T0,
        events_per_second=50.0,
        invalid_share=0.01,
        duplicate_share=0.02,
        max_disorder_ms=20_000,
    )
    place = Partitioner(PARTITIONS)
    inputs: list[list[InputRecord]] = [[] for _ in range(PARTITIONS)]
    for message in generate(config):
        partition = place(message.key.decode()) if message.key else 0
        inputs[partition].append(InputRecord(len(inputs[partition]), _T0, message.key, message.value))
    return inputs


def drive(inputs: list[list[InputRecord]], digest: bool) -> tuple[str, float]:
    """(sha256 of every output if `digest`, seconds spent)."""
    topology = Topology("in", "rejected", "by-device", "by-customer", "journeys", "irritants", PARTITIONS)
    rules = RulesConfig()
    stores: dict[tuple[str, int], dict[bytes, bytes]] = {}

    def loader(partition: int) -> Callable[[str, bytes], bytes | None]:
        return lambda store, key: stores.get((store, partition), {}).get(key)

    ingest = IngestProcessor(topology, rules.allowed_lateness_ms)
    identity = [IdentityProcessor(p, topology, loader(p)) for p in range(PARTITIONS)]
    journeys = [JourneyProcessor(p, topology, rules, HORIZON_MS, loader(p)) for p in range(PARTITIONS)]
    queues: dict[tuple[str, int], deque[InputRecord]] = {}
    offsets: dict[tuple[str, int], int] = {}
    hashed = hashlib.sha256()
    effects = Effects()
    stamp, now_s = _T0 + 3_600_000, 0.0

    def emit() -> None:
        taken = effects.take()
        if digest:
            for table, row in taken.rows:
                hashed.update(repr((table, row)).encode())
            for r in taken.records:
                hashed.update(repr((r.topic, r.key, r.value, r.partition, r.headers)).encode())
        for envelope in taken.envelopes:
            for r in envelope_records(envelope):
                if digest:
                    hashed.update(repr((r.topic, r.partition, r.value)).encode())
                where = (r.topic, r.partition or 0)
                offset = offsets.get(where, 0)
                offsets[where] = offset + 1
                queues.setdefault(where, deque()).append(InputRecord(offset, 0, None, r.value))

    def deliver() -> None:
        while any(queues.values()):
            for (topic, partition), queue in list(queues.items()):
                if queue:
                    batch = list(queue)
                    queue.clear()
                    if topic == topology.by_device:
                        identity[partition].process(batch, effects)
                    else:
                        journeys[partition].process(batch, effects)
                    emit()

    def checkpoint() -> None:
        for processor in journeys:
            processor.collect(stamp, now_s, effects)
            emit()
        deliver()
        stages: tuple[Sequence[IdentityProcessor | JourneyProcessor], ...] = (identity, journeys)
        for processors in stages:
            for partition, stage in enumerate(processors):
                for store, changes in stage.take_changes():
                    if digest:
                        for key, value in changes.items():
                            hashed.update(repr((store, partition, key, value)).encode())
                    values = stores.setdefault((store, partition), {})
                    for key, value in changes.items():
                        if value is None:
                            values.pop(key, None)
                        else:
                            values[key] = value
                stage.commit_point(2**62)

    positions = [0] * PARTITIONS
    batches = 0
    started = time.perf_counter()
    while any(positions[p] < len(inputs[p]) for p in range(PARTITIONS)):
        for partition in range(PARTITIONS):
            batch = inputs[partition][positions[partition] : positions[partition] + BATCH]
            if not batch:
                continue
            positions[partition] += len(batch)
            ingest.process(partition, batch, stamp, effects)
            emit()
            deliver()
            batches += 1
            if batches % CHECKPOINT_BATCHES == 0:
                stamp += 1000
                now_s += STEP_S
                checkpoint()
    for partition in range(PARTITIONS):
        ingest.finish(partition, effects)
        emit()
    deliver()
    checkpoint()
    for partition in range(PARTITIONS):
        ingest.advance(partition, 2**50, effects)  # every journey closes
        emit()
    deliver()
    now_s += 1000.0
    checkpoint()
    return hashed.hexdigest(), time.perf_counter() - started


def _prepared(events: int, customers: int, seed: int) -> list[list[InputRecord]]:
    inputs = build(events, customers, seed)
    gc.collect()
    gc.freeze()  # the input is not the processors' garbage
    tune_gc()  # as the worker
    return inputs


def run() -> dict[str, float]:
    inputs = _prepared(EVENTS, CUSTOMERS, 5)
    messages = sum(map(len, inputs))
    rates = [messages / drive(inputs, digest=False)[1] for _ in range(REPEATS)]
    return {
        "messages": messages,
        "customers": CUSTOMERS,
        "events_per_s": statistics.median(rates),
        "events_per_s_min": min(rates),
        "events_per_s_max": max(rates),
    }


if __name__ == "__main__":
    if sys.argv[1:2] != ["digest"]:
        sys.exit("usage: python -m bench.stages digest [events customers seed]")
    events, customers, seed = (int(a) for a in (sys.argv[2:5] or (30_000, 3_000, 5)))
    print(drive(_prepared(events, customers, seed), digest=True)[0])
