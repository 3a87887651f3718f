-- Latest version of each journey (SPEC §2). Every change writes a new version; the
-- ReplacingMergeTree keeps the highest one per journey_id. Read with FINAL.
-- journey and started_at never change for a journey_id, so they may key and partition it.
CREATE TABLE IF NOT EXISTS ${db}.journeys
(
    journey_id       String,
    customer_key     String,
    journey          LowCardinality(String),
    segment          LowCardinality(String),
    status           LowCardinality(String),
    started_at       DateTime64(3, 'UTC'),
    last_event_at    DateTime64(3, 'UTC'),
    ended_at         Nullable(DateTime64(3, 'UTC')),
    event_count      UInt32,
    channels         Array(LowCardinality(String)),
    channel_switches UInt32,
    inbound_contacts UInt32,
    irritant_count   UInt32,
    effort_score     UInt32,
    first_channel    LowCardinality(String),
    last_channel     LowCardinality(String),
    version          UInt32,
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (journey, journey_id)
TTL toDateTime(started_at) + INTERVAL ${facts_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
