"""The exceptions journeystream raises. One root, so callers can catch everything of ours:

    JourneystreamError
    ├── ConfigError          a JOURNEYSTREAM_* setting or a rules file is invalid
    ├── KafkaConnectError    the first connection to Kafka failed: authentication, TLS
    │                        verification, protocol mismatch or an unreachable broker
    ├── MigrationError       a schemas/clickhouse/*.sql statement failed
    └── SinkError            a write to the store failed
        └── SinkClosedError  rows were added to a sink after it was closed

Bad input events are not exceptions: the decoder returns a Rejection (core/decode.py).
"""

from __future__ import annotations


class JourneystreamError(Exception):
    """Root of every journeystream exception."""


class ConfigError(JourneystreamError):
    """A setting or a rules file is invalid; the message names it and says what is expected."""


class KafkaConnectError(JourneystreamError):
    """Connecting to Kafka at start failed. The message is one line naming the cause and the
    setting to look at (never a secret); `reason` is one of `authentication`, `tls`,
    `protocol` or `unreachable`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MigrationError(JourneystreamError):
    """Applying the ClickHouse DDL failed."""


class SinkError(JourneystreamError):
    """Writing a batch to the store failed (the batch is kept and retried)."""


class SinkClosedError(SinkError):
    """Rows were added to a sink that was already closed."""
