-- Lifted suppressions (docs/privacy.md, "Lifting a suppression"): who lifted which
-- suppressed identifier (its salted hash, as in `suppressions`), when and why. From
-- `lifted_at` on, events that occurred after it and carry the identifier are accepted
-- again; older events stay dropped, and what the erasure deleted stays deleted.
-- One row per request and status: `requested` by the requester (with the reason),
-- `applied` by the identity writer (which never sees the reason).
-- A later erasure of the same identifier (a newer `suppressions.added_at`) ends it.
CREATE TABLE IF NOT EXISTS {db}.suppression_lifts (
    hash String,
    id_type String,
    request_id String,
    salt_id String,
    status String,
    lifted_at DateTime,
    requested_by String,
    reason String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (hash, request_id, status)
