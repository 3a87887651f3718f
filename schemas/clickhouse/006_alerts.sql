-- Threshold alert notifications (SPEC §4): one `firing` and one `resolved` row per episode.
-- alert_id = rule name + the episode's start; read with FINAL.
CREATE TABLE IF NOT EXISTS ${db}.alerts
(
    alert_id    String,
    rule        LowCardinality(String),
    status      LowCardinality(String),
    severity    LowCardinality(String),
    metric      LowCardinality(String),
    channel     LowCardinality(String),
    journey     LowCardinality(String),
    segment     LowCardinality(String),
    value       Float64,
    threshold   Float64,
    summary     String,
    starts_at   DateTime64(3, 'UTC'),
    ends_at     Nullable(DateTime64(3, 'UTC')),
    notified_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(notified_at)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (rule, starts_at, status)
TTL toDateTime(starts_at) + INTERVAL ${facts_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
