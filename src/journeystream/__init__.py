"""journeystream: live customer journeys, irritants and KPIs from Kafka to ClickHouse.

The public API is what this module exports; everything else is private to the package.
"""

from journeystream.config import Settings
from journeystream.core.decode import REJECTION_CODES, Rejection, decode
from journeystream.core.events import Event
from journeystream.errors import (
    ConfigError,
    JourneystreamError,
    KafkaConnectError,
    MigrationError,
    SinkClosedError,
    SinkError,
)

__all__ = [
    "REJECTION_CODES",
    "ConfigError",
    "Event",
    "JourneystreamError",
    "KafkaConnectError",
    "MigrationError",
    "Rejection",
    "Settings",
    "SinkClosedError",
    "SinkError",
    "decode",
]
__version__ = "0.1.0"
