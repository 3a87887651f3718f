"""The three stages wired together in one process: what `journeystream replay` runs, and
the reference the live (partitioned, Kafka-connected) path must agree with.

Stage A reads events in order and keeps the watermark (highest time seen minus the allowed
lateness); events needing login links go through the identity stage (B); everything ends
in the journey engine (C). Messages the engine sends to other customers (merge payloads,
forwarded items) are delivered at once here, as they would be through Kafka later.
"""

from __future__ import annotations

from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import Fact
from journeystream.core.identity import IdentityStage, needs_identity
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload
from journeystream.core.timeline import SourceWatermark

SOURCE_A = "A"
SOURCE_B = "B"


class LocalPipeline:
    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self.source = SourceWatermark(config.allowed_lateness_ms)
        self.identity = IdentityStage([SOURCE_A])
        self.engine = JourneyEngine(config, [SOURCE_A, SOURCE_B])

    def feed(self, event: Event) -> None:
        """One valid event, in arrival order."""
        if needs_identity(event):
            self.identity.push(event)
            self._pass_identity_output()
        else:
            self.engine.push(KeyedEvent(event.customer_id or "", event))
        if self.source.see(event.occurred_at):
            self.advance(self.source.watermark)
        self._deliver_messages()

    def advance(self, watermark: int) -> None:
        """Move stage A's watermark (at end of input, a backfill may move it explicitly)."""
        self.source.watermark = max(self.source.watermark, watermark)
        self.identity.observe(SOURCE_A, self.source.watermark)
        self._pass_identity_output()
        self.engine.observe(SOURCE_B, self.identity.timeline.watermark)
        self.engine.observe(SOURCE_A, self.source.watermark)
        self._deliver_messages()

    def drain(self) -> list[Fact]:
        return self.engine.drain().facts

    def _pass_identity_output(self) -> None:
        for item in self.identity.drain():
            self.engine.push(item)

    def _deliver_messages(self) -> None:
        while True:
            messages = self.engine.drain_messages()
            if not messages:
                return
            for message in messages:
                if isinstance(message, MergePayload):
                    self.engine.receive_payload(message)
                else:
                    self.engine.push(message)
