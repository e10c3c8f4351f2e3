-- The influencer leaderboards of each scoring run: the top customers by influence
-- overall (network '') and per network, ranked as `v_scores` ranks them (influence
-- desc, then customer id). `socialcrm score run` fills it from the run's scores
-- before the run's row in score_runs, so the API and CLI read the top 100 without
-- sorting the whole run or point-reading its scores (docs/scoring.md, "Leaderboards").
-- The breakdown columns are the run's, copied from crm.scores.
CREATE TABLE IF NOT EXISTS {db}.influencer_ranks (
    run_id String,
    network String,
    customer_id String,
    influence_score Float64,
    reach Float64,
    amplification Float64,
    pagerank Float64,
    networks Array(String),
    network_followers Array(Float64),
    network_amplification Array(Float64)
) ENGINE = MergeTree()
ORDER BY (run_id, network)
