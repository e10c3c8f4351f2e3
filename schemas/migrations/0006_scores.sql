-- Score history: one row per customer per scoring run (socialcrm score run), with the
-- components that explain each score (JSON in `components`, docs/scoring.md).
CREATE TABLE IF NOT EXISTS {db}.scores (
    customer_id String,
    run_id String,
    scored_at DateTime,
    engagement_score Float64,
    influence_score Float64,
    engagement_raw Float64,
    influence_raw Float64,
    recency_days Float64,
    frequency UInt64,
    monetary Float64,
    channels_in_window UInt32,
    reach Float64,
    amplification Float64,
    pagerank Float64,
    rfm_r UInt8,
    rfm_f UInt8,
    rfm_m UInt8,
    rfm_segment String,
    lifecycle_stage String,
    top_categories Array(String),
    top_channels Array(String),
    networks Array(String),
    network_followers Array(Float64),
    network_amplification Array(Float64),
    components String
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(scored_at)
ORDER BY (customer_id, scored_at);

-- One row per completed scoring run; written last, so a run without a row here is
-- incomplete and v_scores ignores it.
CREATE TABLE IF NOT EXISTS {db}.score_runs (
    run_id String,
    started_at DateTime,
    finished_at DateTime,
    as_of DateTime,
    customers UInt64,
    edges UInt64,
    pagerank_iterations UInt32,
    pagerank_delta Float64,
    seconds Float64,
    config String
) ENGINE = MergeTree()
ORDER BY (started_at, run_id);

-- The scores of the newest completed run.
CREATE VIEW IF NOT EXISTS {db}.v_scores AS
SELECT *
FROM {db}.scores
WHERE run_id = (SELECT max(run_id) FROM {db}.score_runs)
