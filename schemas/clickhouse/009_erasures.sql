-- Erasure requests (`journeystream erase`, GDPR art. 17): one row per request, with a hash of
-- the id (never the id), what was removed and by whom. No TTL: the record of the request is
-- the evidence that it was honoured.
CREATE TABLE IF NOT EXISTS ${db}.erasures
(
    erased_at      DateTime64(3, 'UTC'),
    id_sha256      String,
    id_kind        LowCardinality(String),
    linked_ids     UInt32,
    rows_removed   Map(String, UInt64),
    states_removed UInt32,
    outcome        LowCardinality(String),
    erased_by      String
)
ENGINE = ReplacingMergeTree(erased_at)
ORDER BY (id_sha256, erased_at);
