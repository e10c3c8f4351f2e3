-- Identity rules (docs/identity.md). Each event's primary identifier (its strongest),
-- so the event follows it when an unlink, split or re-resolved conflict moves it to
-- another profile; the order of ledger entries within a batch (for
-- `socialcrm identity rebuild`); the rules that flagged a profile for review.
ALTER TABLE {db}.events ADD COLUMN primary_id String DEFAULT '';
ALTER TABLE {db}.identity_ledger ADD COLUMN seq UInt32 DEFAULT 0;
ALTER TABLE {db}.profiles ADD COLUMN flags Array(String)
