-- KPI counts per event-time minute x channel x journey x segment (SPEC §3), one row per
-- (cell, shard): each journey-engine partition (shard) writes the cumulative counts of the
-- cells it owns; `version` is the number of facts counted into the cell, so a rewritten row
-- replaces an older one. Read with FINAL and sum over shards; roll up to any window.
-- `customers` is distinct within one cell (minute x channel x journey x segment) only.
CREATE TABLE IF NOT EXISTS ${db}.kpi_minute
(
    minute                            DateTime('UTC'),
    channel                           LowCardinality(String),
    journey                           LowCardinality(String),
    segment                           LowCardinality(String),
    shard                             UInt16,
    events                            UInt32,
    customers                         UInt32,
    journeys_started                  UInt32,
    journeys_completed                UInt32,
    journeys_abandoned                UInt32,
    journeys_cancelled                UInt32,
    journeys_expired                  UInt32,
    inbound_contacts                  UInt32,
    contacts_answered                 UInt32,
    contacts_abandoned                UInt32,
    wait_sum_s                        Float64,
    wait_count                        UInt32,
    wait_buckets                      Array(UInt32),
    handle_sum_s                      Float64,
    handle_count                      UInt32,
    resolved_contacts                 UInt32,
    irritant_abandonment              UInt32,
    irritant_contact_abandoned        UInt32,
    irritant_repeat_contact_after_web UInt32,
    irritant_repeat_contact           UInt32,
    irritant_long_wait                UInt32,
    irritant_complaint                UInt32,
    irritant_detractor                UInt32,
    irritant_high_effort              UInt32,
    nps_responses                     UInt32,
    nps_promoters                     UInt32,
    nps_detractors                    UInt32,
    ces_sum                           Float64,
    ces_count                         UInt32,
    csat_sum                          Float64,
    csat_count                        UInt32,
    closed_journeys_multichannel      UInt32,
    completed_without_assisted        UInt32,
    digital_sessions                  UInt32,
    bounced_sessions                  UInt32,
    late_events                       UInt32,
    version                           UInt64,
    updated_at                        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, journey, channel, segment, shard)
TTL minute + INTERVAL ${facts_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
