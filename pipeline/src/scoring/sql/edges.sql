-- The interaction graph between profiles: for every event with a `target`, the
-- actor's customer → the target identifier's current customer, per event type and
-- network. Targets nobody resolved to a profile are left out.
-- ALL, not ANY: on current ClickHouse `ANY INNER JOIN` also keeps one row per key of
-- the left side, which would drop every interaction but one per target (v_identities
-- has one row per identifier, so ALL adds no duplicates).
SELECT src, dst, event_type, network, count() AS n
FROM
(
    SELECT e.customer_id AS src, i.customer_id AS dst, e.event_type AS event_type, e.network AS network
    FROM
    (
        SELECT
            customer_id,
            type AS event_type,
            network,
            tt AS id_type,
            tv AS id_value
        FROM {snap}
        ARRAY JOIN target_types AS tt, target_values AS tv
    ) AS e
    ALL INNER JOIN
    (
        SELECT id_type, id_value, customer_id FROM {db}.v_identities
    ) AS i USING (id_type, id_value)
)
WHERE src != dst
GROUP BY src, dst, event_type, network
