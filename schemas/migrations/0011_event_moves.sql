-- Events that follow their primary identifier to another customer (an unlink, a
-- split, a re-resolved conflict: docs/identity.md §4). The pipeline writes each
-- batch's moves here, and the mutation that rewrites crm.events reads them: a
-- mutation's text stays in system.mutations, so it must name no identifier
-- (docs/privacy.md). Erasures delete the rows of the person.
CREATE TABLE IF NOT EXISTS {db}.event_moves (
    move_id String,
    primary_id String,
    customer_id String,
    moved_at DateTime
) ENGINE = MergeTree
ORDER BY (move_id, primary_id)
