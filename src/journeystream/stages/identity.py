"""Stage B: resolves the customer key of device-keyed events in event-time order (login
links per anonymous id), then sends them on to the journey stage by customer key."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from journeystream.core.events import Event
from journeystream.core.identity import IdentityStage, encode_links
from journeystream.core.timeline import NEVER
from journeystream.stages.effects import Effects, ErasurePart, Record, StateChanges
from journeystream.stages.envelope import Erase, Message, Watermark, unpack
from journeystream.stages.pending import PendingOffsets
from journeystream.stages.routing import Outbox, Partitioner
from journeystream.stages.topology import Topology

LINKS = "links"


class IdentityProcessor:
    """Stage B for one partition of the by-device topic (store: anonymous id -> links)."""

    stores = (LINKS,)

    def __init__(
        self, partition: int, topology: Topology, load: Callable[[str, bytes], bytes | None]
    ) -> None:
        self.partition = partition
        self.topology = topology
        self.stage = IdentityStage(topology.sources("A"), load_link=lambda anon: load(LINKS, anon.encode()))
        self.pending = PendingOffsets()
        self._announced = NEVER
        self._partition_of = Partitioner(topology.partitions)

    def process(self, records: Sequence[Record], effects: Effects) -> None:
        """A batch of by-device records."""
        self.process_messages([(record.offset, unpack(record.value)) for record in records], effects)

    def process_messages(self, batch: Sequence[tuple[int, Sequence[Message]]], effects: Effects) -> None:
        """A batch of (offset, messages of the record at that offset)."""
        stage = self.stage
        for offset, messages in batch:
            for message in messages:
                if isinstance(message, Watermark):
                    stage.observe(message.source, message.watermark)
                elif isinstance(message, Event):
                    stage.push(message)
                    self.pending.hold(message, offset)
                elif isinstance(message, Erase):
                    had_links, dropped = stage.erase(message.key)
                    effects.erasures.append(
                        ErasurePart(
                            message.request,
                            "links",
                            message.key,
                            False,
                            had_links,
                            dropped,
                            stores=(LINKS,),
                            partition=self.partition,
                        )
                    )
                else:
                    raise ValueError(f"unexpected {type(message).__name__} on the by-device topic")
        outbox = Outbox()
        by_customer = self.topology.by_customer
        for item in stage.drain():
            outbox.add(by_customer, self._partition_of(item.key), item)
        watermark = stage.timeline.watermark
        if watermark > self._announced:
            self._announced = watermark
            outbox.announce(by_customer, self.topology.partitions, Watermark(f"B{self.partition}", watermark))
        outbox.flush_to(effects)

    def collect(self, stamp_ms: int, now_s: float, effects: Effects) -> None:
        """Nothing waits for a checkpoint here: items leave with their batch."""

    def take_changes(self) -> list[tuple[str, StateChanges]]:
        links = self.stage.dirty_links()
        return [
            (
                LINKS,
                {
                    anon.encode(): None if value is None else encode_links(value)
                    for anon, value in links.items()
                },
            )
        ]

    def commit_point(self, next_offset: int) -> int:
        return self.pending.commit_point(self.stage.timeline.pending(), next_offset)

    @property
    def late_items(self) -> int:
        return self.stage.late_items
