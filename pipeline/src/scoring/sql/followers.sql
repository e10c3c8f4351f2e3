-- Latest follower count per customer and network (the source's prefix, e.g.
-- `mastodon` of `mastodon:m.social`); -1 in the snapshot means "not given".
SELECT
    customer_id,
    network,
    argMax(followers_count, occurred_at) AS followers
FROM {snap}
WHERE followers_count >= 0
GROUP BY customer_id, network
