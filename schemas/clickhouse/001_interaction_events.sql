-- Valid raw events, one row per event_id. ReplacingMergeTree collapses a re-written row
-- (a retried batch, a replayed offset): count with FINAL for exact figures.
CREATE TABLE IF NOT EXISTS ${db}.interaction_events
(
    event_id        String,
    occurred_at     DateTime64(3, 'UTC'),
    customer_id     Nullable(String),
    anonymous_id    Nullable(String),
    channel         LowCardinality(String),
    type            LowCardinality(String),
    journey         LowCardinality(Nullable(String)),
    segment         LowCardinality(Nullable(String)),
    session_id      Nullable(String),
    agent_id        Nullable(String),
    attributes      String CODEC(ZSTD(3)),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL ${events_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
