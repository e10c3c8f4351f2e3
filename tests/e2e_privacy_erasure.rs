//! End to end: erasure of a person through the identity writer, Kafka and every
//! ClickHouse table; suppression of replays and of a writer rebuilt from scratch;
//! right of access; the admin endpoints of the HTTP API (docs/privacy.md).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_schemas::json_schema;

const ADMIN_KEY: &str = "admin-key-0123456789";
const READ_KEY: &str = "read-key-0123456789";

/// Everything that would identify Ann if it were stored anywhere.
const ANN: [&str; 7] = [
    "ann-laptop",
    "ann-phone",
    "ann-tablet",
    "ann-1",
    "ann@example.com",
    "@ann@m.social",
    "Ann Lee",
];

fn ts(day: u32, hour: u32) -> String {
    format!("2026-10-{day:02}T{hour:02}:00:00Z")
}

/// Ann's and Bob's web history (Segment messages).
fn web_history() -> Vec<Value> {
    vec![
        json!({"type": "page", "anonymousId": "ann-phone", "messageId": "p0", "timestamp": ts(1, 8)}),
        json!({"type": "page", "anonymousId": "ann-laptop", "messageId": "p1", "timestamp": ts(1, 9)}),
        json!({"type": "identify", "anonymousId": "ann-laptop", "userId": "ann-1", "messageId": "i1",
               "traits": {"email": "ann@example.com", "name": "Ann Lee"}, "timestamp": ts(1, 10)}),
        // her phone with her address: her two profiles merge (a retired id)
        json!({"type": "identify", "anonymousId": "ann-phone", "messageId": "i2",
               "traits": {"email": "ann@example.com"}, "timestamp": ts(2, 10)}),
        json!({"type": "track", "event": "Order Completed", "userId": "ann-1", "messageId": "o1",
               "properties": {"total": 59.9, "currency": "EUR"}, "timestamp": ts(3, 10)}),
        json!({"type": "identify", "userId": "bob-1", "anonymousId": "bob-pc", "messageId": "b1",
               "traits": {"email": "bob@example.com", "name": "Bob"}, "timestamp": ts(4, 10)}),
        // Bob on Ann's laptop: his event (the cookie is refused for him), with her cookie
        json!({"type": "page", "userId": "bob-1", "anonymousId": "ann-laptop", "messageId": "b2",
               "timestamp": ts(5, 10)}),
        json!({"type": "page", "userId": "bob-1", "messageId": "b3", "timestamp": ts(6, 10)}),
    ]
}

/// Ann's post on Mastodon and Bob's reply to her (canonical events).
fn social_history(p: &str) -> Vec<(String, Vec<u8>)> {
    let ev = |id: &str, at: String, ids: Value, target: Value| {
        let mut v = json!({"schema_version": 1, "event_id": format!("{p}{id}"),
            "source": "mastodon:m.social", "channel": "social", "type": "post",
            "occurred_at": at, "received_at": at, "identifiers": ids});
        if !target.is_null() {
            v["type"] = json!("reply");
            v["target"] = target;
        }
        (id.to_string(), serde_json::to_vec(&v).expect("json"))
    };
    vec![
        ev(
            "s1",
            ts(7, 10),
            json!([{"type": "mastodon", "value": "@ann@m.social"}, {"type": "email", "value": "ann@example.com"}]),
            Value::Null,
        ),
        ev(
            "s2",
            ts(7, 11),
            json!([{"type": "mastodon", "value": "@bob@m.social"}]),
            json!([{"type": "mastodon", "value": "@ann@m.social"}]),
        ),
    ]
}

/// Where in the world's database (every table, and the mutation texts) one of
/// Ann's values is still written.
fn traces_of_ann(w: &World) -> Vec<String> {
    let tables = w.query(&format!(
        "SELECT name FROM system.tables WHERE database = '{}' AND engine NOT LIKE '%View' ORDER BY name",
        w.db
    ));
    let mut found = Vec::new();
    for t in tables.lines() {
        let dump = w.query(&format!("SELECT * FROM {t} FORMAT TSV"));
        for v in ANN {
            if dump.contains(v) {
                found.push(format!("{t}: {v}"));
            }
        }
    }
    let mutations = w.query(&format!(
        "SELECT command FROM system.mutations WHERE database = '{}' FORMAT TSV",
        w.db
    ));
    for v in ANN {
        if mutations.contains(v) {
            found.push(format!("system.mutations: {v}"));
        }
    }
    found
}

fn customer(w: &World, t: &str, v: &str) -> String {
    w.query(&format!(
        "SELECT customer_id FROM identities FINAL WHERE id_type = '{t}' AND id_value = '{v}' AND is_active = 1"
    ))
    .trim()
    .to_string()
}

fn metric(w: &World, name: &str) -> f64 {
    let r = http::request(
        "GET",
        &format!("http://{}/metrics", w.metrics_addr),
        &[],
        b"",
    )
    .expect("metrics");
    r.body
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn events_of_bob(w: &World) -> String {
    w.query(
        "SELECT arrayStringConcat(groupArray(replaceOne(event_id, 'web:', '')), ',') FROM \
         (SELECT event_id FROM events FINAL WHERE has(identifier_values, 'bob-1') ORDER BY event_id)",
    )
    .trim()
    .to_string()
}

#[test]
fn erasure_is_complete_and_replays_and_rebuilds_do_not_bring_the_person_back() {
    let mut w = World::new("erase");
    let api_port = free_port();
    w.append_config(&format!(
        "[scoring]\ninterval_secs = 0\napply_poll_secs = 1\n\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         keys = [{{ name = \"dpo\", key = \"{ADMIN_KEY}\", scopes = [\"read\", \"admin\"] }},\n  \
         {{ name = \"marketing\", key = \"{READ_KEY}\", scopes = [\"read\", \"export\"] }}]\n"
    ));
    w.start_collector();
    w.start_pipeline();
    let topics = w.topics();
    let send_all = |w: &World| {
        let r = w.post("/v1/batch", &json!({"batch": web_history()}));
        assert_eq!(r.status, 200, "{}", r.body);
        produce_raw(&topics.events, &social_history(""));
    };
    // her phone's and her laptop's first visits are two profiles before i2 merges them
    let r = w.post("/v1/batch", &json!({"batch": web_history()[..3]}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "Ann's first events", || {
        w.query_u64("SELECT count() FROM events FINAL") == 3
    });
    send_all(&w);
    wait_until(Duration::from_secs(60), "every event", || {
        w.query_u64("SELECT count() FROM events FINAL") == 10
    });
    w.wait_caught_up();
    let ann = customer(&w, "user_id", "ann-1");
    let bob = customer(&w, "user_id", "bob-1");
    assert!(ann.starts_with("c_") && bob.starts_with("c_") && ann != bob);
    assert_eq!(customer(&w, "anonymous_id", "ann-phone"), ann);
    assert_eq!(customer(&w, "mastodon", "@ann@m.social"), ann);
    let retired = w.query(&format!(
        "SELECT retired_id FROM customer_aliases FINAL WHERE survivor_id = '{ann}'"
    ));
    let retired = retired.trim().to_string();
    assert!(
        retired.starts_with("c_"),
        "Ann's two profiles merged: {retired:?}"
    );
    w.cli_ok(&["score", "run"]);
    wait_until(Duration::from_secs(60), "Ann's scores", || {
        w.query_u64(&format!(
            "SELECT count() FROM scores WHERE customer_id = '{ann}'"
        )) > 0
    });
    // a tablet the family shares was linked to Ann, and an operator unlinked it:
    // the unlink command (kept for good on the compacted commands topic) names her
    let r = w.post(
        "/v1/identify",
        &json!({"anonymousId": "family-tablet", "userId": "ann-1", "messageId": "t1",
                "timestamp": ts(8, 10)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "the tablet's event", || {
        customer(&w, "anonymous_id", "family-tablet") == ann
    });
    w.cli_ok(&["identity", "unlink", "anonymous_id:family-tablet"]);
    let unlinks: Vec<String> = consume_all(&topics.commands, 1, Duration::from_secs(10))
        .into_iter()
        .filter_map(|(k, p)| {
            k.filter(|_| p.is_some_and(|p| String::from_utf8_lossy(&p).contains("ann-1")))
        })
        .collect();
    assert_eq!(unlinks.len(), 1, "the unlink names Ann's login");
    // the scan below is able to see Ann
    let before = traces_of_ann(&w);
    for t in [
        "events:",
        "identities:",
        "profiles:",
        "identity_ledger:",
        "events_by_id:",
    ] {
        assert!(before.iter().any(|f| f.starts_with(t)), "{t} {before:?}");
    }
    assert_eq!(events_of_bob(&w), "b1,b2,b3");

    // erase Ann by her email address
    let out = w.cli(&[
        "privacy",
        "erase",
        "email:Ann@Example.com",
        "--wait-secs",
        "120",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\npipeline log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.log("pipeline")
    );
    let row: Value = serde_json::from_str(&stdout).expect("erasure json");
    assert_eq!(row["status"], "verified", "{row}");
    let request = row["request_id"].as_str().expect("request id").to_string();
    let tables: Vec<&str> = row["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let before_rows: Vec<u64> = serde_json::from_value(row["rows_before"].clone()).expect("counts");
    let after_rows: Vec<u64> = serde_json::from_value(row["rows_after"].clone()).expect("counts");
    for t in [
        "events",
        "events_by_id",
        "identities",
        "customer_aliases",
        "identity_ledger",
        "profiles",
        "scores",
    ] {
        let i = tables
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("{t} in {tables:?}"));
        assert!(before_rows[i] > 0, "{t} had rows of Ann: {row}");
    }
    assert!(tables.contains(&"event_moves"), "{row}");
    assert_eq!(after_rows, vec![0; tables.len()], "{row}");
    let customers: Vec<&str> = row["customer_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        customers.contains(&ann.as_str()) && customers.contains(&retired.as_str()),
        "{row}"
    );

    // nothing of Ann is left in ClickHouse, not even in mutation texts
    assert_eq!(traces_of_ann(&w), Vec::<String>::new());
    let kept = w.query_u64(&format!(
        "SELECT count() FROM identity_ledger FINAL WHERE customer_id = '{ann}' AND action != 'erase'"
    ));
    assert!(kept > 0, "ledger entries stay, without personal values");
    assert_eq!(
        w.query_u64(&format!(
            // (the tablet, unlinked before, is not Ann's: its entries keep its value)
            "SELECT countIf(id_value NOT IN ('', 'family-tablet') AND NOT startsWith(id_value, 'sha256:')) \
             FROM identity_ledger FINAL WHERE customer_id = '{ann}'"
        )),
        0
    );
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM identity_ledger FINAL WHERE action = 'erase' AND customer_id IN ('{ann}', '{retired}')"
        )),
        2
    );
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM erasure_keys WHERE request_id = '{request}'"
        )),
        0
    );
    assert_eq!(
        w.query_u64("SELECT countIf(startsWith(hash, 'sha256:') AND length(hash) = 71) FROM suppressions FINAL"),
        5,
        "ann-laptop, ann-phone, ann-1, her email and her handle"
    );
    // Bob keeps his profile and his own events; the two that carried Ann's
    // identifiers (her laptop's cookie, a reply to her) are gone with her
    assert_eq!(events_of_bob(&w), "b1,b3");
    assert_eq!(customer(&w, "user_id", "bob-1"), bob);
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM v_profiles WHERE customer_id = '{bob}'"
        )),
        1
    );

    // Kafka: tombstones for both of Ann's ids; `erase` entries; the request itself
    // carries hashes only
    let profiles = consume_all(&topics.profiles, 1, Duration::from_secs(10));
    for c in [&ann, &retired] {
        let last = profiles
            .iter()
            .rev()
            .find(|(k, _)| k.as_deref() == Some(c.as_str()));
        assert!(
            matches!(last, Some((_, None))),
            "last crm.profiles message of {c} is a tombstone"
        );
    }
    let identity: Vec<Vec<u8>> = consume_all(&topics.identity, 1, Duration::from_secs(10))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    let identity = assert_all_valid(json_schema::IDENTITY, &identity, "crm.identity");
    let erased: Vec<&str> = identity
        .iter()
        .filter(|m| m["action"] == "erase")
        .filter_map(|m| m["customer_id"].as_str())
        .collect();
    assert!(
        erased.contains(&ann.as_str()) && erased.contains(&retired.as_str()),
        "{erased:?}"
    );
    let cmds: Vec<Vec<u8>> = consume_all(&topics.privacy_commands, 1, Duration::from_secs(10))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    assert_eq!(cmds.len(), 1);
    assert_all_valid(json_schema::ERASE_COMMAND, &cmds, "crm.privacy.commands");
    let text = String::from_utf8_lossy(&cmds[0]);
    assert!(ANN.iter().all(|v| !text.contains(v)), "{text}");
    // the unlink lost its whole staying side: withdrawn (a tombstone under its key)
    let commands = consume_all(&topics.commands, 1, Duration::from_secs(10));
    let last = commands
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == Some(&unlinks[0]));
    assert!(matches!(last, Some((_, None))), "{commands:?}");
    // the tablet, no longer Ann's, keeps its own profile
    assert!(customer(&w, "anonymous_id", "family-tablet").starts_with("c_"));

    // replay: the same messages again, plus new ones with her address and her login
    let suppressed_before = metric(
        &w,
        "socialcrm_pipeline_events_total{outcome=\"suppressed\"}",
    );
    send_all(&w);
    let r = w.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "identify", "anonymousId": "ann-tablet", "messageId": "n1",
             "traits": {"email": "ANN@example.com"}, "timestamp": ts(20, 10)},
            {"type": "track", "event": "Viewed", "userId": "ann-1", "messageId": "n2", "timestamp": ts(20, 11)},
            {"type": "page", "userId": "bob-1", "messageId": "b4", "timestamp": ts(21, 10)},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // a backfill of her post, re-mapped under new event ids
    produce_raw(&topics.events, &social_history("backfill-"));
    wait_until(Duration::from_secs(60), "Bob's new event", || {
        events_of_bob(&w) == "b1,b3,b4"
    });
    w.wait_caught_up();
    assert_eq!(
        traces_of_ann(&w),
        Vec::<String>::new(),
        "the replay brought Ann back"
    );
    let out = w.cli(&["profile", "get", "email:ann@example.com"]);
    assert!(!out.status.success(), "no profile for Ann");
    // 8 of Ann's (p0 p1 i1 i2 o1 b2 s1 s2), 2 new, 2 backfilled
    let suppressed = metric(
        &w,
        "socialcrm_pipeline_events_total{outcome=\"suppressed\"}",
    );
    assert_eq!(
        suppressed - suppressed_before,
        12.0,
        "suppressed events are counted"
    );
    let dlq = consume_all(&topics.dlq, 0, Duration::from_secs(5));
    assert!(
        dlq.is_empty(),
        "suppressed events are not dead letters: {} in crm.dlq",
        dlq.len()
    );

    // a writer rebuilt from scratch (empty store, new consumer group) re-reads
    // every event from the beginning of crm.events: Ann stays out
    let pipeline = 1;
    let _ = w.child(pipeline).kill();
    let _ = w.child(pipeline).wait();
    let cfg = std::fs::read_to_string(&w.config).expect("config");
    let rebuilt = cfg
        .replace("pipeline\"\nstate_dir", "pipeline-rebuilt\"\nstate_dir")
        .replace("/state\"", "/state-rebuilt\"");
    assert_ne!(cfg, rebuilt);
    std::fs::write(&w.config, rebuilt).expect("config");
    w.start_pipeline();
    w.wait_caught_up();
    assert!(
        w.log("pipeline").contains("suppression list loaded"),
        "{}",
        w.log("pipeline")
    );
    assert_eq!(
        traces_of_ann(&w),
        Vec::<String>::new(),
        "a rebuild brought Ann back"
    );
    assert_eq!(events_of_bob(&w), "b1,b3,b4");
    assert_eq!(customer(&w, "user_id", "bob-1"), bob);

    // right of access: Bob's data, Ann's gone; the request is listed
    let export: Value =
        serde_json::from_str(&w.cli_ok(&["privacy", "export", "user_id:bob-1"])).expect("json");
    assert_eq!(export["customer_id"], bob.as_str());
    let ids: Vec<&str> = export["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"web:b1") && ids.contains(&"web:b4"),
        "{ids:?}"
    );
    assert_eq!(export["profile"]["traits"]["name"], "Bob");
    assert!(!export["identity_ledger"]
        .as_array()
        .expect("ledger")
        .is_empty());
    let out = w.cli(&["privacy", "export", "email:ann@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile"));
    // ClickHouse keeps only the newest status row of a request: it still says
    // who asked and for what
    w.query("OPTIMIZE TABLE erasures FINAL");
    let listed: Value =
        serde_json::from_str(&w.cli_ok(&["privacy", "erasures", "--json"])).expect("json");
    assert_eq!(listed[0]["request_id"], request.as_str(), "{listed}");
    assert_eq!(listed[0]["requested_by"], "cli", "{listed}");
    assert!(
        listed[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")),
        "{listed}"
    );
    let list = w.cli_ok(&["privacy", "erasures"]);
    assert!(
        list.contains(&request) && list.contains("verified"),
        "{list}"
    );

    // the HTTP API: admin scope only
    w.spawn("serve", &["serve"]);
    let base = format!("http://127.0.0.1:{api_port}");
    wait_until(Duration::from_secs(30), "API up", || {
        http::blocking_get_ok(&format!("{base}/health"))
    });
    let call = |method: &str, path: &str, key: &str, body: &Value| {
        let r = http::request(
            method,
            &format!("{base}{path}"),
            &[
                ("Authorization", format!("Bearer {key}")),
                ("Content-Type", "application/json".into()),
            ],
            body.to_string().as_bytes(),
        )
        .expect("request");
        (r.status, r.body)
    };
    let erase_bob = json!({"subject": "user_id:bob-1", "wait_secs": 120});
    let (st, body) = call("POST", "/v1/privacy/erase", READ_KEY, &erase_bob);
    assert_eq!(st, 403, "{body}");
    let (st, _) = call(
        "GET",
        "/v1/privacy/export?id=user_id:bob-1",
        READ_KEY,
        &Value::Null,
    );
    assert_eq!(st, 403);
    let (st, body) = call(
        "GET",
        "/v1/privacy/export?id=user_id:bob-1",
        ADMIN_KEY,
        &Value::Null,
    );
    assert_eq!(st, 200, "{body}");
    let api_export: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        api_export["events"], export["events"],
        "the API exports what the CLI does"
    );
    let (st, body) = call(
        "POST",
        "/v1/privacy/erase",
        ADMIN_KEY,
        &json!({"subject": "bob"}),
    );
    assert_eq!(st, 400, "{body}");
    // the read model (the default) serves bob until his erasure; ann, erased
    // before the server started, is not served
    wait_until(Duration::from_secs(60), "read model loaded", || {
        http::get_with_key(&format!("{base}/health"), READ_KEY)
            .body
            .contains("\"loaded\":true")
    });
    let lookup = |id: &str| {
        http::get_with_key(&format!("{base}/v1/profiles/lookup?id={id}"), READ_KEY).status
    };
    assert_eq!(lookup("user_id:bob-1"), 200);
    assert_eq!(lookup("email:ann@example.com"), 404);
    let (st, body) = call("POST", "/v1/privacy/erase", ADMIN_KEY, &erase_bob);
    assert_eq!(st, 200, "{body}\nserve log:\n{}", w.log("serve"));
    wait_until(Duration::from_secs(10), "erased person not served", || {
        lookup("user_id:bob-1") == 404
    });
    let done: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(done["status"], "verified", "{done}");
    assert_eq!(done["requested_by"], "api:dpo");
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL WHERE has(identifier_values, 'bob-1')"),
        0
    );
    let (st, body) = call("GET", "/v1/privacy/erasures", ADMIN_KEY, &Value::Null);
    assert_eq!(st, 200);
    let items: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(items["items"].as_array().map(Vec::len), Some(2), "{items}");
}

/// Everything that identifies Cara (the person who comes back).
const CARA: [&str; 4] = ["cara-laptop", "cara-tablet", "cara-1", "cara@example.com"];

/// Cara's events, in order: `event_id`s of her current profile's events.
fn events_with(w: &World, value: &str) -> String {
    w.query(&format!(
        "SELECT arrayStringConcat(groupArray(event_id), ',') FROM \
         (SELECT event_id FROM events FINAL WHERE has(identifier_values, '{value}') ORDER BY event_id)"
    ))
    .trim()
    .to_string()
}

#[test]
fn unsuppress_lets_a_returning_person_in_without_bringing_back_old_data() {
    let mut w = World::new("unsuppress");
    let api_port = free_port();
    w.append_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         keys = [{{ name = \"dpo\", key = \"{ADMIN_KEY}\", scopes = [\"read\", \"admin\"] }},\n  \
         {{ name = \"marketing\", key = \"{READ_KEY}\", scopes = [\"read\", \"export\"] }}]\n"
    ));
    w.start_collector();
    w.start_pipeline();
    let topics = w.topics();
    let old_history = json!({"batch": [
        {"type": "identify", "anonymousId": "cara-laptop", "userId": "cara-1", "messageId": "c1",
         "traits": {"email": "cara@example.com", "name": "Cara"}, "timestamp": ts(1, 10)},
        {"type": "track", "event": "Viewed", "userId": "cara-1", "messageId": "c2", "timestamp": ts(2, 10)},
    ]});
    let r = w.post("/v1/batch", &old_history);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "Cara's events", || {
        w.query_u64("SELECT count() FROM events FINAL") == 2
    });
    w.wait_caught_up();
    let out = w.cli(&[
        "privacy",
        "erase",
        "email:cara@example.com",
        "--wait-secs",
        "120",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let suppressed =
        |w: &World| metric(w, "socialcrm_pipeline_events_total{outcome=\"suppressed\"}");
    // a replay of her old events is dropped
    let r = w.post("/v1/batch", &old_history);
    assert_eq!(r.status, 200, "{}", r.body);
    w.wait_caught_up();
    assert_eq!(suppressed(&w), 2.0);
    assert!(!w
        .cli(&["profile", "get", "email:cara@example.com"])
        .status
        .success());

    // refusals: no reason, an identifier that is not suppressed, not an identifier
    let out = w.cli(&[
        "privacy",
        "unsuppress",
        "email:cara@example.com",
        "--reason",
        " ",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a reason"));
    let out = w.cli(&[
        "privacy",
        "unsuppress",
        "email:nobody@example.com",
        "--reason",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not suppressed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w
        .cli(&["privacy", "unsuppress", "cara", "--reason", "x"])
        .status
        .success());

    // she comes back and consents again: her email is lifted (any case and spacing)
    let lift: Value = serde_json::from_str(&w.cli_ok(&[
        "privacy",
        "unsuppress",
        " email:Cara@Example.COM",
        "--reason",
        "consented again, ticket 4711",
        "--wait-secs",
        "120",
        "--json",
    ]))
    .expect("lift json");
    assert_eq!(lift["status"], "applied", "{lift}");
    assert_eq!(lift["requested_by"], "cli", "{lift}");
    assert_eq!(lift["reason"], "consented again, ticket 4711", "{lift}");
    assert_eq!(lift["id_type"], "email", "{lift}");
    // the lift admits events of a later second than the lift
    std::thread::sleep(Duration::from_millis(1100));
    let r = w.post("/v1/batch", &old_history);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "identify", "anonymousId": "cara-phone", "messageId": "c3",
             "traits": {"email": "cara@example.com"}},
            {"type": "track", "event": "Viewed", "anonymousId": "cara-phone", "messageId": "c4"},
            // her old login is still suppressed: only the email was lifted
            {"type": "track", "event": "Viewed", "userId": "cara-1", "messageId": "c5"},
            // a late backfill of an event from before the erasure: its only suppressed
            // identifier is the lifted email, but it occurred before the lift
            {"type": "identify", "anonymousId": "cara-tablet", "messageId": "c0",
             "traits": {"email": "cara@example.com"}, "timestamp": ts(1, 12)},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    w.wait_caught_up();
    let p = w.profile_json("email:cara@example.com");
    let ids = profile_identifiers(&p);
    assert!(ids.contains(&"anonymous_id:cara-phone"), "{p}");
    assert!(
        !ids.iter()
            .any(|i| i.contains("cara-1") || i.contains("cara-laptop")),
        "old identifiers came back: {p}"
    );
    assert_eq!(events_with(&w, "cara@example.com"), "web:c3");
    assert_eq!(events_with(&w, "cara-phone"), "web:c3,web:c4");
    assert_eq!(
        events_with(&w, "cara-1"),
        "",
        "old events or the old login came back"
    );
    assert_eq!(events_with(&w, "cara-laptop"), "");
    assert_eq!(
        events_with(&w, "cara-tablet"),
        "",
        "an event from before the lift came in"
    );
    assert_eq!(
        suppressed(&w),
        6.0,
        "two replayed after the erasure, two after the lift, c5, c0"
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM profiles FINAL WHERE has(identifier_values, 'cara-1')"),
        0
    );

    // a restarted writer reads the lift from crm.suppression_lifts
    let pipeline = 1;
    let _ = w.child(pipeline).kill();
    let _ = w.child(pipeline).wait();
    w.start_pipeline();
    let r = w.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "identify", "anonymousId": "cara-phone", "messageId": "c6",
             "traits": {"email": "cara@example.com"}},
            {"type": "identify", "anonymousId": "cara-tablet", "messageId": "c7",
             "traits": {"email": "cara@example.com"}, "timestamp": ts(3, 10)},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.post("/v1/batch", &old_history);
    assert_eq!(r.status, 200, "{}", r.body);
    w.wait_caught_up();
    assert!(
        w.log("pipeline").contains("lifted=1"),
        "{}",
        w.log("pipeline")
    );
    assert_eq!(events_with(&w, "cara-phone"), "web:c3,web:c4,web:c6");
    assert_eq!(events_with(&w, "cara@example.com"), "web:c3,web:c6");
    assert_eq!(events_with(&w, "cara-1"), "");
    assert_eq!(events_with(&w, "cara-laptop"), "");
    // c7, from before the lift, carries only the lifted email, which is in the graph
    // again: only the lift's time keeps it out
    assert_eq!(
        events_with(&w, "cara-tablet"),
        "",
        "an old event came back after a restart"
    );

    // recorded: who, when, why; the command on the topic carries hashes only
    let rows = w.query(
        "SELECT request_id, status, id_type, requested_by, reason FROM suppression_lifts FINAL ORDER BY status FORMAT TSV",
    );
    assert!(rows.contains("applied\temail\tcli\t"), "{rows}");
    assert!(
        rows.contains("requested\temail\tcli\tconsented again, ticket 4711"),
        "{rows}"
    );
    let listed = w.cli_ok(&["privacy", "lifts"]);
    assert!(
        listed.contains("applied") && listed.contains("ticket 4711"),
        "{listed}"
    );
    let cmds: Vec<Vec<u8>> = consume_all(&topics.privacy_commands, 2, Duration::from_secs(10))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    let cmds = assert_all_valid(json_schema::ERASE_COMMAND, &cmds, "crm.privacy.commands");
    assert!(cmds.iter().any(|c| c["action"] == "unsuppress"), "{cmds:?}");
    for c in &cmds {
        let text = c.to_string();
        assert!(CARA.iter().all(|v| !text.contains(v)), "{text}");
    }

    // the HTTP API: admin scope; her login is lifted too
    let base = w.start_api(api_port);
    let call = |key: &str, body: &Value| {
        let r = http::request(
            "POST",
            &format!("{base}/v1/privacy/unsuppress"),
            &[
                ("Authorization", format!("Bearer {key}")),
                ("Content-Type", "application/json".into()),
            ],
            body.to_string().as_bytes(),
        )
        .expect("request");
        (r.status, r.body)
    };
    let lift_login =
        json!({"subject": "user_id:cara-1", "reason": "logged in again", "wait_secs": 120});
    let (st, body) = call(READ_KEY, &lift_login);
    assert_eq!(st, 403, "{body}");
    let (st, body) = call(
        ADMIN_KEY,
        &json!({"subject": "user_id:nobody", "reason": "x"}),
    );
    assert_eq!(st, 404, "{body}");
    let (st, body) = call(ADMIN_KEY, &json!({"subject": "user_id:cara-1"}));
    assert_eq!(st, 400, "{body}");
    let (st, body) = call(ADMIN_KEY, &lift_login);
    assert_eq!(st, 200, "{body}\nserve log:\n{}", w.log("serve"));
    let done: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(done["status"], "applied", "{done}");
    assert_eq!(done["requested_by"], "api:dpo", "{done}");
    let r = http::get_with_key(&format!("{base}/v1/privacy/lifts"), ADMIN_KEY);
    assert_eq!(r.status, 200, "{}", r.body);
    let items: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(items["items"].as_array().map(Vec::len), Some(2), "{items}");
    assert_eq!(
        http::get_with_key(&format!("{base}/v1/privacy/lifts"), READ_KEY).status,
        403
    );
    std::thread::sleep(Duration::from_millis(1100));
    let r = w.post(
        "/v1/track",
        &json!({"event": "Viewed", "userId": "cara-1", "messageId": "c8"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.post("/v1/batch", &old_history);
    assert_eq!(r.status, 200, "{}", r.body);
    w.wait_caught_up();
    assert_eq!(
        events_with(&w, "cara-1"),
        "web:c8",
        "only the new login event"
    );
}
