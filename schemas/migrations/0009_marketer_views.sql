-- Views for marketers' SQL and BI tools (docs/marketers.md). The HTTP API, the web
-- page and the CLI read these same views, so their answers match a SQL query.

-- v_profiles again: 18.16 expands `SELECT *` when a view is created, so the view of
-- 0005 lacks the columns added since (flags, display_name, rfm_segment, ...).
-- A migration that adds profile columns must recreate it the same way.
DROP TABLE IF EXISTS {db}.v_profiles;
CREATE VIEW IF NOT EXISTS {db}.v_profiles AS
SELECT *
FROM {db}.profiles FINAL
WHERE is_active = 1;

-- Every event that carries a UTM campaign (`context.campaign.name`), with its
-- current customer.
CREATE VIEW IF NOT EXISTS {db}.v_campaign_touches AS
SELECT
    event_id,
    customer_id,
    occurred_at,
    type,
    channel,
    visitParamExtractString(visitParamExtractRaw(context, 'campaign'), 'name') AS campaign,
    visitParamExtractString(visitParamExtractRaw(context, 'campaign'), 'source') AS campaign_source,
    visitParamExtractString(visitParamExtractRaw(context, 'campaign'), 'medium') AS campaign_medium,
    revenue_amount,
    revenue_currency
FROM {db}.v_events
WHERE position(context, '"campaign"') > 0 AND campaign != '';

-- Every order with the campaign of its customer's first touch and last touch at or
-- before the order (the order's own UTM counts as a touch); '' when none.
CREATE VIEW IF NOT EXISTS {db}.v_campaign_attribution AS
SELECT
    order_id,
    customer_id,
    ordered_at,
    revenue_amount,
    revenue_currency,
    -- (ordered_at passed as an array: 18.16 drops columns only a lambda uses)
    arrayFilter((x, at) -> tupleElement(x, 1) <= at, touches, replicate(ordered_at, touches)) AS before,
    if(length(before) > 0, tupleElement(before[1], 3), '') AS first_touch,
    if(length(before) > 0, tupleElement(before[-1], 3), '') AS last_touch
FROM
(
    SELECT event_id AS order_id, customer_id, occurred_at AS ordered_at, revenue_amount, revenue_currency
    FROM {db}.v_events
    WHERE type = 'order'
) AS o
ANY LEFT JOIN
(
    SELECT customer_id, arraySort(groupArray((occurred_at, event_id, campaign))) AS touches
    FROM {db}.v_campaign_touches
    GROUP BY customer_id
) AS t USING (customer_id);

-- One row per line item of every order (Shopify `line_items`, WooCommerce
-- `line_items`, Segment ecommerce `products`): product, category, units, amount.
CREATE VIEW IF NOT EXISTS {db}.v_order_lines AS
SELECT
    event_id AS order_id,
    customer_id,
    occurred_at AS ordered_at,
    revenue_currency AS currency,
    replaceAll(visitParamExtractRaw(line, 'product_id'), '"', '') AS raw_product_id,
    if(raw_product_id != '', raw_product_id, visitParamExtractString(line, 'sku')) AS product_id,
    if(visitParamHas(line, 'title'), visitParamExtractString(line, 'title'), visitParamExtractString(line, 'name')) AS product_name,
    visitParamExtractString(line, 'category') AS category,
    if(visitParamHas(line, 'quantity'), visitParamExtractFloat(line, 'quantity'), 1.) AS quantity,
    multiIf(visitParamHas(line, 'total'), visitParamExtractFloat(line, 'total'),
            visitParamHas(line, 'unit_price'), visitParamExtractFloat(line, 'unit_price') * quantity,
            visitParamExtractFloat(line, 'price') * quantity) AS amount
FROM {db}.v_events
ARRAY JOIN extractAll(properties, '\\{[^{}]*\\}') AS line
WHERE type = 'order' AND (position(line, '"product_id"') > 0 OR position(line, '"sku"') > 0);

-- Live profiles with the columns segments filter on and exports show.
CREATE VIEW IF NOT EXISTS {db}.v_segment_profiles AS
SELECT
    customer_id,
    display_name,
    arrayFirst((v, t) -> t = 'email', identifier_values, identifier_types) AS email,
    arrayFirst((v, t) -> t = 'phone', identifier_values, identifier_types) AS phone,
    identifier_types,
    identifier_values,
    traits,
    engagement_score,
    influence_score,
    lifecycle_stage,
    rfm_segment,
    channels,
    top_categories,
    top_channels,
    first_seen,
    last_seen,
    event_count,
    order_count,
    revenue_currencies,
    revenue_amounts
FROM {db}.profiles FINAL
WHERE is_active = 1;

-- The newest scoring run's influence breakdown with each customer's name.
CREATE VIEW IF NOT EXISTS {db}.v_influencers AS
SELECT
    customer_id,
    display_name,
    identifier_types,
    identifier_values,
    influence_score,
    reach,
    amplification,
    pagerank,
    networks,
    network_followers,
    network_amplification
FROM {db}.v_scores
ANY LEFT JOIN
(
    SELECT customer_id, display_name, identifier_types, identifier_values
    FROM {db}.profiles FINAL
    WHERE is_active = 1
) AS p USING (customer_id)
