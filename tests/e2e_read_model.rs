//! The in-memory read model of `socialcrm serve` (docs/api.md "Read model") against
//! the ClickHouse path: two servers on one database, one with `read_model =
//! "memory"`, one with `"clickhouse"`, must give the same JSON for the same
//! profiles (a merged one, a hashed identifier); a change becomes visible within
//! the poll interval, a new identifier at once, and an erased person disappears as
//! soon as the pipeline has applied the erasure (before the deleting mutations).
//! Rows are written to ClickHouse directly, as the pipeline would write them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const KEY: &str = "read-model-key-123";
const SALT: &str = "read-model-test-salt-0123";
const POLL_MS: u64 = 200;

/// A stored (hashed) email, as `[privacy]` writes it.
fn hashed(value: &str) -> String {
    let mut h = Sha256::new();
    h.update(SALT.as_bytes());
    h.update([0u8]);
    h.update(value.as_bytes());
    format!("sha256:{}", hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A second `serve` on the same database, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(base: &str, path: &str) -> (u16, Value) {
    let r = http::get_with_key(&format!("{base}{path}"), KEY);
    let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
    (r.status, v)
}

fn health(base: &str) -> Value {
    let r = http::get_with_key(&format!("{base}/health"), KEY);
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

#[allow(clippy::too_many_arguments)]
fn profile_row(
    w: &World,
    cid: &str,
    version: u64,
    active: u8,
    merged_into: &str,
    ids: &[(&str, &str)],
    event_count: u64,
    run_id: &str,
) {
    let types: Vec<String> = ids.iter().map(|(t, _)| format!("'{t}'")).collect();
    let values: Vec<String> = ids.iter().map(|(_, v)| format!("'{v}'")).collect();
    let components = if run_id.is_empty() {
        "{}".to_string()
    } else {
        format!("{{\"run_id\":\"{run_id}\",\"rfm\":[3,2,1],\"top_channels\":[\"web\"]}}")
    };
    w.query(&format!(
        "INSERT INTO profiles (customer_id, version, is_active, merged_into, identifier_types, identifier_values, \
         traits, channels, sources, event_count, event_count_types, event_count_values, channel_count_keys, \
         channel_count_values, first_seen, last_seen, order_count, revenue_currencies, revenue_amounts, \
         engagement_score, influence_score, lifecycle_stage, score_components, merged_from, updated_at, flags, \
         display_name, rfm_segment, top_categories, top_channels) VALUES \
         ('{cid}', {version}, {active}, '{merged_into}', [{t}], [{v}], '{{\"name\":\"N {cid}\"}}', ['web','social'], \
         ['web'], {event_count}, ['page','order'], [{event_count}, 0], ['web'], [{event_count}], \
         toDateTime(1700000000), toDateTime(1700000000 + {version}), 1, ['EUR'], [12.5], 41.5, 7.25, 'repeat', \
         '{components}', {merged_from}, now(), [], 'N {cid}', 'loyal', ['coffee'], ['web'])",
        t = types.join(","),
        v = values.join(","),
        merged_from = if cid == "c_a" { "['c_b']" } else { "[]" },
    ));
}

fn identity(w: &World, t: &str, v: &str, cid: &str, active: u8, version: u64) {
    w.query(&format!(
        "INSERT INTO identities (id_type, id_value, customer_id, is_active, first_seen, updated_at, version) \
         VALUES ('{t}', '{v}', '{cid}', {active}, now(), now(), {version})"
    ));
}

fn event(w: &World, primary: &str, id: &str, at: u32, version: u64) {
    w.query(&format!(
        "INSERT INTO events_by_id (primary_id, occurred_at, event_id, source, channel, type, name, \
         revenue_amount, revenue_currency, version) VALUES \
         ('{primary}', toDateTime({at}), '{id}', 'web', 'web', 'page', 'Viewed', 0, '', {version})"
    ));
}

fn score(w: &World, cid: &str, run_id: &str, engagement: f64) {
    w.query(&format!(
        "INSERT INTO scores (customer_id, run_id, scored_at, engagement_score, influence_score, engagement_raw, \
         influence_raw, recency_days, frequency, monetary, channels_in_window, reach, amplification, pagerank, \
         rfm_r, rfm_f, rfm_m, rfm_segment, lifecycle_stage, top_categories, top_channels, networks, \
         network_followers, network_amplification, components) VALUES \
         ('{cid}', '{run_id}', toDateTime(1700000100), {engagement}, 7.25, 3.5, 0.1, 12.0, 2, 12.5, 1, 0.3, 1.0, \
         0.0001, 3, 2, 1, 'loyal', 'repeat', ['coffee'], ['web'], ['x'], [120.0], [1.0], \
         '{{\"engagement\":{{\"score\":{engagement}}}}}')"
    ));
}

/// Both servers give the same status and JSON for every path.
fn same_answers(memory: &str, clickhouse: &str, paths: &[&str]) {
    for p in paths {
        let (sm, vm) = get(memory, p);
        let (sc, vc) = get(clickhouse, p);
        assert_eq!(
            sm, sc,
            "{p}: status memory {sm} vs clickhouse {sc}: {vm} / {vc}"
        );
        assert_eq!(vm, vc, "{p}: memory and clickhouse answers differ");
    }
}

fn memory_answers(base: &str) -> f64 {
    let r = http::get_with_key(&format!("{base}/metrics"), KEY);
    r.body
        .lines()
        .filter(|l| {
            l.starts_with("socialcrm_api_read_model_answers_total") && l.contains("from=\"memory\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn memory_and_clickhouse_agree_changes_show_within_a_poll_and_erasures_disappear() {
    let mut w = World::new("readmodel");
    let (pm, pc) = (free_port(), free_port());
    let api = |port: u16, mode: &str| {
        format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\nkeys = [{{ name = \"t\", key = \"{KEY}\", scopes = [\"read\"] }}]\n\
             recent_events = 3\nread_model = \"{mode}\"\nread_model_poll_ms = {POLL_MS}\n\n\
             [privacy]\nsalt = \"{SALT}\"\nhash_identifier_types = [\"email\"]\n"
        )
    };
    let base_config = std::fs::read_to_string(&w.config).expect("config");
    std::fs::write(&w.config, format!("{base_config}\n{}", api(pm, "memory"))).expect("config");
    let ch_config = w.dir.path().join("clickhouse-path.toml");
    std::fs::write(
        &ch_config,
        format!("{base_config}\n{}", api(pc, "clickhouse")),
    )
    .expect("config");

    // ann (c_a, hashed email + x handle) absorbed bob (c_b); an identity of bob's
    // still points at c_b (a batch in flight); dan (c_d) has no scores or events
    let ann = hashed("ann@example.com");
    profile_row(
        &w,
        "c_a",
        10,
        1,
        "",
        &[("email", &ann), ("x", "111")],
        5,
        "R1",
    );
    profile_row(&w, "c_b", 9, 0, "c_a", &[], 0, "");
    profile_row(&w, "c_d", 10, 1, "", &[("phone", "+14155550100")], 1, "");
    identity(&w, "email", &ann, "c_a", 1, 10);
    identity(&w, "x", "111", "c_a", 1, 10);
    identity(&w, "user_id", "bob-old", "c_b", 1, 9);
    identity(&w, "phone", "+14155550100", "c_d", 1, 10);
    score(&w, "c_a", "R0", 11.0);
    score(&w, "c_a", "R1", 41.5);
    // R1 completed, with its leaderboards filled by the scoring job's statement
    w.query("INSERT INTO score_runs (run_id, started_at, finished_at) VALUES ('R1', now(), now())");
    w.query(
        &socialcrm_pipeline::scoring::job::leaderboards_sql(&w.db)
            .replacen('?', "'R1'", 1)
            .replacen(
                '?',
                &socialcrm_pipeline::scoring::job::LEADERBOARD_ROWS.to_string(),
                1,
            ),
    );
    for (i, at) in [100u32, 300, 200, 500, 400].iter().enumerate() {
        let primary = if i % 2 == 0 {
            format!("email:{ann}")
        } else {
            "x:111".into()
        };
        event(&w, &primary, &format!("ev-{i}"), 1_700_000_000 + at, 10);
    }

    w.spawn("serve", &["serve"]);
    let _ch_server = Server(
        Command::new(World::bin())
            .arg("--config")
            .arg(&ch_config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let memory = format!("http://127.0.0.1:{pm}");
    let clickhouse = format!("http://127.0.0.1:{pc}");
    wait_until(Duration::from_secs(60), "read model loaded", || {
        http::blocking_get_ok(&format!("{memory}/health"))
            && health(&memory)["read_model"]["loaded"] == true
    });
    wait_until(Duration::from_secs(30), "clickhouse-path server up", || {
        http::blocking_get_ok(&format!("{clickhouse}/health"))
    });
    assert_eq!(health(&clickhouse)["read_model"]["mode"], "clickhouse");
    let h = health(&memory);
    assert_eq!(h["read_model"]["profiles"], 2, "{h}");
    assert_eq!(h["read_model"]["identifiers"], 4, "{h}");
    assert_eq!(h["read_model"]["events"], 3, "{h}");

    let paths = [
        "/v1/profiles/lookup?id=email:Ann@Example.com",
        "/v1/profiles/lookup?id=x:111",
        "/v1/profiles/lookup?id=user_id:bob-old",
        "/v1/profiles/lookup?id=phone:%2B14155550100",
        "/v1/profiles/c_a",
        "/v1/profiles/c_b",
        "/v1/profiles/c_d",
        "/v1/profiles/lookup?id=email:nobody@example.com",
        "/v1/profiles/c_nobody",
        "/v1/profiles/lookup?id=nonsense",
        // leaderboards: names of live profiles from memory on one server
        "/v1/top/influencers",
        "/v1/top/influencers?network=x",
    ];
    let before = memory_answers(&memory);
    same_answers(&memory, &clickhouse, &paths);
    let (_, top) = get(&memory, "/v1/top/influencers?network=x");
    assert_eq!(top["items"][0]["customer_id"], "c_a", "{top}");
    assert_eq!(
        memory_answers(&memory) - before,
        7.0,
        "the 7 known profiles come from memory\n{}",
        w.log("serve")
    );
    let (_, a) = get(&memory, "/v1/profiles/lookup?id=user_id:bob-old");
    assert_eq!(
        a["customer_id"], "c_a",
        "a merged-away id leads to the survivor"
    );
    assert_eq!(
        a["scores"]["run_id"], "R1",
        "the scores of the profile's run"
    );
    let ids = recent_event_ids(&a);
    assert_eq!(
        ids,
        ["ev-3", "ev-4", "ev-1"],
        "the 3 newest over both identifiers"
    );

    // a new event: the profile changes in ClickHouse, then in memory within a poll
    event(&w, "x:111", "ev-new", 1_700_001_000, 11);
    profile_row(
        &w,
        "c_a",
        11,
        1,
        "",
        &[("email", &ann), ("x", "111")],
        6,
        "R1",
    );
    let t = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "new event served from memory",
        || get(&memory, "/v1/profiles/c_a").1["recent_events"][0]["event_id"] == "ev-new",
    );
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(POLL_MS * 2 + 1500),
        "visible after {took:?} with a {POLL_MS} ms poll"
    );
    same_answers(&memory, &clickhouse, &paths);

    // an unlink: x:111 moves to a new profile c_e
    profile_row(&w, "c_a", 12, 1, "", &[("email", &ann)], 6, "R1");
    profile_row(&w, "c_e", 12, 1, "", &[("x", "111")], 1, "");
    identity(&w, "x", "111", "c_e", 1, 12);
    wait_until(
        Duration::from_secs(10),
        "moved identifier re-pointed",
        || get(&memory, "/v1/profiles/lookup?id=x:111").1["customer_id"] == "c_e",
    );
    same_answers(&memory, &clickhouse, &paths);

    // a brand-new identifier is found at once (the miss goes to ClickHouse)
    let fay = hashed("fay@example.com");
    profile_row(&w, "c_f", 13, 1, "", &[("email", &fay)], 1, "");
    identity(&w, "email", &fay, "c_f", 1, 13);
    let (st, f) = get(&memory, "/v1/profiles/lookup?id=email:fay@example.com");
    assert_eq!((st, &f["customer_id"]), (200, &Value::from("c_f")), "{f}");

    // an erasure the pipeline has applied: ann and bob disappear from the API within
    // a poll, while their rows are still in ClickHouse (mutations not run yet)
    w.query(
        "INSERT INTO erasures (request_id, status, version, requested_at, updated_at, requested_by, subject, \
         customer_ids, identifiers, tables, rows_before, rows_after, message) VALUES \
         ('er-1', 'requested', 1, now(), now(), 'test', 'sha256:x', ['c_a'], 3, [], [], [], ''), \
         ('er-1', 'applied', 2, now(), now(), 'test', 'sha256:x', ['c_a', 'c_b'], 3, [], [], [], '')",
    );
    let gone = [
        "/v1/profiles/lookup?id=email:ann@example.com",
        "/v1/profiles/lookup?id=user_id:bob-old",
        "/v1/profiles/c_a",
        "/v1/profiles/c_b",
    ];
    wait_until(Duration::from_secs(10), "erased person gone", || {
        gone.iter().all(|p| get(&memory, p).0 == 404)
    });
    assert_eq!(
        get(&clickhouse, "/v1/profiles/c_a").0,
        200,
        "the rows are still in ClickHouse: the model, not the deletion, hid them"
    );
    // others are still served
    assert_eq!(get(&memory, "/v1/profiles/lookup?id=x:111").0, 200);
    assert_eq!(get(&memory, "/v1/profiles/c_d").0, 200);
    // the mutations run and the erasure is verified: still gone, from both paths
    for t in ["profiles", "identities", "scores"] {
        w.query(&format!(
            "ALTER TABLE {t} DELETE WHERE customer_id IN ('c_a', 'c_b')"
        ));
    }
    w.query(&format!(
        "ALTER TABLE events_by_id DELETE WHERE primary_id = 'email:{ann}'"
    ));
    w.query(
        "INSERT INTO erasures (request_id, status, version, requested_at, updated_at, requested_by, subject, \
         customer_ids, identifiers, tables, rows_before, rows_after, message) VALUES \
         ('er-1', 'verified', 4, now(), now(), 'test', 'sha256:x', ['c_a', 'c_b'], 3, [], [], [], '')",
    );
    wait_until(Duration::from_secs(30), "mutations done", || {
        w.query_u64("SELECT count() FROM profiles WHERE customer_id = 'c_a'") == 0
    });
    std::thread::sleep(Duration::from_millis(POLL_MS * 3));
    for p in gone {
        assert_eq!(get(&memory, p).0, 404, "{p}");
        assert_eq!(get(&clickhouse, p).0, 404, "{p}");
    }
    assert!(
        health(&memory)["read_model"]["lag_ms"]
            .as_u64()
            .is_some_and(|l| l < 5000),
        "{}",
        health(&memory)
    );
}
