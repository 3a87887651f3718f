"""The three stages in one process, one partition each, internal records delivered at once:
what `journeystream replay` drives. The same processors as the live worker; only the
transport differs (a list here, Kafka topics there)."""

from __future__ import annotations

from collections.abc import Sequence

from journeystream.core.config import RulesConfig
from journeystream.core.pseudonym import Pseudonyms
from journeystream.stages.effects import NO_OBSERVER, Effects, InputRecord, StageObserver
from journeystream.stages.identity import IdentityProcessor
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.journeys import JourneyProcessor
from journeystream.stages.topology import Topology

PARTITION = 0


class LocalStages:
    def __init__(
        self,
        source: str,
        rules: RulesConfig,
        kpi_horizon_ms: int,
        observer: StageObserver = NO_OBSERVER,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.topology = Topology(
            interactions=source,
            rejected="local.rejected",
            by_device="local.by-device",
            by_customer="local.by-customer",
            journeys="local.journeys",
            irritants="local.irritants",
            partitions=1,
        )
        self.stores: dict[str, dict[bytes, bytes]] = {}
        self.ingest = IngestProcessor(self.topology, rules.allowed_lateness_ms, observer, pseudonyms)
        self.identity = IdentityProcessor(PARTITION, self.topology, self._load)
        self.journeys = JourneyProcessor(
            PARTITION, self.topology, rules, kpi_horizon_ms, self._load, observer=observer
        )
        self._offsets = {self.topology.by_device: 0, self.topology.by_customer: 0}

    def feed(self, records: Sequence[InputRecord], stamp_ms: int, effects: Effects) -> None:
        """A batch of input lines, in order."""
        self.ingest.process(PARTITION, records, stamp_ms, effects)
        self._deliver(effects)

    def finish(self, effects: Effects, close_until: int | None = None) -> None:
        """End of input: everything read is applied; `close_until` then moves the watermark
        on (journeys whose deadline passed by then close)."""
        self.ingest.finish(PARTITION, effects)
        self._deliver(effects)
        if close_until is not None:
            self.ingest.advance(PARTITION, close_until, effects)
            self._deliver(effects)

    def checkpoint(self, stamp_ms: int, effects: Effects) -> None:
        """Collect the journey stage's facts and KPI rows, and keep the state changes."""
        self.journeys.collect(stamp_ms, 0.0, effects)
        self._deliver(effects)
        for processor in (self.identity, self.journeys):
            for store, changes in processor.take_changes():
                self._apply(store, changes)

    def _deliver(self, effects: Effects) -> None:
        """Hand every internal envelope to its stage, as typed messages, until none is left."""
        internal: dict[str, IdentityProcessor | JourneyProcessor] = {
            self.topology.by_device: self.identity,
            self.topology.by_customer: self.journeys,
        }
        while effects.envelopes:
            waiting, effects.envelopes = effects.envelopes, []
            for envelope in waiting:
                offset = self._offsets[envelope.topic]
                self._offsets[envelope.topic] = offset + 1
                internal[envelope.topic].process_messages([(offset, envelope.messages)], effects)

    def _load(self, store: str, key: bytes) -> bytes | None:
        return self.stores.get(store, {}).get(key)

    def _apply(self, store: str, changes: dict[bytes, bytes | None]) -> None:
        values = self.stores.setdefault(store, {})
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
