-- Irritants (SPEC §2), one row per deterministic irritant_id. Read with FINAL.
CREATE TABLE IF NOT EXISTS ${db}.irritants
(
    irritant_id  String,
    kind         LowCardinality(String),
    customer_key String,
    journey_id   String,
    journey      LowCardinality(String),
    segment      LowCardinality(String),
    channel      LowCardinality(String),
    occurred_at  DateTime64(3, 'UTC'),
    event_ids    Array(String),
    details      String,
    detected_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toStartOfHour(occurred_at), kind, irritant_id)
TTL toDateTime(occurred_at) + INTERVAL ${facts_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
