-- How far each journey-engine partition (shard) has counted: every KPI minute before
-- `watermark` is complete in kpi_minute for that shard (written after its rows). The alert
-- evaluator reads min(watermark) over the shards. Read with FINAL.
CREATE TABLE IF NOT EXISTS ${db}.kpi_progress
(
    shard      UInt16,
    watermark  DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(watermark)
ORDER BY shard;
