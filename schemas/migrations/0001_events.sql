-- One row per canonical event with the customer_id it resolved to when written.
-- Re-inserting an event_id replaces the row (ReplacingMergeTree); queries use FINAL
-- or v_events so nothing is counted twice.
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id String,
    customer_id String,
    source String,
    channel String,
    type String,
    name String,
    occurred_at DateTime,
    occurred_at_ms UInt16,
    received_at DateTime,
    identifier_types Array(String),
    identifier_values Array(String),
    target_types Array(String),
    target_values Array(String),
    traits String,
    properties String,
    context String,
    revenue_amount Float64,
    revenue_currency String,
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id
