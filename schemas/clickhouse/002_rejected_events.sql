-- Messages that failed the contract, with the reason and their Kafka coordinates.
-- One row per (topic, partition, offset); the original bytes stay on the rejected topic.
CREATE TABLE IF NOT EXISTS ${db}.rejected_events
(
    topic           LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    kafka_key       Nullable(String),
    kafka_timestamp DateTime64(3, 'UTC'),
    reason_code     LowCardinality(String),
    reason          String,
    size_bytes      UInt32,
    excerpt         String CODEC(ZSTD(3)),
    rejected_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rejected_at)
PARTITION BY toYYYYMM(kafka_timestamp)
ORDER BY (topic, kafka_partition, kafka_offset)
TTL toDateTime(kafka_timestamp) + INTERVAL ${events_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
