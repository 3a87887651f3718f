"""Issue 12: every topic the service creates and fills with ids gets a bounded life
(JOURNEYSTREAM_TOPIC_RETENTION_MS): retention.ms on the appended topics,
max.compaction.lag.ms on the compacted changelogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from journeystream.config import Settings
from journeystream.runtime.topics import TABLES, changelog_topic, ensure_topics, service_topics
from journeystream.supervise import worker_env

pytestmark = pytest.mark.integration


async def _configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for _, _, _, name, entries in response.resources:
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


async def test_created_topics_get_the_configured_retention(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique_name, tmp_path, topic_retention_ms="3600000")
    settings = Settings.from_env(env)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(service_topics(settings))
    changelogs = {changelog_topic(settings, table) for table in TABLES}
    configs = await _configs(kafka_bootstrap, created)
    for topic in created:
        if topic in changelogs:
            assert configs[topic]["cleanup.policy"] == "compact"
            assert configs[topic]["max.compaction.lag.ms"] == "3600000", topic
        else:
            assert configs[topic]["retention.ms"] == "3600000", topic
