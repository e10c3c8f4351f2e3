//! End to end: the WooCommerce connector (real `socialcrm` binary) against the
//! fake shop, through real Kafka, pipeline and ClickHouse.
//!
//! * killed (-9) mid-backfill and run again: exactly the event ids of one clean
//!   run reach ClickHouse (customers, orders, refunds), no gap, nothing extra;
//! * an order's billing email joins a web visitor identified with the same
//!   email on one customer, with the order's revenue net of its refund;
//! * a refused key stops `connector run` with the instance and the fix named,
//!   and the secret never reaches the log (even sent as query parameters).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_connectors::testkit::BlockingFakeServer;
use socialcrm_connectors::woocommerce::fake::{self, FakeData, FAKE_KEY, FAKE_SECRET};

/// The fake's host as the connector derives it from `site_url`.
const SITE: &str = "127.0.0.1";

fn connector_body(base_url: &str, key: &str, secret: &str, extra: &str) -> String {
    format!(
        "type = \"woocommerce\"\nsite_url = \"{base_url}\"\nconsumer_key = \"{key}\"\nconsumer_secret = \"{secret}\"\n{extra}"
    )
}

#[test]
fn killed_mid_backfill_resumes_without_gap_or_extra_events() {
    let mut data = FakeData::generate(400, 31);
    data.add_malformed_orders(2);
    let expected = data.expected_event_ids(SITE);
    assert!(expected.len() > 350, "{}", expected.len());
    let served = data.clone();
    let server = BlockingFakeServer::start(move || fake::router(served));
    // 100 customers and 402 orders, 10 per page: ~52 pages, 120 ms each
    server.controls.set_delay(Duration::from_millis(120));

    let mut w = World::new("woo_resume");
    w.add_connector(
        "shop",
        &connector_body(&server.base_url, FAKE_KEY, FAKE_SECRET, "per_page = 10"),
    );
    let child = w.spawn_connector("shop", &["--once"]);
    wait_until(Duration::from_secs(60), "some pages served", || {
        server.controls.ok_count() >= 16
    });
    w.kill(child);
    let before = server.controls.ok_count();
    assert!(
        before < 45,
        "the run finished before the kill ({before} answers)"
    );

    server.controls.set_delay(Duration::ZERO);
    let out = w.run_connector_once("shop", &[]);
    assert!(
        out.status.success(),
        "second run failed: {}",
        w.log("connector-shop")
    );

    w.start_pipeline();
    let ids = w.wait_event_ids(expected.len(), Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ids,
        w.event_ids(),
        "late events after the count was reached"
    );
    let missing: Vec<_> = expected.difference(&ids).collect();
    let extra: Vec<_> = ids.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL"),
        expected.len() as u64
    );
    // every kind made it
    for t in ["identify", "order", "refund"] {
        assert!(
            w.query_u64(&format!(
                "SELECT count() FROM events FINAL WHERE type = '{t}'"
            )) > 0,
            "{t}"
        );
    }
    // the malformed orders are in the DLQ with their ids
    let dlq = consume_all(&w.topics().dlq, 2, Duration::from_secs(30));
    let rejected: BTreeSet<String> = dlq
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .filter_map(|p| serde_json::from_slice::<Value>(p).ok())
        .filter(|v| v["origin"]["connector"] == "shop")
        .filter_map(|v| v["origin"]["object_id"].as_str().map(str::to_string))
        .collect();
    let malformed: BTreeSet<String> = data.orders[data.orders.len() - 2..]
        .iter()
        .map(|o| format!("order:{}", o["id"]))
        .collect();
    assert_eq!(rejected, malformed);
}

#[test]
fn order_billing_email_joins_a_web_visitor_on_one_customer() {
    let mut data = FakeData::empty();
    // a guest order, paid, partly refunded; the email written in upper case
    data.orders.push(json!({"id": 4711, "parent_id": 0, "number": "4711", "status": "completed",
        "currency": "EUR", "date_created": "2026-03-02T11:00:00", "date_created_gmt": "2026-03-02T09:00:00",
        "date_modified": "2026-03-05T10:00:00", "date_modified_gmt": "2026-03-05T08:00:00",
        "date_paid": "2026-03-02T11:01:00", "date_paid_gmt": "2026-03-02T09:01:00",
        "date_completed": "2026-03-05T10:00:00", "date_completed_gmt": "2026-03-05T08:00:00",
        "discount_total": "0.00", "shipping_total": "4.90", "total": "88.90", "total_tax": "0.00",
        "customer_id": 0,
        "billing": {"first_name": "Maria", "last_name": "Silva", "company": "", "address_1": "Rua Augusta 12",
            "address_2": "", "city": "Lisbon", "state": "", "postcode": "1100-053", "country": "PT",
            "email": "Maria.Silva@Example.COM", "phone": ""},
        "payment_method": "stripe", "payment_method_title": "Credit card", "created_via": "checkout",
        "meta_data": [{"id": 1, "key": "_wc_order_attribution_utm_source", "value": "newsletter"}],
        "line_items": [{"id": 1, "name": "Woo Hoodie", "product_id": 93, "variation_id": 0, "quantity": 2,
            "total": "84.00", "sku": "WOO-HOOD", "price": 42}],
        "coupon_lines": [], "refunds": [{"id": 4800, "reason": "One hoodie returned", "total": "-42.00"}]}));
    let served = data.clone();
    let server = BlockingFakeServer::start(move || fake::router(served));

    let mut w = World::new("woo_identity");
    w.start_collector();
    w.start_pipeline();
    w.add_connector(
        "shop",
        &connector_body(&server.base_url, FAKE_KEY, FAKE_SECRET, ""),
    );
    let out = w.run_connector_once("shop", &[]);
    assert!(out.status.success(), "{}", w.log("connector-shop"));

    // the same person signs in on the website
    let r = w.post(
        "/v1/identify",
        &json!({"userId": "web-maria", "messageId": "woo-e2e-1",
            "traits": {"email": " maria.silva@example.com", "name": "Maria Silva"},
            "timestamp": "2026-03-10T10:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    wait_until(Duration::from_secs(90), "3 events in ClickHouse", || {
        w.query_u64("SELECT count() FROM events FINAL") == 3
    });
    let cid_of = |t: &str, v: &str| w.customer_of(t, v);
    wait_until(Duration::from_secs(60), "one customer", || {
        let a = cid_of("email", "maria.silva@example.com");
        !a.is_empty() && a == cid_of("user_id", "web-maria")
    });
    let cid = cid_of("email", "maria.silva@example.com");
    assert!(cid.starts_with("c_"), "{cid}");
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM v_events WHERE customer_id = '{cid}'"
        )),
        3
    );

    w.wait_caught_up();
    let p = w.profile_json("user_id:web-maria");
    assert_eq!(p["customer_id"], cid.as_str());
    assert_eq!(p["order_count"], 1);
    // 88.90 paid, 42.00 refunded
    assert_eq!(p["revenue"]["EUR"], 46.9);
    assert_eq!(p["event_counts"]["refund"], 1);
    assert_eq!(p["channels"], json!(["shop", "web"]));
    assert_eq!(p["traits"]["city"], "Lisbon");
}

#[test]
fn refused_key_stops_the_run_with_the_fix_and_no_secret_in_the_log() {
    let server = BlockingFakeServer::start(|| fake::router(FakeData::generate(20, 1)));
    let mut w = World::new("woo_auth");
    // the secret travels in the query string here: it must still not be logged
    w.add_connector(
        "shop_bad",
        &connector_body(
            &server.base_url,
            FAKE_KEY,
            "${WOO_TEST_SECRET}",
            "query_string_auth = true",
        ),
    );
    let wrong = "cs_wrongwrongwrong0123456789";
    let out = w.run_connector_once_env("shop_bad", &[], &[("WOO_TEST_SECRET", wrong)]);
    assert!(!out.status.success(), "a refused key must fail the run");
    let log = w.log("connector-shop_bad");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for text in [&log, &stdout] {
        assert!(!text.contains(wrong), "secret leaked: {text}");
        assert!(!text.contains(FAKE_KEY), "key leaked: {text}");
    }
    assert!(log.contains("shop_bad"), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("connectors.shop_bad.consumer_key / consumer_secret"),
        "{log}"
    );
    assert!(
        log.contains("WooCommerce → Settings → Advanced → REST API"),
        "{log}"
    );
    // refused at once, not retried
    assert_eq!(server.controls.seen().len(), 1);
    assert_eq!(server.controls.seen()[0].status, 401);
}
