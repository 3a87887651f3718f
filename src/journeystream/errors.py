"""The exceptions journeystream raises. One root, so callers can catch everything of ours:

    JourneystreamError
    ├── ConfigError          a JOURNEYSTREAM_* setting or a rules file is invalid
    ├── MigrationError       a schemas/clickhouse/*.sql statement failed
    ├── KafkaUnavailableError the broker could not be reached at start
    └── SinkError            a write to the store failed
        └── SinkClosedError  rows were added to a sink after it was closed

Bad input events are not exceptions: the decoder returns a Rejection (core/decode.py).
"""

from __future__ import annotations


class JourneystreamError(Exception):
    """Root of every journeystream exception."""


class ConfigError(JourneystreamError):
    """A setting or a rules file is invalid; the message names it and says what is expected."""


class MigrationError(JourneystreamError):
    """Applying the ClickHouse DDL failed."""


class KafkaUnavailableError(JourneystreamError):
    """The broker did not answer at start, after retries; the message says where and why."""


class SinkError(JourneystreamError):
    """Writing a batch to the store failed (the batch is kept and retried)."""


class SinkClosedError(SinkError):
    """Rows were added to a sink that was already closed."""
