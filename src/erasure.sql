-- What an erasure deletes (src/privacy.rs, docs/privacy.md): one line per table,
-- `table | rows that hold the person's data | mutation`, in the order they run.
-- The rows are counted before and after; the mutation is `DELETE` (those rows) or
-- `UPDATE <assignments> WHERE <condition>`. Placeholders, expanded by src/privacy.rs
-- (and by tests/chdb/test_migrations.py, which runs every line on current ClickHouse):
--   {ids} {events} {customers}: the request's keys of that kind in erasure_keys
--     (stored identifier keys `type:value`, event ids, customer ids);
--   {keys} {hashes}: its identifier keys and their hashes, as aligned arrays;
--   {db}: the database. Each expansion binds the request id once (`?`).
-- Only forms that run on ClickHouse 18.16 in a mutation: `IN (SELECT ...)` (also inside
-- a lambda), scalar subqueries without DISTINCT/ORDER BY, no `IN [array]`, and no lambda
-- that reads a column it is not given as an argument.
events_by_id | event_id IN {events} OR primary_id IN {ids} | DELETE
events | customer_id IN {customers} OR primary_id IN {ids} OR arrayExists((t, v) -> concat(t, ':', v) IN {ids}, identifier_types, identifier_values) OR arrayExists((t, v) -> concat(t, ':', v) IN {ids}, target_types, target_values) OR event_id IN {events} | DELETE
event_moves | primary_id IN {ids} OR customer_id IN {customers} | DELETE
identities | concat(id_type, ':', id_value) IN {ids} OR customer_id IN {customers} | DELETE
customer_aliases | retired_id IN {customers} OR survivor_id IN {customers} | DELETE
-- the ledger keeps its entries: identifier values become their hashes, reasons (which
-- can quote identifiers) are blanked, the `erase` entries stay as written; counted:
-- a clear value left, or a reason of the person's entries not yet blanked
identity_ledger | concat(id_type, ':', id_value) IN {ids} OR (action != 'erase' AND reason != '' AND (customer_id IN {customers} OR merged_customer_id IN {customers})) OR arrayExists((k, r) -> position(r, k) > 0, {keys}, replicate(reason, {keys})) | UPDATE id_value = transform(concat(id_type, ':', id_value), {keys}, {hashes}, id_value), reason = '' WHERE action != 'erase' AND (customer_id IN {customers} OR merged_customer_id IN {customers} OR concat(id_type, ':', id_value) IN {ids} OR arrayExists((k, r) -> position(r, k) > 0, {keys}, replicate(reason, {keys})))
profiles | customer_id IN {customers} OR merged_into IN {customers} OR arrayExists((t, v) -> concat(t, ':', v) IN {ids}, identifier_types, identifier_values) | DELETE
scores | customer_id IN {customers} | DELETE
influencer_ranks | customer_id IN {customers} | DELETE
