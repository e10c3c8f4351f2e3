-- Who each identifier belongs to now: the targets of interactions (a mention of
-- `mastodon:@carl@m.social`) become edges to these customers.
SELECT id_type, id_value, customer_id
FROM {db}.v_identities
