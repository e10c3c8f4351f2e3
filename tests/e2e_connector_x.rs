//! End to end for the X connector, with the real `socialcrm` binary, Kafka and
//! ClickHouse, against the fake X API:
//! (a) kill -9 mid-backfill, resume from the stored cursor: ClickHouse holds exactly
//!     the events one clean sync produces (no gap, no extra), the bad post in the DLQ;
//! (b) the people who mentioned the brand are profiles keyed by `x:<id>` with their
//!     handle as a trait, and each interaction's `target` is stored;
//! (c) a refused bearer token stops `connector run` with the fix, never the token.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use socialcrm_connectors::testkit::BlockingFakeServer;
use socialcrm_connectors::x::fake::{self, BRAND_ID};

fn connector_section(base_url: &str, token: &str, max_results: u32) -> String {
    format!(
        "type = \"x\"\napi_url = \"{base_url}\"\nbearer_token = \"{token}\"\nuser_id = \"{BRAND_ID}\"\nmax_results = {max_results}"
    )
}

#[test]
fn kill_mid_backfill_resumes_without_gaps_and_builds_social_profiles() {
    let mut w = World::new("conn_x");
    let mut data = fake::generate(300, 2026);
    // one post X sends that cannot be an event (no author): it goes to the DLQ
    let ids = data.post_ids();
    let bad_id: u64 = ids[150].parse::<u64>().expect("id") - 1;
    data.add_malformed(
        bad_id,
        json!({"id": bad_id.to_string(), "text": "no author", "created_at": "2025-06-01T00:00:00.000Z"}),
    );
    // what one clean sync produces, by the connector's own mapping
    let clean = data.expected(Utc::now());
    let expected: BTreeSet<String> = clean.events.iter().map(|e| e.event_id.clone()).collect();
    assert!(expected.len() > 250, "{}", expected.len());
    assert_eq!(clean.rejected.len(), 1);

    let server = BlockingFakeServer::start(move || fake::router(data));
    server.controls.set_delay(Duration::from_millis(150));
    w.add_connector(
        "x_brand",
        &connector_section(&server.base_url, fake::TOKEN, 10),
    );

    // 31 pages of 10; kill -9 after some but not all
    let child = w.spawn_connector("x_brand", &["--once"]);
    wait_until(Duration::from_secs(60), "8 pages served", || {
        server.controls.ok_count() >= 8
    });
    w.kill(child);
    let served_before = server.controls.seen().len();
    assert!(
        server.controls.ok_count() < 31,
        "the connector finished before the kill"
    );

    // the second run resumes the walk from the stored pagination token
    server.controls.set_delay(Duration::ZERO);
    let out = w.run_connector_once("x_brand", &[]);
    assert!(
        out.status.success(),
        "connector run failed: {}",
        w.log("connector-x_brand")
    );
    let seen = server.controls.seen();
    let resumed = &seen[served_before];
    assert!(
        resumed.uri.contains("pagination_token="),
        "the second run started over instead of resuming: {}",
        resumed.uri
    );
    assert!(
        seen[served_before..].iter().all(|s| s.status == 200),
        "{:?}",
        seen.iter().map(|s| s.status).collect::<Vec<_>>()
    );

    w.start_pipeline();
    let got = w.wait_event_ids(expected.len(), Duration::from_secs(180));
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );

    // the post without an author is in the DLQ with its id
    let dlq = consume_all(&w.topics().dlq, 1, Duration::from_secs(30));
    let dlq_ids: Vec<String> = dlq
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .filter_map(|p| serde_json::from_slice::<Value>(p).ok())
        .filter_map(|v| v["origin"]["object_id"].as_str().map(str::to_string))
        .collect();
    assert!(
        dlq_ids.contains(&bad_id.to_string()),
        "DLQ holds {dlq_ids:?}"
    );

    // (b) the most active person: one profile keyed by x:<id>, handle as a trait
    let mut per_author: BTreeMap<String, Vec<&socialcrm_schemas::CanonicalEvent>> = BTreeMap::new();
    for e in &clean.events {
        per_author
            .entry(e.identifiers[0].value.clone())
            .or_default()
            .push(e);
    }
    let (author, events) = per_author
        .iter()
        .max_by_key(|(_, v)| v.len())
        .expect("an author");
    let username = events
        .iter()
        .find_map(|e| e.traits.get("x_username").and_then(Value::as_str))
        .expect("username trait");
    wait_until(Duration::from_secs(60), "the author's profile", || {
        w.query_u64(&format!(
            "SELECT count() FROM profiles FINAL WHERE has(identifier_values, '{author}') AND event_count = {}",
            events.len()
        )) == 1
    });
    let cid = w.query(&format!(
        "SELECT customer_id FROM identities FINAL WHERE id_type = 'x' AND id_value = '{author}'"
    ));
    let cid = cid.trim();
    assert!(cid.starts_with("c_"), "{cid}");
    w.wait_caught_up();
    let out = w.cli(&["profile", "get", &format!("x:{author}"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).expect("profile json");
    assert_eq!(p["customer_id"], cid);
    assert_eq!(p["identifiers"], json!([format!("x:{author}")]));
    assert_eq!(p["traits"]["x_username"], username);
    assert!(p["traits"]["followers_count"].is_number(), "{p}");
    assert_eq!(p["channels"], json!(["social"]));
    assert_eq!(p["sources"], json!([format!("x:{BRAND_ID}")]));
    assert_eq!(p["event_count"], events.len());
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        *counts.entry(e.event_type.clone()).or_default() += 1;
    }
    assert_eq!(p["event_counts"], json!(counts));

    // every interaction's target is stored: a reply to someone else and a quote
    for kind in ["reply", "quote", "reshare", "mention"] {
        let Some(e) = clean
            .events
            .iter()
            .filter(|e| e.event_type == kind)
            .max_by_key(|e| e.target.len())
        else {
            panic!("no {kind} in the generated data");
        };
        let row = w.query(&format!(
            "SELECT type, arrayStringConcat(target_types, ','), arrayStringConcat(target_values, ',') FROM events FINAL WHERE event_id = '{}'",
            e.event_id
        ));
        let want = format!(
            "{kind}\t{}\t{}",
            e.target
                .iter()
                .map(|t| t.id_type.as_str())
                .collect::<Vec<_>>()
                .join(","),
            e.target
                .iter()
                .map(|t| t.value.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(row.trim(), want, "{}", e.event_id);
        assert_eq!(e.target[0].value, BRAND_ID, "the brand is always a target");
    }
    assert!(
        clean
            .events
            .iter()
            .any(|e| e.event_type != "mention" && e.target.len() == 2),
        "some interactions also target another person"
    );
    // posts by the brand itself are not events, so the brand is no profile
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM identities FINAL WHERE id_type = 'x' AND id_value = '{BRAND_ID}'"
        )),
        0
    );
}

#[test]
fn a_refused_bearer_token_stops_the_connector_with_the_fix_and_no_secret() {
    let mut w = World::new("conn_x_auth");
    let server = BlockingFakeServer::start(|| fake::router(fake::generate(20, 1)));
    w.add_connector(
        "x_bad",
        &connector_section(&server.base_url, "${X_E2E_BAD_TOKEN}", 100),
    );
    let secret = "AAAAAAAAAAAAAAAAAAAAAwrong-token-e2e-7f3a";
    let out = w.run_connector_once_env("x_bad", &[], &[("X_E2E_BAD_TOKEN", secret)]);
    assert!(!out.status.success(), "a refused token must fail the run");
    let log = w.log("connector-x_bad");
    assert!(log.contains("x_bad"), "{log}");
    assert!(log.contains("connectors.x_bad.bearer_token"), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        !log.contains(secret),
        "the token leaked into the log:\n{log}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    // one call, not retried
    assert_eq!(server.controls.seen().len(), 1);
    assert_eq!(server.controls.seen()[0].status, 401);
}
