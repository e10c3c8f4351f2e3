-- Every event with its *current* customer_id: follows merges at query time through
-- customer_aliases, so no query waits for rewrites of old rows.
CREATE VIEW IF NOT EXISTS {db}.v_events AS
SELECT
    event_id,
    if(survivor_id = '', original_customer_id, survivor_id) AS customer_id,
    original_customer_id,
    source,
    channel,
    type,
    name,
    occurred_at,
    received_at,
    identifier_types,
    identifier_values,
    target_types,
    target_values,
    traits,
    properties,
    context,
    revenue_amount,
    revenue_currency
FROM
(
    SELECT
        event_id,
        customer_id AS original_customer_id,
        source,
        channel,
        type,
        name,
        occurred_at,
        received_at,
        identifier_types,
        identifier_values,
        target_types,
        target_values,
        traits,
        properties,
        context,
        revenue_amount,
        revenue_currency
    FROM {db}.events FINAL
) AS e
ANY LEFT JOIN
(
    SELECT
        retired_id AS original_customer_id,
        argMax(survivor_id, version) AS survivor_id
    FROM {db}.customer_aliases
    GROUP BY retired_id
) AS a USING (original_customer_id);

-- Live profiles only (merged-away ids excluded), newest version of each.
CREATE VIEW IF NOT EXISTS {db}.v_profiles AS
SELECT *
FROM {db}.profiles FINAL
WHERE is_active = 1;

-- Current identifier mapping, active identifiers only.
CREATE VIEW IF NOT EXISTS {db}.v_identities AS
SELECT id_type, id_value, customer_id, first_seen, updated_at
FROM {db}.identities FINAL
WHERE is_active = 1
