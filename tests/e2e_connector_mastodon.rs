//! End to end: the Mastodon connector (real `socialcrm` binary) against the fake
//! Mastodon server, through real Kafka, pipeline and ClickHouse.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::Value;
use socialcrm_connectors::mastodon::{config::SUPPORTED_TYPES, fake};
use socialcrm_connectors::testkit::BlockingFakeServer;

fn all_types() -> Vec<String> {
    SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect()
}

fn connector(base: &str, page_size: u32, token: &str) -> String {
    format!(
        "type = \"mastodon\"\ninstance_url = \"{base}\"\naccess_token = \"{token}\"\npage_size = {page_size}"
    )
}

/// `min_id` of a request the fake server saw.
fn min_id_of(uri: &str) -> Option<u64> {
    uri.split(['?', '&'])
        .find_map(|p| p.strip_prefix("min_id="))
        .and_then(|v| v.parse().ok())
}

#[test]
fn killed_mid_backfill_resumes_without_gap_or_extra_event() {
    let mut w = World::new("mastodon_kill");
    let data = fake::generate(400, 77);
    let expected: BTreeSet<String> = data
        .expected(&all_types())
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(expected.len(), 400);
    let server = BlockingFakeServer::start({
        let data = data.clone();
        move || fake::router(data)
    });
    // 20 pages of 20 (plus verify_credentials and the instance call)
    server.controls.set_delay(Duration::from_millis(150));
    w.add_connector("brand", &connector(&server.base_url, 20, fake::FAKE_TOKEN));

    let child = w.spawn_connector("brand", &["--once"]);
    wait_until(Duration::from_secs(60), "a few pages served", || {
        server.controls.ok_count() >= 2 + 6
    });
    w.kill(child);
    let served_before_kill = server.controls.seen().len();
    let pages_before_kill = server
        .controls
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/api/v1/notifications") && s.status == 200)
        .count();
    assert!(
        pages_before_kill < 20,
        "killed before the end ({pages_before_kill} pages)"
    );

    server.controls.set_delay(Duration::ZERO);
    let out = w.run_connector_once("brand", &[]);
    assert!(
        out.status.success(),
        "second run failed: {}",
        w.log("connector-brand")
    );
    // the second run resumed from the stored cursor, not from the beginning
    let seen = server.controls.seen();
    let resumed_at = seen[served_before_kill..]
        .iter()
        .find(|s| s.uri.starts_with("/api/v1/notifications"))
        .and_then(|s| min_id_of(&s.uri))
        .expect("the second run asked for notifications");
    assert!(resumed_at > 0, "resumed at min_id={resumed_at}");
    let ids = data.ids();
    assert!(resumed_at < ids[ids.len() - 1]);

    w.start_pipeline();
    let got = w.wait_event_ids(expected.len(), Duration::from_secs(180));
    assert_eq!(got, expected, "exactly what one clean run produces");
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL"),
        400,
        "replayed events counted once"
    );
}

#[test]
fn actors_become_profiles_and_interactions_keep_their_target() {
    let mut w = World::new("mastodon_profiles");
    let data = fake::generate(120, 21);
    let expected = data.expected(&all_types()).events;
    let server = BlockingFakeServer::start({
        let data = data.clone();
        move || fake::router(data)
    });
    w.add_connector("brand", &connector(&server.base_url, 40, fake::FAKE_TOKEN));
    let out = w.run_connector_once("brand", &[]);
    assert!(out.status.success(), "{}", w.log("connector-brand"));
    w.start_pipeline();
    w.wait_event_ids(expected.len(), Duration::from_secs(120));

    // a reply to the brand: its target (the brand) is stored with the event
    let reply = expected
        .iter()
        .find(|e| e.event_type == "reply")
        .expect("a reply in the data");
    let row = w.query(&format!(
        "SELECT type, channel, source, target_types, target_values, identifier_values FROM events FINAL WHERE event_id = '{}'",
        reply.event_id
    ));
    let actor = &reply.identifiers[0].value;
    let list = |xs: Vec<&str>| {
        format!(
            "[{}]",
            xs.iter()
                .map(|x| format!("'{x}'"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    assert_eq!(reply.target[0].value, "@brand@social.example");
    assert_eq!(
        row.trim(),
        format!(
            "reply\tsocial\tmastodon:social.example\t{}\t{}\t['{actor}']",
            list(reply.target.iter().map(|t| t.id_type.as_str()).collect()),
            list(reply.target.iter().map(|t| t.value.as_str()).collect()),
        )
    );
    // and a reply that also mentions someone else keeps both edges
    assert!(
        expected
            .iter()
            .any(|e| e.event_type == "reply" && e.target.len() == 2),
        "the data has a reply mentioning a third account"
    );
    // every like/reshare/follow targets the brand
    assert_eq!(
        w.query_u64(
            "SELECT count() FROM events FINAL WHERE type IN ('like', 'reshare', 'follow') AND has(target_values, '@brand@social.example') = 0"
        ),
        0
    );

    // the most active actor's profile: identifier, traits, counts
    let mut per_actor: BTreeMap<&str, Vec<&socialcrm_schemas::CanonicalEvent>> = BTreeMap::new();
    for e in &expected {
        per_actor
            .entry(e.identifiers[0].value.as_str())
            .or_default()
            .push(e);
    }
    let (handle, events) = per_actor
        .iter()
        .max_by_key(|(h, evs)| (evs.len(), *h))
        .expect("actors");
    w.wait_caught_up();
    let out = w.cli(&["profile", "get", &format!("mastodon:{handle}"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).expect("profile json");
    let ids = profile_identifiers(&p);
    assert_eq!(ids, vec![format!("mastodon:{handle}").as_str()]);
    assert_eq!(p["event_count"], events.len() as u64);
    assert_eq!(p["channels"], serde_json::json!(["social"]));
    let newest = events
        .iter()
        .max_by_key(|e| e.occurred_at)
        .expect("an event");
    assert_eq!(
        p["traits"]["followers_count"],
        newest.traits["followers_count"]
    );
    assert_eq!(p["traits"]["mastodon_handle"], handle.to_string());

    // one person with two accounts claims one website: the claim links nothing
    let mut by_link: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &expected {
        if let Some(Value::Array(links)) = e.traits.get("links") {
            for l in links.iter().filter_map(Value::as_str) {
                by_link
                    .entry(l.to_string())
                    .or_default()
                    .insert(e.identifiers[0].value.clone());
            }
        }
    }
    let twins = by_link
        .values()
        .find(|h| h.len() >= 2)
        .expect("two accounts sharing a claimed link");
    let customers: BTreeSet<String> = twins
        .iter()
        .map(|h| {
            w.query(&format!(
                "SELECT customer_id FROM identities FINAL WHERE id_type = 'mastodon' AND id_value = '{h}'"
            ))
            .trim()
            .to_string()
        })
        .collect();
    assert_eq!(
        customers.len(),
        twins.len(),
        "separate customers: {customers:?}"
    );
    assert!(customers.iter().all(|c| c.starts_with("c_")));
}

#[test]
fn refused_token_stops_the_connector_with_the_fix_and_never_logs_the_secret() {
    let mut w = World::new("mastodon_auth");
    let server = BlockingFakeServer::start(|| fake::router(fake::generate(5, 1)));
    w.add_connector(
        "brand_denied",
        &connector(&server.base_url, 40, "${MASTODON_E2E_TOKEN}"),
    );
    let secret = "wrong-secret-8c1f0a77d2";
    let out = w.run_connector_once_env("brand_denied", &[], &[("MASTODON_E2E_TOKEN", secret)]);
    assert!(!out.status.success(), "must exit non-zero");
    let log = w.log("connector-brand_denied");
    assert!(log.contains("brand_denied"), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("connectors.brand_denied.access_token"),
        "the fix names the key: {log}"
    );
    assert!(log.contains("read:notifications"), "{log}");
    assert!(!log.contains(secret), "secret leaked into the log: {log}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    // refused once, not retried
    let seen = server.controls.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].status, 401);
    // the fake did get the (wrong) token as a bearer
    assert!(seen[0]
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {secret}")));
}
