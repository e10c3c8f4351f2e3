"""ClickHouse SQL compatibility test on chDB (a current ClickHouse engine, in process).

The migrations in schemas/migrations/ must run unchanged on the local ClickHouse 18.16
server and on current ClickHouse releases. This test applies every migration on a
chDB session, inserts a few rows, and checks the answers of the documented queries.

Run with tests/chdb/run.sh (creates a venv under .cache/chdb-venv).
"""

import glob
import json
import os
import re
import shutil
import tempfile

import pytest
from chdb import session as chs

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MIGRATIONS_DIR = os.path.join(REPO, "schemas", "migrations")
DB = "crm_test"


# --------------------------------------------------------------------------- helpers


def migration_files():
    files = sorted(glob.glob(os.path.join(MIGRATIONS_DIR, "*.sql")))
    assert files, "no migrations found in %s" % MIGRATIONS_DIR
    return files


def split_statements(text):
    """Strips `--` comment lines and splits on `;` at the end of a line."""
    lines = [l for l in text.splitlines() if not l.strip().startswith("--")]
    statements, current = [], []
    for line in lines:
        stripped = line.rstrip()
        if stripped.endswith(";"):
            current.append(stripped[:-1])
            statements.append("\n".join(current))
            current = []
        else:
            current.append(line)
    statements.append("\n".join(current))
    return [s.strip() for s in statements if s.strip()]


def migration_statements(db):
    """[(file name, statement)] for every migration, in name order."""
    out = []
    for path in migration_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for stmt in split_statements(text):
            out.append((os.path.basename(path), stmt.replace("{db}", db)))
    return out


ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\S+)\s+ADD\s+COLUMN\s+(\S+)")


def apply_migrations(sess, db):
    for name, stmt in migration_statements(db):
        # like schemas/src/migrations.rs: 18.16 has no ADD COLUMN IF NOT EXISTS, so a
        # column that exists already is skipped
        m = ADD_COLUMN.match(stmt)
        if m:
            table = m.group(1).split(".")[-1]
            have = rows(sess, "SELECT count() FROM system.columns WHERE database = '%s' "
                              "AND table = '%s' AND name = '%s'" % (db, table, m.group(2)))
            if int(have[0][0]) > 0:
                continue
        try:
            sess.query(stmt)
        except Exception as e:  # report the failing file and statement verbatim
            pytest.fail(
                "migration %s failed on chDB:\n%s\n--- error ---\n%s" % (name, stmt, e)
            )


def rows(sess, sql):
    """Runs a query and returns its rows as lists (JSONCompact output)."""
    res = sess.query(sql, "JSONCompact")
    text = res.bytes().decode("utf-8") if hasattr(res, "bytes") else str(res)
    if not text.strip():
        return []
    return json.loads(text)["data"]


def run(sess, sql):
    sess.query(sql)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture()
def sess():
    path = tempfile.mkdtemp(prefix="chdb-socialcrm-")
    s = chs.Session(path)
    try:
        run(s, "CREATE DATABASE IF NOT EXISTS %s" % DB)
        apply_migrations(s, DB)
        # Each test gets a fresh session directory: nothing may leak between tests.
        assert int(rows(s, "SELECT count() FROM %s.events" % DB)[0][0]) == 0
        yield s
    finally:
        try:
            s.close()
        finally:
            shutil.rmtree(path, ignore_errors=True)


EVENT_COLS = (
    "event_id, customer_id, source, channel, type, name, occurred_at, occurred_at_ms, "
    "received_at, identifier_types, identifier_values, target_types, target_values, "
    "traits, properties, context, revenue_amount, revenue_currency, kafka_partition, "
    "kafka_offset, ingested_at, version"
)


def event_row(event_id, customer_id, version, name="Page Viewed", revenue=0.0):
    return (
        "('%s', '%s', 'web', 'web', 'track', '%s', now(), 0, now(), "
        "['anonymous_id'], ['anon-%s'], [], [], '{}', '{}', '{}', %s, '%s', 0, %d, now(), %d)"
        % (event_id, customer_id, name, customer_id, revenue, "USD" if revenue else "",
           version, version)
    )


PROFILE_COLS = (
    "customer_id, version, is_active, merged_into, identifier_types, identifier_values, "
    "traits, channels, sources, event_count, event_count_types, event_count_values, "
    "channel_count_keys, channel_count_values, first_seen, last_seen, order_count, "
    "revenue_currencies, revenue_amounts, engagement_score, influence_score, "
    "lifecycle_stage, score_components, merged_from, updated_at"
)


def profile_row(customer_id, version, is_active, merged_into, email, event_count,
                stage, merged_from=()):
    merged_from_sql = "[" + ", ".join("'%s'" % m for m in merged_from) + "]"
    return (
        "('%s', %d, %d, '%s', ['email'], ['%s'], '{\"name\":\"Ann\"}', ['web'], ['web'], "
        "%d, ['track'], [%d], ['web'], [%d], now(), now(), 0, [], [], 1.5, 0.0, '%s', "
        "'{}', %s, now())"
        % (customer_id, version, is_active, merged_into, email, event_count, event_count,
           event_count, stage, merged_from_sql)
    )


def seed(sess, db=DB):
    """The scenario used by the query checks."""
    # Events: e1 (c_a), e2 (c_b), then e1 again with a higher version (duplicate).
    run(sess, "INSERT INTO %s.events (%s) VALUES %s, %s"
        % (db, EVENT_COLS, event_row("e1", "c_a", 1), event_row("e2", "c_b", 1)))
    run(sess, "INSERT INTO %s.events (%s) VALUES %s"
        % (db, EVENT_COLS, event_row("e1", "c_a", 2, name="Order Completed", revenue=42.5)))
    # c_b was merged into c_a.
    run(sess, "INSERT INTO %s.customer_aliases (retired_id, survivor_id, merged_at, version) "
              "VALUES ('c_b', 'c_a', now(), 1)" % db)
    # The email moved from c_b to c_a (higher version wins).
    id_cols = "id_type, id_value, customer_id, is_active, first_seen, updated_at, version"
    run(sess, "INSERT INTO %s.identities (%s) VALUES "
              "('email', 'a@b.com', 'c_b', 1, now(), now(), 1)" % (db, id_cols))
    run(sess, "INSERT INTO %s.identities (%s) VALUES "
              "('email', 'a@b.com', 'c_a', 1, now(), now(), 2)" % (db, id_cols))
    # An identifier that was unlinked (inactive now).
    run(sess, "INSERT INTO %s.identities (%s) VALUES "
              "('phone', '+14155550123', 'c_a', 1, now(), now(), 1)" % (db, id_cols))
    run(sess, "INSERT INTO %s.identities (%s) VALUES "
              "('phone', '+14155550123', 'c_a', 0, now(), now(), 2)" % (db, id_cols))
    # Profiles: c_a in two versions, c_b merged into c_a (inactive), c_c active.
    run(sess, "INSERT INTO %s.profiles (%s) VALUES %s"
        % (db, PROFILE_COLS, profile_row("c_a", 1, 1, "", "a@b.com", 1, "lead")))
    run(sess, "INSERT INTO %s.profiles (%s) VALUES %s, %s, %s"
        % (db, PROFILE_COLS,
           profile_row("c_a", 2, 1, "", "a@b.com", 2, "customer", merged_from=("c_b",)),
           profile_row("c_b", 2, 0, "c_a", "a@b.com", 1, "lead"),
           profile_row("c_c", 1, 1, "", "c@d.com", 3, "visitor")))


# The marketer queries the docs show, as (name, SQL); every one must run on the
# current engine. Their answers on seed() are checked in test_documented_queries.
DOCUMENTED_QUERIES = [
    # Who is this? identifier -> current customer.
    ("who_is_this",
     "SELECT customer_id FROM {db}.identities FINAL "
     "WHERE id_type = 'email' AND id_value = 'a@b.com'"),
    # Events per customer, following merges.
    ("events_per_customer",
     "SELECT customer_id, count() AS events FROM {db}.v_events "
     "GROUP BY customer_id ORDER BY customer_id"),
    # Profile lookup by identifier.
    ("profile_by_identifier",
     "SELECT p.customer_id, p.version, p.lifecycle_stage, p.event_count "
     "FROM {db}.v_identities AS i "
     "INNER JOIN {db}.v_profiles AS p ON p.customer_id = i.customer_id "
     "WHERE i.id_type = 'email' AND i.id_value = 'a@b.com'"),
]


# --------------------------------------------------------------------------- tests


def test_split_statements():
    text = "-- c\nCREATE A (\n  x String\n);\n\n-- d\nCREATE B AS\nSELECT 1"
    assert split_statements(text) == ["CREATE A (\n  x String\n)", "CREATE B AS\nSELECT 1"]


def test_every_migration_applies(sess):
    tables = {r[0] for r in rows(sess, "SELECT name FROM system.tables WHERE database = '%s'" % DB)}
    for expected in ("events", "identities", "customer_aliases", "identity_ledger",
                     "profiles", "v_events", "v_profiles", "v_identities", "scores",
                     "score_runs", "v_scores"):
        assert expected in tables, "missing %s; have %s" % (expected, sorted(tables))


def test_migrations_are_idempotent(sess):
    seed(sess)
    # The fixture applied them once; IF NOT EXISTS makes a second pass a no-op that
    # keeps the data.
    apply_migrations(sess, DB)
    assert int(rows(sess, "SELECT count() FROM %s.events FINAL" % DB)[0][0]) == 2
    assert int(rows(sess, "SELECT count() FROM %s.v_profiles" % DB)[0][0]) == 2


def test_events_final_deduplicates(sess):
    seed(sess)
    assert int(rows(sess, "SELECT count() FROM %s.events FINAL" % DB)[0][0]) == 2
    # The duplicate kept the higher version's content.
    got = rows(sess, "SELECT name, revenue_amount FROM %s.events FINAL WHERE event_id = 'e1'" % DB)
    assert got == [["Order Completed", 42.5]]


def test_v_events_follows_merges(sess):
    seed(sess)
    got = rows(sess, "SELECT customer_id, count() FROM %s.v_events GROUP BY customer_id" % DB)
    assert [[r[0], int(r[1])] for r in got] == [["c_a", 2]]
    got = rows(sess, "SELECT event_id, customer_id, original_customer_id FROM %s.v_events "
                     "ORDER BY event_id" % DB)
    assert got == [["e1", "c_a", "c_a"], ["e2", "c_a", "c_b"]]


def test_identities_who_is_this(sess):
    seed(sess)
    got = rows(sess, "SELECT customer_id FROM %s.identities FINAL "
                     "WHERE id_type = 'email' AND id_value = 'a@b.com'" % DB)
    assert got == [["c_a"]]
    got = rows(sess, "SELECT customer_id FROM %s.v_identities "
                     "WHERE id_type = 'email' AND id_value = 'a@b.com'" % DB)
    assert got == [["c_a"]]
    # Unlinked identifiers are not in v_identities.
    got = rows(sess, "SELECT customer_id FROM %s.v_identities WHERE id_type = 'phone'" % DB)
    assert got == []


def test_v_profiles_newest_active_only(sess):
    seed(sess)
    got = rows(sess, "SELECT customer_id, version, lifecycle_stage, merged_from "
                     "FROM %s.v_profiles ORDER BY customer_id" % DB)
    norm = [[r[0], int(r[1]), r[2], r[3]] for r in got]
    assert norm == [["c_a", 2, "customer", ["c_b"]], ["c_c", 1, "visitor", []]]


def test_documented_queries(sess):
    seed(sess)
    results = {}
    for name, sql in DOCUMENTED_QUERIES:
        try:
            results[name] = rows(sess, sql.replace("{db}", DB))
        except Exception as e:
            pytest.fail("documented query %s failed on chDB:\n%s\n%s" % (name, sql, e))
    assert results["who_is_this"] == [["c_a"]]
    assert [[r[0], int(r[1])] for r in results["events_per_customer"]] == [["c_a", 2]]
    got = [[r[0], int(r[1]), r[2], int(r[3])] for r in results["profile_by_identifier"]]
    assert got == [["c_a", 2, "customer", 2]]


# --------------------------------------------------------------------------- scoring

SCORING_SQL_DIR = os.path.join(REPO, "pipeline", "src", "scoring", "sql")


def scoring_query(name, params):
    """A scoring query file as the job runs it: comments dropped, `?` bound in order."""
    with open(os.path.join(SCORING_SQL_DIR, name + ".sql"), encoding="utf-8") as f:
        text = "\n".join(l for l in f.read().splitlines() if not l.strip().startswith("--"))
    parts = text.replace("{db}", DB).split("?")
    assert len(parts) == len(params) + 1, (name, len(parts) - 1, params)
    out = parts[0]
    for p, rest in zip(params, parts[1:]):
        out += repr(p) + rest
    return out


def social_event(event_id, customer_id, typ, ts, target=None, traits="{}", props="{}", revenue=0.0):
    tt = "['mastodon']" if target else "[]"
    tv = "['%s']" % target if target else "[]"
    return (
        "('%s', '%s', 'mastodon:m.social', 'social', '%s', '', toDateTime(%d), 0, toDateTime(%d), "
        "['mastodon'], ['@%s@m.social'], %s, %s, '%s', '%s', '{}', %s, '', 0, 0, now(), 1)"
        % (event_id, customer_id, typ, ts, ts, customer_id, tt, tv, traits, props, revenue)
    )


def test_scores_migration_and_scoring_queries(sess):
    now = 1_800_000_000
    day = 86_400
    rows_sql = [
        social_event("s1", "c_carl", "post", now - day, traits='{"followers_count":120}'),
        social_event("s2", "c_o1", "reshare", now - day, target="@carl@m.social"),
        social_event("s3", "c_o2", "reshare", now - 30 * day, target="@carl@m.social"),
        social_event("s4", "c_carl", "order", now - 10 * day,
                     props='{"products":[{"category": "shoes"},{"category":"bags"}]}', revenue=40.0),
    ]
    run(sess, "INSERT INTO %s.events (%s) VALUES %s" % (DB, EVENT_COLS, ", ".join(rows_sql)))
    id_cols = "id_type, id_value, customer_id, is_active, first_seen, updated_at, version"
    run(sess, "INSERT INTO %s.identities (%s) VALUES "
              "('mastodon', '@carl@m.social', 'c_carl', 1, now(), now(), 1)" % (DB, id_cols))

    # the job folds these rows itself (pipeline/src/scoring/job.rs, `Fold`)
    evs = rows(sess, scoring_query("events", [now]) + " ORDER BY occurred_at, customer_id")
    got = [[r[0], r[1], r[2], r[3], int(r[4]), float(r[5]), float(r[6]), list(r[7]), list(r[8]), list(r[9])]
           for r in evs]
    assert got == [
        ["c_o2", "reshare", "social", "mastodon", now - 30 * day, 0.0, -1.0, [], ["mastodon"], ["@carl@m.social"]],
        ["c_carl", "order", "social", "mastodon", now - 10 * day, 40.0, -1.0, ["shoes", "bags"], [], []],
        ["c_carl", "post", "social", "mastodon", now - day, 0.0, 120.0, [], [], []],
        ["c_o1", "reshare", "social", "mastodon", now - day, 0.0, -1.0, [], ["mastodon"], ["@carl@m.social"]],
    ]
    # events after the as-of time are left out
    assert rows(sess, scoring_query("events", [now - 2 * day]) + " ORDER BY occurred_at")[-1][1] == "order"

    ids = rows(sess, scoring_query("identities", []))
    assert [list(r) for r in ids] == [["mastodon", "@carl@m.social", "c_carl"]]

    # scores table and v_scores: only the newest completed run is shown
    run(sess, "INSERT INTO %s.scores (customer_id, run_id, scored_at, engagement_score) VALUES "
              "('c_carl', 'r1', now(), 10), ('c_carl', 'r2', now(), 20), ('c_carl', 'r3', now(), 30)" % DB)
    run(sess, "INSERT INTO %s.score_runs (run_id, started_at, finished_at) VALUES "
              "('r1', now(), now()), ('r2', now(), now())" % DB)
    got = rows(sess, "SELECT customer_id, run_id, engagement_score FROM %s.v_scores" % DB)
    assert [[r[0], r[1], float(r[2])] for r in got] == [["c_carl", "r2", 20.0]]

    # the run's leaderboards (0013): overall ('') and per network, influence desc then
    # customer id, at most N per network; other runs untouched
    run(sess, "INSERT INTO %s.scores (customer_id, run_id, influence_score, networks) VALUES "
              "('c_a', 'r9', 50, ['mastodon', 'x']), ('c_b', 'r9', 70, ['x']), ('c_c', 'r9', 50, []), "
              "('c_d', 'r9', 10, ['mastodon']), ('c_e', 'r8', 99, ['x'])" % DB)
    run(sess, scoring_query("leaderboards", ["r9", 2]))
    got = rows(sess, "SELECT network, groupArray(customer_id) FROM (SELECT network, customer_id "
                     "FROM %s.influencer_ranks WHERE run_id = 'r9' "
                     "ORDER BY network, influence_score DESC, customer_id) GROUP BY network ORDER BY network" % DB)
    assert got == [["", ["c_b", "c_a"]], ["mastodon", ["c_a", "c_d"]], ["x", ["c_b", "c_a"]]]
    got = rows(sess, "SELECT networks FROM %s.influencer_ranks WHERE run_id = 'r9' AND customer_id = 'c_a' "
                     "AND network = 'x'" % DB)
    assert got == [[["mastodon", "x"]]]


def test_identity_rules_columns_and_reattribution(sess):
    """Migration 0007's columns, and the pipeline's re-attribution mutation
    (pipeline/src/run.rs `reattribute`) on a current engine."""
    cols = {r[0] for r in rows(sess, "SELECT name FROM system.columns WHERE database = '%s' "
                                     "AND table = 'events'" % DB)}
    assert "primary_id" in cols
    run(sess, "INSERT INTO %s.events (event_id, customer_id, primary_id, version) VALUES "
              "('e1', 'c_a', 'email:x@shop.io', 1), ('e2', 'c_a', 'user_id:u1', 1)" % DB)
    # the moves go to event_moves (0011) and the mutation reads them there, by the
    # connection's database like the pipeline does
    run(sess, "USE %s" % DB)
    run(sess, "INSERT INTO %s.event_moves VALUES ('7-1', 'email:x@shop.io', 'c_b', now()), "
              "('6-1', 'user_id:u1', 'c_z', now())" % DB)
    moves = ("(SELECT (groupArray(primary_id), groupArray(customer_id)) FROM event_moves "
             "WHERE move_id = '7-1')")
    run(sess, "ALTER TABLE %s.events UPDATE customer_id = transform(primary_id, "
              "tupleElement(%s, 1), tupleElement(%s, 2), customer_id) "
              "WHERE primary_id IN (SELECT primary_id FROM event_moves WHERE move_id = '7-1') "
              "SETTINGS mutations_sync = 1" % (DB, moves, moves))
    got = rows(sess, "SELECT event_id, customer_id FROM %s.events FINAL ORDER BY event_id" % DB)
    assert got == [["e1", "c_b"], ["e2", "c_a"]]
    got = rows(sess, "SELECT id_type, customer_id, seq FROM %s.identity_ledger WHERE 0" % DB)
    assert got == []
    got = rows(sess, "SELECT flags FROM %s.profiles WHERE 0" % DB)
    assert got == []


# ------------------------------------------------------------------ marketer views

MARKETER_EVENTS = [
    # (event_id, customer_id, type, day, context, properties, revenue, currency)
    ("e1", "c1", "page", 1, '{"campaign":{"name":"spring","source":"nl"}}', "{}", 0, ""),
    ("e2", "c1", "order", 2, "{}",
     '{"line_items":[{"product_id":"p1","title":"Shoe","category":"Shoes","quantity":2,"unit_price":10.5},'
     '{"product_id":7,"name":"Hat","total":5}]}', 26, "EUR"),
    ("e3", "c1", "page", 3, '{"campaign":{"name":"summer"}}', "{}", 0, ""),
    ("e4", "c1", "order", 4, "{}", '{"products":[{"sku":"S1","name":"Sock","price":3,"quantity":3}]}', 9, "EUR"),
    ("e5", "c2", "order", 4, "{}", "{}", 7, "USD"),
]

# The marketers' queries of docs/marketers.md (the API runs the same ones).
MARKETER_QUERIES = [
    ("campaign_report",
     "SELECT campaign, revenue_currency AS currency, countIf(kind = 'first') AS first_orders, "
     "sumIf(revenue_amount, kind = 'first') AS first_revenue, countIf(kind = 'last') AS last_orders, "
     "sumIf(revenue_amount, kind = 'last') AS last_revenue "
     "FROM {db}.v_campaign_attribution "
     "ARRAY JOIN [first_touch, last_touch] AS campaign, ['first', 'last'] AS kind "
     "GROUP BY campaign, currency ORDER BY campaign, currency"),
    ("best_sellers",
     "SELECT product_id, any(product_name) AS name, currency, uniqExact(order_id) AS orders, "
     "sum(quantity) AS units, sum(amount) AS revenue FROM {db}.v_order_lines "
     "GROUP BY product_id, currency ORDER BY revenue DESC, product_id"),
    ("customers_by_channel",
     "SELECT channel, count() AS customers FROM {db}.v_profiles ARRAY JOIN channels AS channel "
     "GROUP BY channel ORDER BY customers DESC, channel"),
    ("segment_count",
     "SELECT count() FROM {db}.v_segment_profiles "
     "WHERE engagement_score >= 30 AND hasAll(channels, ['web']) AND has(['loyal', 'repeat'], lifecycle_stage)"),
    ("top_influencers",
     "SELECT customer_id, display_name, influence_score FROM {db}.v_influencers "
     "ORDER BY influence_score DESC LIMIT 100"),
    ("search",
     "SELECT customer_id FROM {db}.v_segment_profiles WHERE positionCaseInsensitiveUTF8(display_name, 'an') > 0 "
     "OR arrayExists(v -> v LIKE 'an%' OR v LIKE '@an%', identifier_values)"),
]


def test_marketer_views_and_queries(sess):
    vals = ", ".join(
        "('%s', '%s', '%s', 'shop', toDateTime('2026-01-0%d 00:00:00'), '%s', '%s', %s, '%s', 'email:%s@x.com', 1)"
        % (i, c, t, d, ctx.replace("'", "\\'"), props.replace("'", "\\'"), rev, cur, c)
        for (i, c, t, d, ctx, props, rev, cur) in MARKETER_EVENTS
    )
    run(sess, "INSERT INTO %s.events (event_id, customer_id, type, channel, occurred_at, context, "
              "properties, revenue_amount, revenue_currency, primary_id, version) VALUES %s" % (DB, vals))
    run(sess, "INSERT INTO %s.profiles (customer_id, version, is_active, identifier_types, identifier_values, "
              "display_name, engagement_score, influence_score, channels, lifecycle_stage) VALUES "
              "('c1', 1, 1, ['email', 'mastodon'], ['ann@x.com', '@ann@m.social'], 'Ann', 50, 70, "
              "['web', 'shop'], 'loyal'), "
              "('c2', 1, 1, ['email'], ['bob@x.com'], 'Bob', 20, 10, ['shop'], 'repeat')" % DB)
    run(sess, "INSERT INTO %s.scores (customer_id, run_id, influence_score) VALUES ('c1', 'r1', 70), ('c2', 'r1', 10)" % DB)
    run(sess, "INSERT INTO %s.score_runs (run_id) VALUES ('r1')" % DB)

    # the materialized view keeps each event under its primary identifier
    assert rows(sess, "SELECT count() FROM %s.events_by_id WHERE primary_id = 'email:c1@x.com'" % DB) == [[4]]
    # v_profiles (recreated by 0009) has the columns added after 0005
    assert rows(sess, "SELECT display_name FROM %s.v_profiles ORDER BY customer_id" % DB) == [["Ann"], ["Bob"]]
    got = rows(sess, "SELECT order_id, first_touch, last_touch FROM %s.v_campaign_attribution ORDER BY order_id" % DB)
    assert got == [["e2", "spring", "spring"], ["e4", "spring", "summer"], ["e5", "", ""]]
    got = rows(sess, "SELECT order_id, product_id, product_name, toFloat64(quantity), toFloat64(amount) "
                     "FROM %s.v_order_lines ORDER BY order_id, product_id" % DB)
    assert got == [["e2", "7", "Hat", 1, 5], ["e2", "p1", "Shoe", 2, 21], ["e4", "S1", "Sock", 3, 9]]
    assert rows(sess, "SELECT email FROM %s.v_segment_profiles ORDER BY customer_id" % DB) == [["ann@x.com"], ["bob@x.com"]]

    results = {}
    for name, sql in MARKETER_QUERIES:
        try:
            results[name] = rows(sess, sql.replace("{db}", DB))
        except Exception as e:
            pytest.fail("marketer query %s failed on chDB:\n%s\n%s" % (name, sql, e))
    report = {(r[0], r[1]): [int(r[2]), float(r[3]), int(r[4]), float(r[5])] for r in results["campaign_report"]}
    assert report[("spring", "EUR")] == [2, 35.0, 1, 26.0]
    assert report[("summer", "EUR")] == [0, 0.0, 1, 9.0]
    assert report[("", "USD")] == [1, 7.0, 1, 7.0]
    assert [r[0] for r in results["best_sellers"]] == ["p1", "S1", "7"]
    assert [[r[0], int(r[1])] for r in results["customers_by_channel"]] == [["shop", 2], ["web", 1]]
    assert results["segment_count"] == [[1]]
    assert [r[0] for r in results["top_influencers"]] == ["c1", "c2"]
    assert results["search"] == [["c1"]]


# ------------------------------------------------------------------------- erasure

ERASURE_SQL = os.path.join(REPO, "src", "erasure.sql")


def erasure_plans(db, request_id):
    """The lines of src/erasure.sql expanded like src/privacy.rs does:
    [(table, rows condition, mutation)]."""
    keys = lambda kind: ("(SELECT key FROM {db}.erasure_keys WHERE request_id = ? AND kind = '%s')"
                         % kind)
    pairs = ("(SELECT (groupArray(key), groupArray(hash)) FROM {db}.erasure_keys "
             "WHERE request_id = ? AND kind = 'id')")

    def expand(t):
        for k, v in [("{ids}", keys("id")), ("{events}", keys("event")),
                     ("{customers}", keys("customer")),
                     ("{keys}", "tupleElement(%s, 1)" % pairs),
                     ("{hashes}", "tupleElement(%s, 2)" % pairs)]:
            t = t.replace(k, v)
        return t.replace("{db}", db).replace("?", "'%s'" % request_id)

    out = []
    with open(ERASURE_SQL, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("--"):
                continue
            table, cond, action = line.split(" | ")
            cond = expand(cond)
            if action == "DELETE":
                mutation = "ALTER TABLE %s.%s DELETE WHERE %s" % (db, table, cond)
            else:
                mutation = "ALTER TABLE %s.%s %s" % (db, table, expand(action))
            out.append((table, cond, mutation))
    return out


def test_erasure_deletes_the_person_and_keeps_the_ledger_entries(sess):
    """Every statement of src/erasure.sql runs on a current engine: the person's rows
    go, the ledger keeps its entries with hashed values, other people stay."""
    db = DB
    ann, retired, bob = "c_ann", "c_ann_old", "c_bob"
    run(sess, "INSERT INTO %s.events (event_id, customer_id, primary_id, identifier_types, "
              "identifier_values, target_types, target_values, version) VALUES "
              "('e1', '%s', 'email:ann@x.io', ['email'], ['ann@x.io'], [], [], 1), "
              "('e2', '%s', 'anonymous_id:ann-pc', ['anonymous_id'], ['ann-pc'], [], [], 1), "
              "('e3', '%s', 'user_id:bob', ['user_id', 'anonymous_id'], ['bob', 'ann-pc'], [], [], 1), "
              "('e4', 'c_x', 'mastodon:@x@m.s', ['mastodon'], ['@x@m.s'], ['email'], ['ann@x.io'], 1), "
              "('e5', '%s', 'user_id:bob', ['user_id'], ['bob'], [], [], 1)" % (db, ann, retired, bob, bob))
    run(sess, "INSERT INTO %s.identities VALUES ('email', 'ann@x.io', '%s', 1, now(), now(), 1), "
              "('anonymous_id', 'ann-pc', '%s', 1, now(), now(), 1), "
              "('user_id', 'bob', '%s', 1, now(), now(), 1)" % (db, ann, ann, bob))
    run(sess, "INSERT INTO %s.customer_aliases VALUES ('%s', '%s', now(), 1)" % (db, retired, ann))
    run(sess, "INSERT INTO %s.identity_ledger (entry_id, at, action, customer_id, id_type, id_value, "
              "merged_customer_id, rule, reason, event_id, version) VALUES "
              "('l1', now(), 'link', '%s', 'email', 'ann@x.io', '', '', '', 'e1', 1), "
              "('l2', now(), 'reject', '%s', 'anonymous_id', 'ann-pc', '', 'identifier_limit', 'at most 1', 'e3', 1), "
              "('l3', now(), 'split', '%s', 'user_id', 'bob', 'c_y', 'unlinked', 'unlink email:ann@x.io, command c1', 'c1', 1), "
              "('l4', now(), 'link', '%s', 'user_id', 'bob', '', '', '', 'e5', 1), "
              "('l5', now(), 'erase', '%s', '', '', '', 'erasure', 'erased (2 identifiers)', 'command:r1', 2)"
              % (db, ann, bob, bob, bob, ann))
    run(sess, "INSERT INTO %s.profiles (customer_id, version, is_active, merged_into, identifier_types, "
              "identifier_values) VALUES ('%s', 1, 1, '', ['email', 'anonymous_id'], ['ann@x.io', 'ann-pc']), "
              "('%s', 1, 0, '%s', [], []), ('%s', 2, 1, '', ['user_id'], ['bob']), "
              "('%s', 1, 1, '', ['user_id', 'anonymous_id'], ['bob', 'ann-pc'])" % (db, ann, retired, ann, bob, bob))
    run(sess, "INSERT INTO %s.scores (customer_id, run_id, scored_at) VALUES ('%s', 'r', now()), "
              "('%s', 'r', now())" % (db, ann, bob))
    run(sess, "INSERT INTO %s.influencer_ranks (run_id, network, customer_id, influence_score) "
              "VALUES ('r', '', '%s', 9), ('r', '', '%s', 1)" % (db, ann, bob))
    run(sess, "INSERT INTO %s.event_moves VALUES ('1-1', 'email:ann@x.io', '%s', now())" % (db, ann))
    run(sess, "INSERT INTO %s.erasure_keys VALUES ('r1', 'id', 'email:ann@x.io', 'sha256:h1'), "
              "('r1', 'id', 'anonymous_id:ann-pc', 'sha256:h2'), ('r1', 'id', 'email:ann@x.io', 'sha256:h1'), "
              "('r1', 'customer', '%s', ''), ('r1', 'customer', '%s', '')" % (db, ann, retired))
    plans = erasure_plans(db, "r1")
    ev = [p for p in plans if p[0] == "events"][0]
    run(sess, "INSERT INTO %s.erasure_keys SELECT 'r1', 'event', event_id, '' FROM %s.events WHERE %s"
        % (db, db, ev[1]))

    def counts():
        return [int(rows(sess, "SELECT count() FROM %s.%s WHERE %s" % (db, t, c))[0][0])
                for t, c, _ in plans]

    before = counts()
    assert all(n > 0 for n in before), list(zip([p[0] for p in plans], before))
    for _, _, mutation in plans:
        try:
            run(sess, mutation + " SETTINGS mutations_sync = 2")
        except Exception as e:
            pytest.fail("erasure mutation failed on chDB:\n%s\n--- error ---\n%s" % (mutation, e))
    assert counts() == [0] * len(plans)
    # Bob keeps his own events, profile and score; the events that carried Ann's
    # identifiers (her cookie on his login, a mention of her) are gone
    assert rows(sess, "SELECT event_id FROM %s.events ORDER BY event_id" % db) == [["e5"]]
    assert rows(sess, "SELECT customer_id, version FROM %s.profiles ORDER BY customer_id" % db) == [[bob, 2]]
    assert rows(sess, "SELECT customer_id FROM %s.scores" % db) == [[bob]]
    assert rows(sess, "SELECT id_value FROM %s.identities" % db) == [["bob"]]
    # the ledger keeps every entry; Ann's values are hashes and the reasons that
    # quoted her are blank; her erase entry is as written
    got = rows(sess, "SELECT entry_id, customer_id, id_value, reason FROM %s.identity_ledger "
                     "ORDER BY entry_id" % db)
    assert got == [["l1", ann, "sha256:h1", ""], ["l2", bob, "sha256:h2", ""],
                   ["l3", bob, "bob", ""], ["l4", bob, "bob", ""],
                   ["l5", ann, "", "erased (2 identifiers)"]], got
    assert int(rows(sess, "SELECT count() FROM %s.customer_aliases" % db)[0][0]) == 0


def test_suppression_lifts_queries(sess):
    """The lifts in force (schemas/src/suppression.rs `load_lifts`, the same two
    queries) and the requester's reads (src/privacy.rs) run on a current engine: the
    newest lift per hash, and each lifted hash's newest erasure time to compare."""
    db = DB
    run(sess, "INSERT INTO %s.suppressions VALUES ('sha256:a', 'email', 'erase-1', 's1', "
              "toDateTime('2026-10-01 00:00:00'), 1), ('sha256:b', 'email', 'erase-2', 's1', "
              "toDateTime('2026-10-01 00:00:00'), 1), ('sha256:b', 'email', 'erase-3', 's1', "
              "toDateTime('2026-12-01 00:00:00'), 2), ('sha256:c', 'user_id', 'erase-1', 's1', "
              "toDateTime('2026-10-01 00:00:00'), 1)" % db)
    run(sess, "INSERT INTO %s.suppression_lifts VALUES "
              "('sha256:a', 'email', 'lift-1', 's1', 'requested', toDateTime('2026-11-01 00:00:00'), 'cli', 'consent', 1), "
              "('sha256:a', 'email', 'lift-1', 's1', 'applied', toDateTime('2026-11-01 00:00:00'), 'cli', '', 2), "
              "('sha256:b', 'email', 'lift-2', 's1', 'requested', toDateTime('2026-11-01 00:00:00'), 'api:dpo', 'x', 1), "
              "('sha256:z', 'email', 'lift-3', 's0', 'requested', toDateTime('2026-11-01 00:00:00'), 'cli', 'y', 1)" % db)
    run(sess, "INSERT INTO %s.suppression_lifts VALUES "
              "('sha256:b', 'email', 'lift-2', 's1', 'applied', toDateTime('2026-11-01 00:00:00'), 'api:dpo', '', 2), "
              "('sha256:c', 'user_id', 'lift-4', 's1', 'requested', toDateTime('2026-11-01 00:00:00'), 'cli', 'never sent', 1)"
        % db)
    lifted = rows(sess, "SELECT hash, toInt64(max(lifted_at)) FROM %s.suppression_lifts "
                        "WHERE salt_id = 's1' AND status = 'applied' GROUP BY hash ORDER BY hash" % db)
    assert [r[0] for r in lifted] == ["sha256:a", "sha256:b"]
    added = dict((r[0], int(r[1])) for r in rows(
        sess, "SELECT hash, toInt64(max(added_at)) FROM %s.suppressions WHERE salt_id = 's1' "
              "AND hash IN (SELECT hash FROM %s.suppression_lifts WHERE status = 'applied') GROUP BY hash"
              % (db, db)))
    assert sorted(added) == ["sha256:a", "sha256:b"]
    # in force: a (lifted after its erasure); b was erased again after its lift
    in_force = [h for h, at in lifted if int(at) >= added[h]]
    assert in_force == ["sha256:a"]
    both = rows(sess, "SELECT request_id, status, reason FROM %s.suppression_lifts FINAL "
                      "WHERE request_id = 'lift-1' ORDER BY status" % db)
    assert both == [["lift-1", "applied", ""], ["lift-1", "requested", "consent"]]
    assert int(rows(sess, "SELECT count() FROM %s.suppressions WHERE hash = 'sha256:a' "
                          "AND salt_id = 's1'" % db)[0][0]) == 1
