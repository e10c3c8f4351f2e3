-- One pass over crm.v_events (FINAL plus the alias join) per scoring run: the
-- columns the job folds into each customer's facts and the interaction graph.
-- Follower counts and product categories are extracted here; the job does the
-- grouping itself while ClickHouse streams the rows (job.rs, `Fold`).
-- Parameter: now (unix s).
SELECT
    customer_id,
    type,
    channel,
    splitByChar(':', source)[1] AS network,
    toUInt32(occurred_at) AS occurred_at,
    revenue_amount,
    if(position(traits, '"followers_count"') > 0,
       visitParamExtractFloat(traits, 'followers_count'), -1.) AS followers_count,
    if(position(properties, '"category"') > 0,
       extractAll(properties, '"category"\\s*:\\s*"([^"]+)"'), emptyArrayString()) AS categories,
    target_types,
    target_values
FROM {db}.v_events
WHERE customer_id != '' AND occurred_at <= toDateTime(?)
