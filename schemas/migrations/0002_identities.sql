-- Current identifier -> customer mapping. The identity writer re-emits a row with a
-- higher version whenever an identifier moves (merge, unlink), so FINAL answers
-- "who is this" directly.
CREATE TABLE IF NOT EXISTS {db}.identities (
    id_type String,
    id_value String,
    customer_id String,
    is_active UInt8,
    first_seen DateTime,
    updated_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (id_type, id_value);

-- Retired customer ids and the profile that absorbed them; always points at the
-- final survivor (the writer rewrites chains), so one join resolves any old id.
CREATE TABLE IF NOT EXISTS {db}.customer_aliases (
    retired_id String,
    survivor_id String,
    merged_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY retired_id
