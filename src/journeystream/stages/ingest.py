"""Stage A: decode and validate, keep raw and rejected rows, route each valid event by
device (its key depends on login links) or straight by customer, and announce each input
partition's watermark to every downstream partition after the events it covers.

With pseudonymised ids (`pseudonyms` given), each valid event's customer, anonymous, session
and agent ids are replaced by their tokens right after decoding, before anything is stored,
forwarded or counted. A rejected message cannot be pseudonymised field by field (it failed
the contract: it may not even be JSON), so in that mode its body is withheld: the rejected
topic gets an empty value with the header `journeystream.withheld`, `rejected_events` an
empty excerpt, and the message key (the producer's customer or anonymous id) is replaced by
its token in both. The original stays on the input topic, at the coordinates of the
`journeystream.source` header, for as long as that topic's retention keeps it."""

from __future__ import annotations

from collections.abc import Sequence

from journeystream.core.decode import Rejection, decode
from journeystream.core.events import Event
from journeystream.core.identity import device_key, needs_identity
from journeystream.core.journeys import KeyedEvent
from journeystream.core.pseudonym import Pseudonyms
from journeystream.core.timeline import NEVER, SourceWatermark
from journeystream.sinks.rows import (
    INTERACTION_EVENTS,
    REJECTED_EVENTS,
    Coordinates,
    interaction_values,
    rejected_row,
)
from journeystream.stages.effects import NO_OBSERVER, Effects, OutputRecord, Record, StageObserver
from journeystream.stages.envelope import Watermark
from journeystream.stages.routing import Outbox, Partitioner
from journeystream.stages.topology import Topology


class IngestProcessor:
    """Stage A for every input partition the driver hands it (it keeps one watermark each)."""

    def __init__(
        self,
        topology: Topology,
        lateness_ms: int,
        observer: StageObserver = NO_OBSERVER,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.topology = topology
        self.pseudonyms = pseudonyms
        self.lateness_ms = lateness_ms
        self.observer = observer
        self.watermarks: dict[int, SourceWatermark] = {}
        self._partition_of = Partitioner(topology.partitions)

    def process(self, partition: int, records: Sequence[Record], stamp_ms: int, effects: Effects) -> None:
        """One batch of one input partition. `stamp_ms` is the ingestion time of its rows."""
        outbox = Outbox()
        watermark = self.watermark(partition)
        advanced = False
        valid = late = 0
        topic, pseudonyms = self.topology.interactions, self.pseudonyms
        rows, table = effects.rows, INTERACTION_EVENTS.name
        for record in records:
            raw = record.value if record.value is not None else b""
            result = decode(raw)
            if isinstance(result, Rejection):
                where = Coordinates(topic, partition, record.offset, record.timestamp, record.key)
                self._reject(record.key, raw, result, where, stamp_ms, effects)
                continue
            if pseudonyms is not None:
                result = pseudonyms.event(result)
            valid += 1
            rows.append((table, interaction_values(result, partition, record.offset, stamp_ms)))
            occurred_at = result.occurred_at
            if occurred_at < watermark.watermark:  # watermark.is_late
                late += 1
            if occurred_at > watermark.max_seen and watermark.see(occurred_at):
                advanced = True
            self._route(result, outbox)
        self.observer.on_consumed(len(records))
        self.observer.on_valid(valid)
        if late:
            self.observer.on_late(late)
        if advanced:
            self._announce(partition, outbox)
        outbox.flush_to(effects)

    def tick(self, partition: int, now_ms: int, effects: Effects) -> None:
        """Live mode, for a partition the driver found caught up and quiet: its watermark
        follows the wall clock, so deadlines fire on a quiet stream."""
        if self.watermark(partition).quiet(now_ms):
            outbox = Outbox()
            self._announce(partition, outbox)
            outbox.flush_to(effects)

    def finish(self, partition: int, effects: Effects) -> None:
        """End of a finite input (replay): every event read is now in order, so the
        watermark moves to the last event time seen and everything read gets applied."""
        watermark = self.watermark(partition)
        if watermark.max_seen > NEVER and watermark.max_seen > watermark.watermark:
            watermark.watermark = watermark.max_seen
            outbox = Outbox()
            self._announce(partition, outbox)
            outbox.flush_to(effects)

    def advance(self, partition: int, to_ms: int, effects: Effects) -> None:
        """Move the watermark explicitly (replay's --close-until)."""
        watermark = self.watermark(partition)
        if to_ms > watermark.watermark:
            watermark.watermark = to_ms
            outbox = Outbox()
            self._announce(partition, outbox)
            outbox.flush_to(effects)

    def watermark(self, partition: int) -> SourceWatermark:
        watermark = self.watermarks.get(partition)
        if watermark is None:
            watermark = self.watermarks[partition] = SourceWatermark(self.lateness_ms)
        return watermark

    def forget(self, partition: int) -> None:
        """The partition moved to another worker (or will be read again from its commit)."""
        self.watermarks.pop(partition, None)

    def _reject(
        self,
        key: bytes | None,
        raw: bytes,
        rejection: Rejection,
        where: Coordinates,
        stamp_ms: int,
        effects: Effects,
    ) -> None:
        self.observer.on_rejected(rejection.code)
        withheld = self.pseudonyms is not None
        if self.pseudonyms is not None and key is not None:
            key = self.pseudonyms.token_of_bytes(key).encode()
            where = Coordinates(where.topic, where.partition, where.offset, where.timestamp_ms, key)
        effects.row(
            REJECTED_EVENTS.name,
            rejected_row(raw, rejection.code, rejection.message, where, stamp_ms, withheld=withheld),
        )
        headers = [
            ("journeystream.reason_code", rejection.code.encode()),
            ("journeystream.reason", rejection.message.encode("utf-8", "replace")),
            ("journeystream.source", f"{where.topic}/{where.partition}/{where.offset}".encode()),
        ]
        if withheld:
            headers.append(("journeystream.withheld", b"value: ids are pseudonymised"))
        effects.record(OutputRecord(self.topology.rejected, key, b"" if withheld else raw, None, headers))

    def _route(self, event: Event, outbox: Outbox) -> None:
        if needs_identity(event):
            outbox.add(self.topology.by_device, self._partition_of(device_key(event)), event)
        else:
            customer = str(event.customer_id)
            outbox.add(self.topology.by_customer, self._partition_of(customer), KeyedEvent(customer, event))

    def _announce(self, partition: int, outbox: Outbox) -> None:
        announced = Watermark(f"A{partition}", self.watermark(partition).watermark)
        outbox.announce(self.topology.by_device, self.topology.partitions, announced)
        outbox.announce(self.topology.by_customer, self.topology.partitions, announced)
