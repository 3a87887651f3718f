"""The topics the stages read and write, and how many partitions each stage has."""

from __future__ import annotations

from dataclasses import dataclass

from journeystream.config import Settings


@dataclass(frozen=True, slots=True)
class Topology:
    interactions: str
    rejected: str
    by_device: str
    by_customer: str
    journeys: str
    irritants: str
    partitions: int
    control: str = "control"  # erasure requests and reports (stages/control.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            interactions=settings.topic_interactions,
            rejected=settings.topic_rejected,
            by_device=settings.topic_by_device,
            by_customer=settings.topic_by_customer,
            journeys=settings.topic_journeys,
            irritants=settings.topic_irritants,
            partitions=settings.partitions,
            control=settings.topic_control,
        )

    def sources(self, stage: str) -> list[str]:
        """Names of the upstream partitions of a stage ("A" ingest, "B" identity)."""
        return [f"{stage}{partition}" for partition in range(self.partitions)]
