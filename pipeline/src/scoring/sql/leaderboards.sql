-- The run's influencer leaderboards (migration 0013): the top customers by influence
-- overall (network '') and on each network they are present on, ranked like the API's
-- full query (influence desc, then customer id), at most LEADERBOARD_ROWS (job.rs) per
-- network. Parameters: the run id, the rows per network.
INSERT INTO {db}.influencer_ranks (run_id, network, customer_id, influence_score, reach,
    amplification, pagerank, networks, network_followers, network_amplification)
SELECT run_id, network, customer_id, influence_score, reach, amplification, pagerank, networks,
    network_followers, network_amplification
FROM
(
    SELECT run_id, customer_id, influence_score, reach, amplification, pagerank, networks,
        network_followers, network_amplification, arrayJoin(arrayPushFront(networks, '')) AS network
    FROM {db}.scores
    WHERE run_id = ?
)
ORDER BY network, influence_score DESC, customer_id
LIMIT ? BY network
