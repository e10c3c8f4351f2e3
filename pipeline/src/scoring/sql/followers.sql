-- Latest follower count per customer and network (the source's prefix, e.g.
-- `mastodon` of `mastodon:m.social`). Parameter: now (unix s).
SELECT
    customer_id,
    splitByChar(':', source)[1] AS network,
    argMax(visitParamExtractFloat(traits, 'followers_count'), occurred_at) AS followers
FROM {db}.v_events
WHERE customer_id != ''
  AND position(traits, '"followers_count"') > 0
  AND occurred_at <= toDateTime(?)
GROUP BY customer_id, network
