-- Marketers' surfaces (docs/marketers.md, docs/api.md): profile columns that segments
-- filter on without parsing JSON, and each event under its primary identifier so a
-- profile's recent events are an index lookup.
ALTER TABLE {db}.profiles ADD COLUMN display_name String DEFAULT '';
ALTER TABLE {db}.profiles ADD COLUMN rfm_segment String DEFAULT '';
ALTER TABLE {db}.profiles ADD COLUMN top_categories Array(String);
ALTER TABLE {db}.profiles ADD COLUMN top_channels Array(String);

-- An event's primary identifier never changes (unlinks and splits move the event with
-- it), so this copy needs no rewrite when the event's customer_id does.
CREATE TABLE IF NOT EXISTS {db}.events_by_id (
    primary_id String,
    occurred_at DateTime,
    event_id String,
    source String,
    channel String,
    type String,
    name String,
    revenue_amount Float64,
    revenue_currency String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (primary_id, occurred_at, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_by_id_mv TO {db}.events_by_id AS
SELECT primary_id, occurred_at, event_id, source, channel, type, name,
       revenue_amount, revenue_currency, version
FROM {db}.events
WHERE primary_id != '';

-- events written before this migration (replacing rows make a rerun harmless)
INSERT INTO {db}.events_by_id
SELECT primary_id, occurred_at, event_id, source, channel, type, name,
       revenue_amount, revenue_currency, version
FROM {db}.events
WHERE primary_id != ''
