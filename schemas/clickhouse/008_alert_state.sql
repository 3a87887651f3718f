-- The alert evaluator's state per rule, so a restarted or new leader carries on where the
-- last one stopped (pending timers included). `evaluated_until` is the last minute boundary
-- evaluated (epoch ms) and versions the row. Read with FINAL.
CREATE TABLE IF NOT EXISTS ${db}.alert_state
(
    rule            String,
    status          LowCardinality(String),
    since           Nullable(Int64),
    value           Nullable(Float64),
    evaluated_until Int64,
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_until)
ORDER BY rule;
