"""Creating the service's topics when they are missing (local runs, first deployment)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from journeystream.config import Settings

log = logging.getLogger(__name__)


def service_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_interactions,
        settings.topic_rejected,
        settings.topic_journeys,
        settings.topic_irritants,
        settings.topic_alerts,
        settings.topic_by_device,
        settings.topic_by_customer,
    ]


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the named topics (default: all of the service's) that do not exist yet;
    returns the ones created. Existing topics are left as they are."""
    wanted = names if names is not None else service_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name, num_partitions=settings.partitions, replication_factor=1) for name in missing]
            )
            log.info("created topics %s with %d partitions", ", ".join(missing), settings.partitions)
        return missing
    finally:
        await admin.close()
