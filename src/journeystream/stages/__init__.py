"""Sans-I/O stage processors: each takes a batch of input records of one partition and
leaves its effects (rows, records, state changes) in an `Effects` collector. The live
runtime (`runtime/`) and `journeystream replay` (`stages/local.py`) drive the same
processors; neither the processors nor the core read a clock or touch Kafka or ClickHouse.
"""

from journeystream.stages.effects import Effects, InputRecord, OutputRecord, StageObserver
from journeystream.stages.identity import IdentityProcessor
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.journeys import JourneyProcessor

__all__ = [
    "Effects",
    "IdentityProcessor",
    "IngestProcessor",
    "InputRecord",
    "JourneyProcessor",
    "OutputRecord",
    "StageObserver",
]
