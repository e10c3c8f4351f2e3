-- Per customer, event type and channel: count, decayed count, count in the window,
-- first/last time and revenue. Parameters, in order: now (unix s), half-life (s),
-- window start (unix s).
SELECT
    customer_id,
    type AS event_type,
    channel,
    count() AS n,
    sum(exp2(-greatest(0., toFloat64(?) - toFloat64(toUInt32(occurred_at))) / ?)) AS decayed,
    toUInt64(countIf(occurred_at >= toDateTime(?))) AS in_window,
    toUInt32(min(occurred_at)) AS first_at,
    toUInt32(max(occurred_at)) AS last_at,
    sum(revenue_amount) AS revenue
FROM {snap}
GROUP BY customer_id, event_type, channel
