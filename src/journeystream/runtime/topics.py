"""Creating the service's topics when they are missing (local runs, first deployment)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from journeystream.config import Settings
from journeystream.kafka_options import check_kafka, kafka_options
from journeystream.stages.identity import IdentityProcessor
from journeystream.stages.journeys import JourneyProcessor

log = logging.getLogger(__name__)


TABLES = (*IdentityProcessor.stores, *JourneyProcessor.stores)
"""The stage stores (each backed by a compacted changelog topic)."""


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"  # as the Faust runtime named them: they carry on


def service_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_interactions,
        settings.topic_rejected,
        settings.topic_journeys,
        settings.topic_irritants,
        settings.topic_alerts,
        settings.topic_by_device,
        settings.topic_by_customer,
        settings.topic_control,
        # created compacted with the others, before any worker restores or writes them
        *(changelog_topic(settings, table) for table in TABLES),
    ]


def topic_configs(settings: Settings, *, compacted: bool) -> dict[str, str]:
    """The configuration a created topic gets. Every topic the service fills holds ids, so
    each gets a bounded life (JOURNEYSTREAM_TOPIC_RETENTION_MS): deleted after it on the
    topics that append, and on the compacted changelogs a value replaced or tombstoned is
    compacted away within it (`max.compaction.lag.ms`, counted from the next write to the
    partition, which rolls the segment the cleaner may then compact), and a tombstone is
    removed after it (`delete.retention.ms`)."""
    retention = str(settings.topic_retention_ms)
    if compacted:
        # delete.retention.ms: a tombstone's key (an erased customer's id) goes after it too
        return {
            "cleanup.policy": "compact",
            "max.compaction.lag.ms": retention,
            "delete.retention.ms": retention,
        }
    return {"retention.ms": retention}


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the named topics (default: all of the service's) that do not exist yet;
    returns the ones created. Existing topics are left as they are.

    This is the first connection of the worker and the simulator: `check_kafka` runs first,
    so a wrong password, an untrusted certificate, a protocol mismatch or an unreachable
    broker ends the start with one KafkaConnectError line."""
    wanted = names if names is not None else service_topics(settings)
    await check_kafka(settings)
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            changelogs = {changelog_topic(settings, table) for table in TABLES}
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.partitions,
                        replication_factor=1,
                        topic_configs=topic_configs(settings, compacted=name in changelogs),
                    )
                    for name in missing
                ]
            )
            log.info("created topics %s with %d partitions", ", ".join(missing), settings.partitions)
        await _await_metadata(admin, wanted)
        return missing
    finally:
        await admin.close()


async def _await_metadata(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """Wait until the broker's metadata lists every topic (creation is asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        listed = set(await admin.list_topics())
        if all(name in listed for name in names):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s}s: {sorted(set(names) - listed)}")
        await asyncio.sleep(0.1)
