//! End to end: web visits through the real collector and pipeline end on one
//! customer across devices, and every topic's messages match their JSON Schemas.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_schemas::json_schema;

#[test]
fn anonymous_visits_identify_and_second_device_merge_into_one_customer() {
    let mut w = World::new("identity");
    w.start_collector();
    w.start_pipeline();

    // device 1: anonymous browsing
    let r = w.post(
        "/v1/page",
        &json!({"anonymousId": "dev1-anon", "messageId": "m1", "name": "Home",
        "properties": {"url": "https://shop.example/"}, "timestamp": "2026-11-01T10:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.post(
        "/v1/track",
        &json!({"anonymousId": "dev1-anon", "messageId": "m2", "event": "Product Viewed",
        "timestamp": "2026-11-01T10:01:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // device 2: anonymous too, a different person as far as anyone knows yet
    let r = w.post("/v1/batch",
        &json!({"batch": [
            {"type": "page", "anonymousId": "dev2-anon", "messageId": "m3", "timestamp": "2026-11-02T09:00:00Z"},
            {"type": "page", "anonymousId": "other-person", "messageId": "m4", "timestamp": "2026-11-02T09:00:00Z"}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // let the pipeline see both anonymous profiles before the identities arrive
    // (events keyed by different identifiers may land on different partitions)
    wait_until(
        Duration::from_secs(60),
        "anonymous events in ClickHouse",
        || w.query_u64("SELECT count() FROM events FINAL") == 4,
    );
    // device 1 logs in
    let r = w.post(
        "/v1/identify",
        &json!({"anonymousId": "dev1-anon", "userId": "user-42", "messageId": "m5",
        "traits": {"email": "Ann.Lee@Example.com", "name": "Ann Lee", "phone": "+1 415 555 0123"},
        "timestamp": "2026-11-03T12:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // device 2 only knows the email (different case and spaces); the request is
    // sent twice, as a client retry would (same messageId): it must count once
    let order = json!({"anonymousId": "dev2-anon", "messageId": "m6", "event": "Order Completed",
        "properties": {"total": 30, "currency": "EUR"}, "context": {"traits": {"email": "  ann.lee@EXAMPLE.com "}},
        "timestamp": "2026-11-04T12:00:00Z"});
    for _ in 0..2 {
        let r = w.post("/v1/track", &order);
        assert_eq!(r.status, 200, "{}", r.body);
    }

    wait_until(Duration::from_secs(60), "6 events in ClickHouse", || {
        w.query_u64("SELECT count() FROM events FINAL") == 6
    });
    wait_until(Duration::from_secs(30), "identities", || {
        w.query_u64("SELECT count() FROM identities FINAL WHERE id_type = 'email'") == 1
    });

    // DESIGN §3.4 "who is this"
    let cid = w.query("SELECT customer_id FROM identities FINAL WHERE id_type = 'email' AND id_value = 'ann.lee@example.com'");
    let cid = cid.trim().to_string();
    assert!(cid.starts_with("c_"), "{cid}");
    for (t, v) in [
        ("anonymous_id", "dev1-anon"),
        ("anonymous_id", "dev2-anon"),
        ("user_id", "user-42"),
        ("phone", "+14155550123"),
    ] {
        let other = w.query(&format!(
            "SELECT customer_id FROM identities FINAL WHERE id_type = '{t}' AND id_value = '{v}'"
        ));
        assert_eq!(other.trim(), cid, "{t}:{v}");
    }
    let stranger = w.query("SELECT customer_id FROM identities FINAL WHERE id_type = 'anonymous_id' AND id_value = 'other-person'");
    assert_ne!(stranger.trim(), cid);
    // every event of Ann follows her current id, whatever id it was written with
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM v_events WHERE customer_id = '{cid}'"
        )),
        5
    );
    // dev1's profile is the oldest: it survived, dev2's profile was merged into it
    let merged = w.query("SELECT count() FROM customer_aliases FINAL");
    assert_eq!(merged.trim(), "1");

    // the CLI (profiles are inserted beside identities: read them once caught up)
    w.wait_caught_up();
    let p = w.profile_json("email: ANN.LEE@example.com");
    assert_eq!(p["customer_id"], cid.as_str());
    let ids = profile_identifiers(&p);
    for want in [
        "anonymous_id:dev1-anon",
        "anonymous_id:dev2-anon",
        "user_id:user-42",
        "email:ann.lee@example.com",
        "phone:+14155550123",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert_eq!(p["event_count"], 5);
    assert_eq!(p["event_counts"]["page"], 2);
    assert_eq!(p["event_counts"]["order"], 1);
    assert_eq!(p["channels"], json!(["web"]));
    assert_eq!(p["order_count"], 1);
    assert_eq!(p["revenue"]["EUR"], 30.0);
    assert_eq!(p["traits"]["name"], "Ann Lee");
    assert_eq!(p["traits"]["email"], "ann.lee@example.com");
    let text = w.cli(&["profile", "get", "user_id:user-42"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&cid) && text.contains("events:      5"),
        "{text}"
    );
    let missing = w.cli(&["profile", "get", "email:nobody@example.com"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no profile"));

    // downstream topics: schema-valid, and the profile topic's last word on Ann is complete
    let t = w.topics();
    let events = consume_all(&t.events, 7, Duration::from_secs(20));
    assert_eq!(
        events.len(),
        7,
        "collector produced one message per accepted call message"
    );
    let payloads: Vec<Vec<u8>> = events.iter().filter_map(|(_, p)| p.clone()).collect();
    assert_all_valid(json_schema::CANONICAL_EVENT, &payloads, "crm.events");
    let ident = consume_all(&t.identity, 1, Duration::from_secs(20));
    let ident: Vec<Vec<u8>> = ident.into_iter().filter_map(|(_, p)| p).collect();
    let ident = assert_all_valid(json_schema::IDENTITY, &ident, "crm.identity");
    assert!(ident
        .iter()
        .any(|m| m["action"] == "merge" && m["customer_id"] == cid.as_str()));
    let profiles = consume_all(&t.profiles, 1, Duration::from_secs(20));
    let live: Vec<Vec<u8>> = profiles.iter().filter_map(|(_, p)| p.clone()).collect();
    assert_all_valid(json_schema::PROFILE, &live, "crm.profiles");
    let last_for_ann = profiles
        .iter()
        .rev()
        .find(|(k, _)| k.as_deref() == Some(cid.as_str()))
        .and_then(|(_, p)| p.clone())
        .expect("a profile message for Ann");
    let last: Value = serde_json::from_slice(&last_for_ann).expect("json");
    assert_eq!(last["event_count"], 5);
    // the merged-away profile got a tombstone
    assert!(
        profiles.iter().any(|(_, p)| p.is_none()),
        "tombstone for the retired id"
    );
}

#[test]
fn migrate_twice_changes_nothing_and_records_every_migration() {
    let w = World::new("migrate");
    let out = w.cli(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "applied [], already applied [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]"
        ),
        "{text}"
    );
    assert_eq!(w.query_u64("SELECT count() FROM schema_migrations"), 14);
    for table in [
        "events",
        "identities",
        "customer_aliases",
        "identity_ledger",
        "profiles",
        "v_events",
        "v_profiles",
        "v_identities",
        "scores",
        "score_runs",
        "score_models",
        "influencer_ranks",
        "v_scores",
        "events_by_id",
        "v_segment_profiles",
        "v_influencers",
        "v_campaign_touches",
        "v_campaign_attribution",
        "v_order_lines",
        "suppressions",
        "erasures",
        "erasure_keys",
        "suppression_lifts",
        "event_moves",
    ] {
        assert_eq!(
            w.query_u64(&format!(
                "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{table}'",
                w.db
            )),
            1,
            "{table}"
        );
    }
}
