-- Product categories named in event properties (`"category": "..."` anywhere in
-- the JSON, extracted into the snapshot), per customer and event type.
SELECT customer_id, type AS event_type, category, count() AS n
FROM {snap}
ARRAY JOIN categories AS category
GROUP BY customer_id, event_type, category
