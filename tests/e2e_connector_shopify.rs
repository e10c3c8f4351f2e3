//! End to end: the Shopify connector (real `socialcrm` binary, real Kafka and
//! ClickHouse) against the fake GraphQL Admin API.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use socialcrm_connectors::shopify::fake::{self, FakeData};
use socialcrm_connectors::testkit::BlockingFakeServer;

/// The `[connectors.<name>]` body for a fake store.
fn body(base_url: &str, token: &str) -> String {
    format!(
        "type = \"shopify\"\nshop = \"{}\"\naccess_token = \"{token}\"\napi_url = \"{base_url}\"\npage_size = 50\norders_page_size = 8\nline_items_per_order = 10\noverlap_secs = 0\n",
        fake::FAKE_SHOP
    )
}

#[test]
fn killed_mid_backfill_resumes_without_gap_or_extra() {
    let mut w = World::new("shopify_kill");
    let data = fake::generate(300, 11);
    let server = {
        let d = data.clone();
        BlockingFakeServer::start(move || fake::router(d))
    };
    let cfg = fake::test_config(&server.base_url);
    let expected = data.expected_event_ids(&cfg);
    assert!(expected.len() > 600, "{}", expected.len());
    // the paged walk (a backfill reads in bulk by default: see the next test)
    w.add_connector(
        "shop_eu",
        &format!(
            "{}bulk = \"never\"\n",
            body(&server.base_url, fake::FAKE_TOKEN)
        ),
    );

    // slow answers so that the kill lands mid-backfill
    server.controls.set_delay(Duration::from_millis(150));
    let i = w.spawn_connector("shop_eu", &["--once"]);
    wait_until(Duration::from_secs(60), "some pages served", || {
        server.controls.ok_count() >= 10
    });
    assert!(
        w.child(i).try_wait().expect("child").is_none(),
        "the connector finished before the kill"
    );
    w.kill(i);
    let served_before_kill = server.controls.ok_count();
    assert!(served_before_kill < 40, "{served_before_kill}");

    server.controls.set_delay(Duration::ZERO);
    let out = w.run_connector_once("shop_eu", &[]);
    assert!(
        out.status.success(),
        "resume failed: {}",
        w.log("connector-shop_eu")
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("0 objects rejected"), "{summary}");

    w.start_pipeline();
    let got = w.wait_event_ids(expected.len(), Duration::from_secs(180));
    let missing: Vec<&String> = expected.difference(&got).take(5).collect();
    let extra: Vec<&String> = got.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(got, expected);
    // the orders carry their revenue and the refunds theirs
    let orders = w.query_u64("SELECT uniqExact(event_id) FROM events WHERE type = 'order'");
    let with_revenue = w.query_u64(
        "SELECT uniqExact(event_id) FROM events WHERE type = 'order' AND revenue_amount > 0",
    );
    assert!(
        orders > 200 && with_revenue == orders,
        "{with_revenue}/{orders}"
    );
}

/// The default config reads a backfill through a bulk operation: killed (-9) once
/// some pages of its result were stored, the connector resumes the same operation
/// at the stored position, and ClickHouse ends with exactly the expected events.
#[test]
fn killed_mid_bulk_backfill_resumes_the_same_operation() {
    let mut w = World::new("shopify_bulk_kill");
    let data = fake::generate(600, 12);
    // a slow download, so that the kill lands while the result is read
    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        block_delay: Some(Duration::from_millis(200)),
        ..Default::default()
    });
    let server = {
        let d = data.clone();
        BlockingFakeServer::start(move || fake::router(d))
    };
    let expected = data.expected_event_ids(&fake::test_config(&server.base_url));
    w.add_connector(
        "shop_eu",
        &format!(
            "{}bulk_page_size = 50\n",
            body(&server.base_url, fake::FAKE_TOKEN)
        ),
    );
    let state = w
        .dir
        .path()
        .join("connector-state")
        .join("shop_eu.cursors.json");
    let stored_offset = || -> u64 {
        std::fs::read(&state)
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
            .map(|v| {
                ["customers", "orders"]
                    .iter()
                    .filter_map(|s| v["streams"][s]["cursor"]["bulk"]["offset"].as_u64())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let i = w.spawn_connector("shop_eu", &["--once"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_offset() == 0 {
        assert!(
            Instant::now() < deadline,
            "no bulk cursor with an offset after 60 s; state: {:?}; log: {}",
            std::fs::read_to_string(&state).ok(),
            w.log("connector-shop_eu")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w.child(i).try_wait().expect("child").is_none(),
        "the connector finished before the kill"
    );
    w.kill(i);
    let offset = stored_offset();

    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        ..Default::default()
    });
    let out = w.run_connector_once("shop_eu", &[]);
    assert!(
        out.status.success(),
        "resume failed: {}",
        w.log("connector-shop_eu")
    );
    assert!(offset > 0);
    // one operation per stream: the one the kill interrupted was resumed
    assert_eq!(
        data.stats
            .bulk_runs
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    w.start_pipeline();
    let got = w.wait_event_ids(expected.len(), Duration::from_secs(180));
    assert_eq!(got, expected);
}

#[test]
fn a_shopify_customer_and_a_web_visitor_with_the_same_email_are_one_customer() {
    let mut w = World::new("shopify_identity");
    w.start_collector();
    let data = FakeData::empty();
    data.push_customer(json!({
        "id": "gid://shopify/Customer/7100000042",
        "firstName": "Ann", "lastName": "Lee", "displayName": "Ann Lee",
        "createdAt": "2026-10-01T09:00:00Z", "updatedAt": "2026-11-02T10:00:00Z",
        "state": "ENABLED", "tags": [], "locale": "en", "verifiedEmail": true, "numberOfOrders": "1",
        "amountSpent": {"amount": "59.90", "currencyCode": "EUR"},
        "defaultEmailAddress": {"emailAddress": "Ann.Lee@Example.com", "marketingState": "SUBSCRIBED"},
        "defaultPhoneNumber": {"phoneNumber": "+14155550123", "marketingState": "NOT_SUBSCRIBED"},
        "defaultAddress": {"city": "Berlin", "provinceCode": "BE", "countryCodeV2": "DE"}
    }));
    let mut order = fake::generate(1, 1).orders().remove(0);
    order["id"] = json!("gid://shopify/Order/5500000042");
    order["customer"] = json!({"id": "gid://shopify/Customer/7100000042"});
    order["email"] = json!("ann.lee@example.com");
    order["test"] = json!(false);
    order["updatedAt"] = json!("2026-11-02T11:00:00Z");
    order["processedAt"] = json!("2026-11-02T10:59:00Z");
    order["totalPriceSet"] = json!({"shopMoney": {"amount": "59.90", "currencyCode": "EUR"}});
    order["refunds"] = json!([]);
    data.push_order(order);
    let server = {
        let d = data.clone();
        BlockingFakeServer::start(move || fake::router(d))
    };
    w.add_connector("shop_eu", &body(&server.base_url, fake::FAKE_TOKEN));

    // the web visitor identifies with the same address, written differently
    let r = http::request(
        "POST",
        &w.collector_url("/v1/identify"),
        &[
            ("Authorization", basic_auth(&w.write_key)),
            ("Content-Type", "application/json".into()),
        ],
        json!({"anonymousId": "web-anon-1", "messageId": "web-m1",
            "traits": {"email": " ANN.LEE@example.COM "}, "timestamp": "2026-11-03T08:00:00Z"})
        .to_string()
        .as_bytes(),
    )
    .expect("collector");
    assert_eq!(r.status, 200, "{}", r.body);

    let out = w.run_connector_once("shop_eu", &[]);
    assert!(out.status.success(), "{}", w.log("connector-shop_eu"));
    w.start_pipeline();
    w.wait_event_ids(3, Duration::from_secs(120));
    let who = |t: &str, v: &str| w.customer_of(t, v);
    wait_until(Duration::from_secs(60), "identities resolved", || {
        let a = who("email", "ann.lee@example.com");
        !a.is_empty()
            && a == who("anonymous_id", "web-anon-1")
            && a == who("shopify", "eu-store.myshopify.com/7100000042")
    });
    let cid = who("email", "ann.lee@example.com");
    assert!(cid.starts_with("c_"), "{cid}");
    assert_eq!(who("phone", "+14155550123"), cid);

    w.wait_caught_up();
    let p = w.profile_json("email:ann.lee@example.com");
    assert_eq!(p["customer_id"], cid.as_str());
    let ids: BTreeSet<&str> = profile_identifiers(&p).into_iter().collect();
    for want in [
        "anonymous_id:web-anon-1",
        "email:ann.lee@example.com",
        "phone:+14155550123",
        "shopify:eu-store.myshopify.com/7100000042",
    ] {
        assert!(ids.contains(want), "{want} missing from {ids:?}");
    }
    assert_eq!(p["channels"], json!(["shop", "web"]));
    assert_eq!(p["order_count"], 1);
    assert_eq!(p["revenue"]["EUR"], 59.9);
    assert_eq!(p["traits"]["name"], "Ann Lee");
}

#[test]
fn a_refused_token_stops_the_connector_with_the_fix_and_no_secret_in_the_log() {
    let mut w = World::new("shopify_auth");
    let data = fake::generate(5, 1);
    data.set_token("shpat_the_right_one");
    let server = {
        let d = data.clone();
        BlockingFakeServer::start(move || fake::router(d))
    };
    let secret = "shpat_e2e_wrong_secret_4242";
    w.add_connector("shop_bad", &body(&server.base_url, secret));
    let t = Instant::now();
    let out = w.run_connector_once("shop_bad", &[]);
    assert!(!out.status.success(), "must fail");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "not retried for long"
    );
    let log = w.log("connector-shop_bad");
    assert!(log.contains("shop_bad"), "{log}");
    assert!(log.contains("HTTP 401"), "{log}");
    assert!(
        log.contains("connectors.shop_bad.access_token")
            && log.contains("read_customers")
            && log.contains("read_orders"),
        "{log}"
    );
    assert!(!log.contains(secret), "the secret leaked: {log}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert_eq!(server.controls.seen().len(), 1, "401 is not retried");
}
