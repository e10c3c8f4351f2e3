-- Every create, link, merge, rejection, unlink and erasure, with the event that caused it.
CREATE TABLE IF NOT EXISTS {db}.identity_ledger (
    entry_id String,
    at DateTime,
    action String,
    customer_id String,
    id_type String,
    id_value String,
    merged_customer_id String,
    rule String,
    reason String,
    event_id String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(at)
ORDER BY (customer_id, entry_id)
