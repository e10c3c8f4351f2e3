-- Product categories named in event properties (`"category": "..."` anywhere in
-- the JSON), per customer and event type. Parameter: now (unix s).
SELECT customer_id, event_type, category, count() AS n
FROM
(
    SELECT
        customer_id,
        type AS event_type,
        extractAll(properties, '"category"\\s*:\\s*"([^"]+)"') AS cats
    FROM {db}.v_events
    WHERE customer_id != ''
      AND position(properties, '"category"') > 0
      AND occurred_at <= toDateTime(?)
)
ARRAY JOIN cats AS category
GROUP BY customer_id, event_type, category
