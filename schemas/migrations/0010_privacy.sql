-- Privacy (docs/privacy.md): the suppression list, erasure requests and their
-- progress, and the keys of erasures in progress.

-- Identifiers that were erased and must never come back: salted hashes only
-- (`sha256:` + 64 hex digits of the stored `type:value`). The identity writer keeps
-- the same list in its store; connectors read this table.
CREATE TABLE IF NOT EXISTS {db}.suppressions (
    hash String,
    id_type String,
    request_id String,
    salt_id String,
    added_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY hash;

-- One row per erasure request and status; the newest version per request_id is its
-- current status (requested, applied, completed, verified, failed). `subject` is the
-- hash of the identifier asked for, or the customer_id; per-table row counts before
-- and after the deletion are in `tables`/`rows_before`/`rows_after`.
CREATE TABLE IF NOT EXISTS {db}.erasures (
    request_id String,
    status String,
    version UInt64,
    requested_at DateTime,
    updated_at DateTime,
    requested_by String,
    subject String,
    customer_ids Array(String),
    identifiers UInt32,
    tables Array(String),
    rows_before Array(UInt64),
    rows_after Array(UInt64),
    message String
) ENGINE = ReplacingMergeTree(version)
ORDER BY request_id;

-- The stored identifier keys (`type:value`, kind `id`) and event ids (kind `event`)
-- of an erasure in progress, so that the deleting mutations name only the request,
-- never a personal value (mutation texts stay in system.mutations). Deleted when the
-- erasure is verified.
CREATE TABLE IF NOT EXISTS {db}.erasure_keys (
    request_id String,
    kind String,
    key String,
    hash String
) ENGINE = MergeTree
ORDER BY (request_id, kind, key)
