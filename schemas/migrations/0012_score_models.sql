-- The distributions of each scoring run (percentile and quintile breakpoints, the
-- run's configuration and as-of time), as JSON: the pipeline rescores the profiles
-- that new events touch against them between runs (docs/scoring.md, "Between runs").
-- Written before the run's row in score_runs.
CREATE TABLE IF NOT EXISTS {db}.score_models (
    run_id String,
    as_of DateTime,
    model String
) ENGINE = MergeTree()
ORDER BY run_id
