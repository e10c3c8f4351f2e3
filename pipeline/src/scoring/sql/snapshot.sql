-- One pass over crm.v_events (FINAL plus the alias join) per scoring run: the
-- columns the other scoring queries need, in a Memory table that the job drops at
-- the end. Follower counts and product categories are extracted here once.
-- Parameter: now (unix s).
CREATE TABLE {snap} ENGINE = Memory AS
SELECT
    customer_id,
    type,
    channel,
    splitByChar(':', source)[1] AS network,
    occurred_at,
    revenue_amount,
    if(position(traits, '"followers_count"') > 0,
       visitParamExtractFloat(traits, 'followers_count'), -1.) AS followers_count,
    if(position(properties, '"category"') > 0,
       extractAll(properties, '"category"\\s*:\\s*"([^"]+)"'), emptyArrayString()) AS categories,
    target_types,
    target_values
FROM {db}.v_events
WHERE customer_id != '' AND occurred_at <= toDateTime(?)
