"""Reaching the broker at start: retried with backoff, then one line saying why not."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError

from journeystream.config import Settings
from journeystream.errors import KafkaUnavailableError
from journeystream.runtime.topics import ensure_topics

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


async def reach_kafka(settings: Settings) -> None:
    """Create the service's missing topics, waiting for the broker up to ~15 s."""
    for attempt, pause in enumerate((*BACKOFF_S, None), start=1):
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as error:
            cause = str(error) or type(error).__name__
            if pause is None:
                raise KafkaUnavailableError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap} after {attempt} attempts: {cause}"
                ) from None
            log.warning(
                "Kafka at %s not reachable (%s); retrying in %.1fs", settings.kafka_bootstrap, cause, pause
            )
            await asyncio.sleep(pause)
