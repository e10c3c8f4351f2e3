-- One current row per customer_id (newest version wins). Merged-away profiles keep a
-- row with is_active = 0 and merged_into set, so old ids stay explainable.
CREATE TABLE IF NOT EXISTS {db}.profiles (
    customer_id String,
    version UInt64,
    is_active UInt8,
    merged_into String,
    identifier_types Array(String),
    identifier_values Array(String),
    traits String,
    channels Array(String),
    sources Array(String),
    event_count UInt64,
    event_count_types Array(String),
    event_count_values Array(UInt64),
    channel_count_keys Array(String),
    channel_count_values Array(UInt64),
    first_seen DateTime,
    last_seen DateTime,
    order_count UInt64,
    revenue_currencies Array(String),
    revenue_amounts Array(Float64),
    engagement_score Float64,
    influence_score Float64,
    lifecycle_stage String,
    score_components String,
    merged_from Array(String),
    updated_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
