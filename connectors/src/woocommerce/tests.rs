//! WooCommerce connector tests: mapping of documented objects, the gap-free
//! walks against the fake shop (also while the shop changes), waits, errors,
//! resume, `--since`, config.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{json_schema, CanonicalEvent, Channel, Normalizer};

use super::fake::{self, FakeData, FakeShop, FAKE_KEY, FAKE_SECRET};
use super::mapping::{is_paid, map_customer, map_order, parse_wc_date, Ctx, OrderMapped};
use super::{Config, CustomersCursor, OrdersCursor, Source, CUSTOMERS, ORDERS};
use crate::runtime::config::{parse_source_config, RuntimeSettings};
use crate::runtime::{Page, Source as _, SourceError};
use crate::testkit::{FakeServer, Fault};

const SITE: &str = "shop.example.com";

fn received() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().expect("date")
}

fn ctx() -> Ctx<'static> {
    Ctx {
        site: SITE,
        received_at: received(),
    }
}

fn schema() -> jsonschema::Validator {
    let s: Value = serde_json::from_str(json_schema::CANONICAL_EVENT).expect("schema json");
    jsonschema::validator_for(&s).expect("schema")
}

fn assert_valid(ev: &CanonicalEvent) {
    let mut e = ev.clone();
    e.validate_and_normalize(&Normalizer::default(), Utc::now())
        .unwrap_or_else(|err| panic!("{} invalid: {err}", ev.event_id));
    assert_eq!(&e, ev, "mapping must emit normalised identifiers");
    let v = serde_json::to_value(ev).expect("json");
    assert!(schema().is_valid(&v), "{v}");
}

fn keys(ev: &CanonicalEvent) -> Vec<String> {
    ev.identifiers.iter().map(|i| i.key()).collect()
}

fn order_events(o: &Value) -> Vec<CanonicalEvent> {
    match map_order(o, &ctx()) {
        OrderMapped::Events(evs) => {
            evs.iter().for_each(assert_valid);
            evs
        }
        other => panic!("expected events from {o}, got {other:?}"),
    }
}

/// The customer of the REST API docs' "Update a customer" example.
fn doc_customer() -> Value {
    json!({"id": 25, "date_created": "2017-03-21T16:09:28", "date_created_gmt": "2017-03-21T19:09:28",
        "date_modified": "2017-03-21T16:12:28", "date_modified_gmt": "2017-03-21T19:12:28",
        "email": "john.doe@example.com", "first_name": "James", "last_name": "Doe", "role": "customer",
        "username": "john.doe",
        "billing": {"first_name": "James", "last_name": "Doe", "company": "", "address_1": "969 Market",
            "address_2": "", "city": "San Francisco", "state": "CA", "postcode": "94103", "country": "US",
            "email": "john.doe@example.com", "phone": "(555) 555-5555"},
        "shipping": {"first_name": "James", "last_name": "Doe", "company": "", "address_1": "969 Market",
            "address_2": "", "city": "San Francisco", "state": "CA", "postcode": "94103", "country": "US"},
        "is_paying_customer": false,
        "avatar_url": "https://secure.gravatar.com/avatar/8eb1b522f60d11fa897de1dc6351b7e8?s=96",
        "meta_data": [],
        "_links": {"self": [{"href": "https://example.com/wp-json/wc/v3/customers/25"}]}})
}

#[test]
fn customer_maps_to_identify() {
    let ev = map_customer(&doc_customer(), &ctx()).expect("mapped");
    assert_valid(&ev);
    assert_eq!(
        ev.event_id,
        "woocommerce:shop.example.com:customer:25:2017-03-21T19:12:28Z"
    );
    assert_eq!(ev.source, "woocommerce:shop.example.com");
    assert_eq!(ev.channel, Channel::Shop);
    assert_eq!(ev.event_type, "identify");
    assert_eq!(ev.occurred_at.to_rfc3339(), "2017-03-21T19:12:28+00:00");
    assert_eq!(ev.received_at, received());
    // (555) 555-5555 is not a real number: no phone identifier, no phone trait
    assert_eq!(
        keys(&ev),
        [
            "woocommerce:shop.example.com/25",
            "email:john.doe@example.com"
        ]
    );
    assert_eq!(
        Value::Object(ev.traits.clone()),
        json!({"email": "john.doe@example.com", "first_name": "James", "last_name": "Doe",
            "name": "James Doe", "city": "San Francisco", "country": "US",
            "woocommerce_username": "john.doe", "is_paying_customer": false,
            "woocommerce_customer_since": "2017-03-21T19:09:28+00:00"})
    );
    assert_eq!(
        Value::Object(ev.properties.to_map()),
        json!({"customer_id": 25, "role": "customer", "date_created": "2017-03-21T19:09:28+00:00"})
    );
    assert!(ev.target.is_empty() && ev.revenue.is_none() && ev.context.is_empty());

    // a real national number, read in the billing country; a second (work) email
    let mut c = doc_customer();
    c["billing"]["phone"] = json!("(415) 555-0123");
    c["billing"]["email"] = json!("J.Doe@Work.Example.org");
    c["email"] = json!(" John.Doe@Example.com ");
    let ev = map_customer(&c, &ctx()).expect("mapped");
    assert_valid(&ev);
    assert_eq!(
        keys(&ev),
        [
            "woocommerce:shop.example.com/25",
            "email:john.doe@example.com",
            "email:j.doe@work.example.org",
            "phone:+14155550123"
        ]
    );
    assert_eq!(ev.traits["phone"], "+14155550123");
    assert_eq!(ev.traits["email"], "john.doe@example.com");
    // never modified: the creation time
    c["date_modified_gmt"] = Value::Null;
    let ev = map_customer(&c, &ctx()).expect("mapped");
    assert_eq!(
        ev.event_id,
        "woocommerce:shop.example.com:customer:25:2017-03-21T19:09:28Z"
    );
}

/// The order of the REST API docs' "Retrieve an order" example (abridged).
fn doc_order() -> Value {
    serde_json::from_str(
        r#"{"id": 727, "parent_id": 0, "number": "727", "order_key": "wc_order_58d2d042d1d",
        "created_via": "rest-api", "version": "3.0.0", "status": "processing", "currency": "USD",
        "date_created": "2017-03-22T16:28:02", "date_created_gmt": "2017-03-22T19:28:02",
        "date_modified": "2017-03-22T16:28:08", "date_modified_gmt": "2017-03-22T19:28:08",
        "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "10.00",
        "shipping_tax": "0.00", "cart_tax": "1.35", "total": "29.35", "total_tax": "1.35",
        "prices_include_tax": false, "customer_id": 0, "customer_ip_address": "",
        "customer_user_agent": "", "customer_note": "",
        "billing": {"first_name": "John", "last_name": "Doe", "company": "", "address_1": "969 Market",
            "address_2": "", "city": "San Francisco", "state": "CA", "postcode": "94103",
            "country": "US", "email": "john.doe@example.com", "phone": "(555) 555-5555"},
        "shipping": {"first_name": "John", "last_name": "Doe", "company": "", "address_1": "969 Market",
            "address_2": "", "city": "San Francisco", "state": "CA", "postcode": "94103", "country": "US"},
        "payment_method": "bacs", "payment_method_title": "Direct Bank Transfer", "transaction_id": "",
        "date_paid": "2017-03-22T16:28:08", "date_paid_gmt": "2017-03-22T19:28:08",
        "date_completed": null, "date_completed_gmt": null, "cart_hash": "",
        "meta_data": [{"id": 13106, "key": "_download_permissions_granted", "value": "yes"}],
        "line_items": [
            {"id": 315, "name": "Woo Single #1", "product_id": 93, "variation_id": 0, "quantity": 2,
             "tax_class": "", "subtotal": "6.00", "subtotal_tax": "0.45", "total": "6.00",
             "total_tax": "0.45", "taxes": [{"id": 75, "total": "0.45", "subtotal": "0.45"}],
             "meta_data": [], "sku": "", "price": 3},
            {"id": 316, "name": "Ship Your Idea &ndash; Color: Black, Size: M Test", "product_id": 22,
             "variation_id": 23, "quantity": 1, "tax_class": "", "subtotal": "12.00",
             "subtotal_tax": "0.90", "total": "12.00", "total_tax": "0.90", "taxes": [],
             "meta_data": [], "sku": "Bar3", "price": 12}],
        "tax_lines": [], "shipping_lines": [{"id": 318, "method_title": "Flat Rate",
            "method_id": "flat_rate", "total": "10.00", "total_tax": "0.00", "taxes": [], "meta_data": []}],
        "fee_lines": [], "coupon_lines": [], "refunds": []}"#,
    )
    .expect("doc order JSON")
}

#[test]
fn order_maps_to_order_with_revenue_and_line_items() {
    let evs = order_events(&doc_order());
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.event_id, "woocommerce:shop.example.com:order:727");
    assert_eq!(ev.source, "woocommerce:shop.example.com");
    assert_eq!(ev.channel, Channel::Shop);
    assert_eq!(ev.event_type, "order");
    assert_eq!(ev.occurred_at.to_rfc3339(), "2017-03-22T19:28:02+00:00");
    let r = ev.revenue.clone().expect("revenue");
    assert_eq!((r.amount, r.currency.as_str()), (29.35, "USD"));
    // a guest (customer_id 0): no woocommerce id
    assert_eq!(keys(ev), ["email:john.doe@example.com"]);
    assert_eq!(
        Value::Object(ev.traits.clone()),
        json!({"email": "john.doe@example.com", "first_name": "John", "last_name": "Doe",
            "name": "John Doe", "city": "San Francisco", "country": "US"})
    );
    assert_eq!(
        Value::Object(ev.properties.to_map()),
        json!({"order_id": 727, "number": "727", "status": "processing",
            "discount_total": 0.0, "shipping_total": 10.0, "total_tax": 1.35,
            "payment_method": "bacs", "payment_method_title": "Direct Bank Transfer",
            "created_via": "rest-api", "date_paid": "2017-03-22T19:28:08+00:00",
            "item_count": 3.0,
            "line_items": [
                {"product_id": 93, "name": "Woo Single #1", "quantity": 2, "total": 6.0},
                {"product_id": 22, "variation_id": 23,
                 "name": "Ship Your Idea &ndash; Color: Black, Size: M Test", "sku": "Bar3",
                 "quantity": 1, "total": 12.0}]})
    );
    assert!(ev.context.is_empty());
}

#[test]
fn refunds_attribution_coupons_and_registered_customers() {
    let mut o = doc_order();
    o["customer_id"] = json!(12);
    o["status"] = json!("refunded");
    o["billing"]["country"] = json!("DE");
    o["billing"]["phone"] = json!("030 901820");
    o["coupon_lines"] = json!([{"id": 9, "code": "spring10", "discount": "2.00", "discount_tax": "0.00",
        "meta_data": []}]);
    o["refunds"] = json!([{"id": 731, "reason": "Arrived broken", "total": "-10.00"},
        {"id": 732, "reason": "", "total": "-19.35"}]);
    o["customer_user_agent"] = json!("Mozilla/5.0 (X11)");
    o["meta_data"] = json!([
        {"id": 1, "key": "_wc_order_attribution_source_type", "value": "utm"},
        {"id": 2, "key": "_wc_order_attribution_utm_source", "value": "newsletter"},
        {"id": 3, "key": "_wc_order_attribution_utm_medium", "value": "email"},
        {"id": 4, "key": "_wc_order_attribution_utm_campaign", "value": "spring_sale"},
        {"id": 5, "key": "_wc_order_attribution_utm_content", "value": "(none)"},
        {"id": 6, "key": "_wc_order_attribution_referrer", "value": "https://mail.example.com/"},
        {"id": 7, "key": "_wc_order_attribution_device_type", "value": "Mobile"},
        {"id": 8, "key": "_wc_order_attribution_session_pages", "value": "4"},
        {"id": 9, "key": "_wc_order_attribution_user_agent", "value": "Mozilla/5.0 (iPhone)"},
        {"id": 10, "key": "_some_plugin", "value": "ignored"}]);
    let evs = order_events(&o);
    assert_eq!(evs.len(), 3);
    let order = &evs[0];
    assert_eq!(
        keys(order),
        [
            "woocommerce:shop.example.com/12",
            "email:john.doe@example.com",
            "phone:+4930901820"
        ]
    );
    assert_eq!(
        Value::Object(order.context.to_map()),
        json!({"campaign": {"source": "newsletter", "medium": "email", "name": "spring_sale"},
            "referrer": {"url": "https://mail.example.com/"},
            "attribution": {"source_type": "utm", "device_type": "Mobile", "session_pages": "4"},
            "userAgent": "Mozilla/5.0 (iPhone)"})
    );
    let p = order.properties.to_map();
    assert_eq!(p["coupons"], json!([{"code": "spring10", "discount": 2.0}]));
    assert_eq!(p["customer_id"], 12);
    assert_eq!(p["status"], "refunded");
    // refunds: positive amounts (the type says they are taken off), own ids
    for (ev, (id, amount, reason)) in evs[1..]
        .iter()
        .zip([(731, 10.0, Some("Arrived broken")), (732, 19.35, None)])
    {
        assert_eq!(ev.event_type, "refund");
        assert_eq!(
            ev.event_id,
            format!("woocommerce:shop.example.com:refund:{id}")
        );
        let r = ev.revenue.clone().expect("revenue");
        assert_eq!((r.amount, r.currency.as_str()), (amount, "USD"));
        assert_eq!(ev.identifiers, order.identifiers);
        assert_eq!(ev.occurred_at.to_rfc3339(), "2017-03-22T19:28:08+00:00");
        let rp = ev.properties.to_map();
        assert_eq!(rp["refund_id"], id);
        assert_eq!(rp["order_id"], 727);
        assert_eq!(rp["order_number"], "727");
        assert_eq!(rp.get("reason").and_then(Value::as_str), reason);
        assert!(ev.traits.is_empty());
    }
    // no attribution meta: the order's user agent
    o["meta_data"] = json!([]);
    let evs = order_events(&o);
    assert_eq!(
        Value::Object(evs[0].context.to_map()),
        json!({"userAgent": "Mozilla/5.0 (X11)"})
    );
}

#[test]
fn only_paid_orders_are_sales() {
    let paid_at = parse_wc_date("2017-03-22T19:28:08");
    for (status, date_paid, sale) in [
        ("processing", None, true),
        ("completed", None, true),
        ("refunded", None, true),
        ("pending", None, false),
        ("pending", paid_at, false),
        ("on-hold", None, false),
        ("on-hold", paid_at, false),
        ("failed", paid_at, false),
        ("cancelled", None, false),
        ("cancelled", paid_at, true),
        ("checkout-draft", None, false),
        ("shipped", paid_at, true),
        ("shipped", None, false),
    ] {
        assert_eq!(is_paid(status, date_paid), sale, "{status} {date_paid:?}");
    }
    let mut o = doc_order();
    o["status"] = json!("pending");
    o["date_paid_gmt"] = Value::Null;
    o["refunds"] = json!([{"id": 1, "reason": "", "total": "-1.00"}]);
    assert!(matches!(
        map_order(&o, &ctx()),
        OrderMapped::Skipped("order_not_paid")
    ));
}

#[test]
fn malformed_objects_are_rejected_with_id_and_reason() {
    let mut d = FakeData::empty();
    d.add_malformed_orders(4);
    let reasons = ["total", "currency", "refund", "identifier"];
    for (o, why) in d.orders.iter().zip(reasons) {
        match map_order(o, &ctx()) {
            OrderMapped::Rejected(r) => {
                assert_eq!(r.object_id, format!("order:{}", o["id"]));
                assert!(r.reason.contains(why), "{} should name {why}", r.reason);
                assert_eq!(serde_json::from_slice::<Value>(&r.raw).expect("raw"), *o);
            }
            other => panic!("{o}: {other:?}"),
        }
    }
    d.add_malformed_customers(1);
    let r = map_customer(&d.customers[0], &ctx()).expect_err("bad date");
    assert_eq!(r.object_id, format!("customer:{}", d.customers[0]["id"]));
    assert!(r.reason.contains("date_created_gmt"), "{}", r.reason);
    for bad in [json!([1]), json!({"id": "x"}), json!({"id": -3})] {
        assert_eq!(map_customer(&bad, &ctx()).expect_err("bad").object_id, "?");
        match map_order(&bad, &ctx()) {
            OrderMapped::Rejected(r) => assert_eq!(r.object_id, "?"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn generated_shop_maps_to_valid_events_with_shared_people() {
    let d = FakeData::generate(800, 3);
    let mut by_email: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_phone: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut orders, mut refunds, mut skipped) = (0, 0, 0);
    for o in &d.orders {
        match map_order(o, &ctx()) {
            OrderMapped::Events(evs) => {
                for e in evs {
                    assert_valid(&e);
                    match e.event_type.as_str() {
                        "order" => orders += 1,
                        _ => refunds += 1,
                    }
                    for i in &e.identifiers {
                        if i.id_type == "email" {
                            by_email
                                .entry(i.value.clone())
                                .or_default()
                                .insert(o["id"].to_string());
                        }
                    }
                }
            }
            OrderMapped::Skipped(_) => skipped += 1,
            OrderMapped::Rejected(r) => panic!("generated order rejected: {}", r.reason),
        }
    }
    for c in d.customers.iter().filter(|c| c["role"] == "customer") {
        let e = map_customer(c, &ctx()).expect("customer");
        assert_valid(&e);
        for i in &e.identifiers {
            if i.id_type == "phone" {
                by_phone
                    .entry(i.value.clone())
                    .or_default()
                    .insert(c["id"].to_string());
            }
        }
    }
    assert!(
        orders > 500 && refunds > 20 && skipped > 50,
        "{orders} {refunds} {skipped}"
    );
    // people order more than once with one email; households share a phone
    assert!(by_email.values().any(|s| s.len() > 1));
    assert!(by_phone.values().any(|s| s.len() > 1), "{by_phone:?}");
}

#[test]
fn woocommerce_dates() {
    let t = |s| parse_wc_date(s).map(|d| d.to_rfc3339());
    assert_eq!(
        t("2017-03-22T16:28:08").as_deref(),
        Some("2017-03-22T16:28:08+00:00")
    );
    assert_eq!(
        t("2017-03-22T16:28:08.120").as_deref(),
        Some("2017-03-22T16:28:08.120+00:00")
    );
    assert_eq!(
        t("2017-03-22T18:28:08+02:00").as_deref(),
        Some("2017-03-22T16:28:08+00:00")
    );
    assert_eq!(t("yesterday"), None);
    assert_eq!(
        super::wc_time("2026-03-01T10:00:00Z".parse().expect("d")),
        "2026-03-01T10:00:00"
    );
}

// ---------------------------------------------------------------- source

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        max_retry_secs: 20,
        retry_max_interval_ms: 1000,
        ..RuntimeSettings::default()
    }
}

fn source(base: &str, f: impl FnOnce(&mut Config)) -> Source {
    let mut c = fake::test_config(base);
    f(&mut c);
    c.validate("connectors.shop").expect("valid config");
    Source::new("shop", c, &settings()).expect("source")
}

/// The fake's site host as the connector derives it (`127.0.0.1`).
fn fake_site() -> String {
    "127.0.0.1".to_string()
}

/// Walks `stream` from `cursor` until caught up; every page's events, and the
/// last cursor. `between` runs after each page (the shop changing meanwhile).
async fn walk(
    s: &mut Source,
    stream: &str,
    mut cursor: Value,
    mut between: impl FnMut(usize, &Page),
) -> (Vec<CanonicalEvent>, Value, usize) {
    let mut events = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.fetch(stream, &cursor).await.expect("page");
        pages += 1;
        assert!(pages < 500, "the walk does not end");
        events.extend(page.events.iter().cloned());
        cursor = page.cursor.clone();
        between(pages, &page);
        if page.caught_up {
            return (events, cursor, pages);
        }
    }
}

/// The events are exactly those of `orders` (the paid ones, each at least once);
/// their event ids.
fn assert_emitted_every_order(orders: Vec<Value>, events: &[CanonicalEvent]) -> BTreeSet<String> {
    let expected: BTreeSet<String> = FakeData {
        orders,
        customers: Vec::new(),
        ..FakeData::empty()
    }
    .expected_event_ids(&fake_site());
    let got = ids(events);
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(missing.is_empty(), "skipped: {missing:?}");
    assert_eq!(got, expected);
    got
}

fn ids(events: &[CanonicalEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

fn only(set: &BTreeSet<String>, kind: &str) -> BTreeSet<String> {
    set.iter()
        .filter(|id| id.contains(&format!(":{kind}:")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn orders_walk_to_the_end_through_a_crowded_second() {
    for concurrent_pages in [1, 4] {
        crowded_second_walk(concurrent_pages).await;
    }
}

async fn crowded_second_walk(concurrent_pages: u32) {
    // 700 orders, 150 of them modified in one second: more than a page
    let data = FakeData::generate(700, 5);
    let expected = data.expected_event_ids(&fake_site());
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |c| c.concurrent_pages = concurrent_pages);
    let start = s.initial_cursor(ORDERS, None);
    assert_eq!(start, json!({"modified": null, "id": 0, "skip": 0}));
    let mut last: Option<(DateTime<Utc>, u64)> = None;
    let (events, cursor, pages) = walk(&mut s, ORDERS, start, |_, p| {
        let c: OrdersCursor = serde_json::from_value(p.cursor.clone()).expect("cursor");
        let pos = c.modified.map(|m| (m, c.id));
        assert!(pos >= last, "the cursor went back: {pos:?} < {last:?}");
        last = pos;
    })
    .await;
    let got = ids(&events);
    assert_eq!(got.len(), events.len(), "no order or refund emitted twice");
    assert_eq!(
        got,
        only(&expected, "order")
            .union(&only(&expected, "refund"))
            .cloned()
            .collect()
    );
    // one request per step: 100 orders per step; 4: up to 385
    assert!(
        pages >= if concurrent_pages == 1 { 7 } else { 3 },
        "{pages}"
    );
    let seen = server.controls.seen();
    assert!(seen.iter().all(|r| r.uri.contains("orderby=modified")
        && r.uri.contains("order=asc")
        && r.uri.contains("dates_are_gmt=true")
        && r.uri.contains("per_page=100")));
    assert!(!seen[0].uri.contains("modified_after"));
    assert!(seen[1..].iter().all(|r| r.uri.contains("modified_after=")));
    // inside the crowded second the walk jumped with `offset`
    assert!(seen.iter().any(|r| r.uri.contains("offset=")), "{seen:?}");
    assert!(seen.iter().all(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v.starts_with("Basic "))));
    // caught up: asking again gets nothing new
    let page = s.fetch(ORDERS, &cursor).await.expect("again");
    assert!(page.caught_up && page.events.is_empty());
    assert_eq!(page.cursor, cursor);
}

#[tokio::test]
async fn orders_changing_during_the_walk_are_never_skipped() {
    let data = FakeData::generate(300, 8);
    let shop = FakeShop::new(data);
    let server = FakeServer::start(shop.router()).await;
    let mut s = source(&server.base_url, |c| c.per_page = 10);
    let all_ids: Vec<u64> = shop
        .orders()
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect();
    let pending: Vec<u64> = shop
        .orders()
        .iter()
        .filter(|o| o["status"] == "pending")
        .filter_map(|o| o["id"].as_u64())
        .collect();
    assert!(pending.len() > 5);
    let mut tick = 0i64;
    let start = s.initial_cursor(ORDERS, None);
    let shop2 = shop.clone();
    let (events, _, _) = walk(&mut s, ORDERS, start, |n, page| {
        // while the connector walks: an order it has passed is saved again, one
        // ahead of it is saved (moves to the end), and an unpaid order it has
        // passed gets paid; each would shift a page-number walk by one
        tick += 1;
        let at = fake::seconds_ago(3600) + chrono::Duration::seconds(tick);
        let done = page.cursor["modified"]
            .as_str()
            .and_then(|m| m.parse::<DateTime<Utc>>().ok());
        let passed: Vec<u64> = shop2
            .orders()
            .iter()
            .filter(|o| {
                done.zip(o["date_modified_gmt"].as_str().and_then(parse_wc_date))
                    .is_some_and(|(d, m)| m < d)
            })
            .filter_map(|o| o["id"].as_u64())
            .collect();
        if let Some(id) = passed.first() {
            shop2.touch_order(*id, at, None);
        }
        let ahead = all_ids[(n * 7) % all_ids.len()];
        if !passed.contains(&ahead) {
            shop2.touch_order(ahead, at, None);
        }
        if let Some(p) = pending.iter().find(|p| passed.contains(p)) {
            shop2.touch_order(*p, at, Some("processing"));
        }
    })
    .await;
    // every paid order of the final shop was emitted (at least once)
    let got = assert_emitted_every_order(shop.orders(), &events);
    // some orders that became paid during the walk are among them
    assert!(got
        .iter()
        .any(|id| pending.iter().any(|p| id.ends_with(&format!(":order:{p}")))));
}

#[tokio::test]
async fn customers_walk_by_id_and_survive_deletions() {
    let data = FakeData::generate(400, 2);
    let expected = only(&data.expected_event_ids(&fake_site()), "customer");
    let shop = FakeShop::new(data);
    let server = FakeServer::start(shop.router()).await;
    let mut s = source(&server.base_url, |c| c.per_page = 10);
    let start = s.initial_cursor(CUSTOMERS, None);
    let shop2 = shop.clone();
    let mut deleted = BTreeSet::new();
    let mut added = Vec::new();
    let (events, cursor, _) = walk(&mut s, CUSTOMERS, start, |n, page| {
        let c: CustomersCursor = serde_json::from_value(page.cursor.clone()).expect("cursor");
        // delete customers already passed: 2 (within the overlap) or 12 (beyond it)
        let passed: Vec<u64> = shop2
            .customers()
            .iter()
            .filter_map(|c| c["id"].as_u64())
            .filter(|id| *id > 1 && *id <= c.last_id)
            .collect();
        let k = if n % 4 == 0 { 12 } else { 2 };
        for id in passed.iter().take(k) {
            shop2.delete_customer(*id);
            deleted.insert(*id);
        }
        if n == 3 {
            let mut c = shop2.customers()[1].clone();
            c["email"] = json!("late.signup@example.com");
            added.push(shop2.add_customer(c));
        }
        assert!(page.total.is_some());
    })
    .await;
    let got = ids(&events);
    assert_eq!(got.len(), events.len(), "no customer emitted twice");
    assert_eq!(only(&got, "customer"), got);
    // everyone who existed at the start was seen (deleted ones too, before deletion)
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(missing.is_empty(), "skipped: {missing:?}");
    // and the customer who signed up during the walk
    assert_eq!(added.len(), 1);
    assert!(got
        .iter()
        .any(|id| id.contains(&format!(":customer:{}:", added[0]))));
    assert!(!deleted.is_empty());
    // the administrator is not a customer
    assert!(!got.iter().any(|id| id.contains(":customer:1:")));
    let c: CustomersCursor = serde_json::from_value(cursor).expect("cursor");
    assert!(c.done);
    let seen = server.controls.seen();
    assert!(seen.iter().all(|r| r.uri.contains("orderby=id")
        && r.uri.contains("order=asc")
        && r.uri.contains("role=customer")));
}

#[tokio::test]
async fn customers_new_pass_after_the_rescan_interval_only() {
    let server = FakeServer::start(fake::router(FakeData::generate(40, 1))).await;
    let mut s = source(&server.base_url, |_| {});
    let recent = CustomersCursor {
        pass_started: Utc::now() - chrono::Duration::hours(1),
        last_id: 999,
        offset: 10,
        since: None,
        done: true,
    };
    let page = s.fetch(CUSTOMERS, &json!(recent)).await.expect("page");
    assert!(page.caught_up && page.events.is_empty());
    assert_eq!(page.cursor, json!(recent));
    assert!(
        server.controls.seen().is_empty(),
        "no call before the interval"
    );
    let old = CustomersCursor {
        pass_started: Utc::now() - chrono::Duration::hours(25),
        ..recent
    };
    let page = s.fetch(CUSTOMERS, &json!(old)).await.expect("page");
    assert_eq!(page.events.len(), 10);
    let c: CustomersCursor = serde_json::from_value(page.cursor).expect("cursor");
    assert!(c.pass_started > old.pass_started && c.done && c.offset == 10);
}

#[tokio::test]
async fn empty_shop_is_caught_up() {
    let server = FakeServer::start(fake::router(FakeData::empty())).await;
    let mut s = source(&server.base_url, |_| {});
    for stream in s.streams() {
        let c = s.initial_cursor(&stream, None);
        let page = s.fetch(&stream, &c).await.expect("page");
        assert!(page.caught_up && page.events.is_empty(), "{stream}");
        assert_eq!(page.total, Some(0));
    }
}

async fn timed_fetch_after(fault: Fault) -> (Duration, usize) {
    let server = FakeServer::start(fake::router(FakeData::generate(30, 4))).await;
    server.controls.push_fault(fault);
    let mut s = source(&server.base_url, |_| {});
    let t = Instant::now();
    let page = s
        .fetch(ORDERS, &s.initial_cursor(ORDERS, None))
        .await
        .expect("page after retry");
    assert!(!page.events.is_empty());
    (t.elapsed(), server.controls.seen().len())
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let (took, calls) = timed_fetch_after(Fault::too_many(1)).await;
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn server_error_is_retried() {
    let (_, calls) = timed_fetch_after(Fault::status(503).body(
        r#"{"code":"internal_server_error","message":"There has been a critical error on this website.","data":{"status":503}}"#,
    ))
    .await;
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn refused_key_is_an_auth_error_naming_instance_and_fix() {
    let mut data = FakeData::generate(10, 1);
    data.consumer_secret = "cs_another".into();
    let server = FakeServer::start(fake::router(data)).await;
    for query_auth in [false, true] {
        let mut s = source(&server.base_url, |c| c.query_string_auth = query_auth);
        let Err(SourceError::Api(e)) = s.fetch(ORDERS, &s.initial_cursor(ORDERS, None)).await
        else {
            panic!("expected an API error")
        };
        assert!(e.is_auth(), "{e}");
        assert_eq!(e.status(), Some(401));
        let msg = e.to_string();
        assert!(msg.contains("shop"), "{msg}");
        assert!(
            msg.contains("WooCommerce → Settings → Advanced → REST API"),
            "{msg}"
        );
        assert!(
            msg.contains("connectors.shop.consumer_key / consumer_secret"),
            "{msg}"
        );
        assert!(
            !msg.contains(FAKE_SECRET) && !msg.contains(FAKE_KEY),
            "{msg}"
        );
    }
    // one request each: a 401 is not retried
    assert_eq!(server.controls.seen().len(), 2);
}

#[tokio::test]
async fn query_string_auth_works_and_keeps_secrets_out_of_errors() {
    let server = FakeServer::start(fake::router(FakeData::generate(10, 1))).await;
    let mut s = source(&server.base_url, |c| c.query_string_auth = true);
    let page = s
        .fetch(ORDERS, &s.initial_cursor(ORDERS, None))
        .await
        .expect("page");
    assert!(!page.events.is_empty());
    let seen = server.controls.seen();
    assert!(seen[0].uri.contains("consumer_key=ck_"));
    assert!(!seen[0].headers.iter().any(|(k, _)| k == "authorization"));
    server.controls.set_sticky(Fault::status(500));
    let mut s = Source::new(
        "shop",
        Config {
            query_string_auth: true,
            ..fake::test_config(&server.base_url)
        },
        &RuntimeSettings {
            max_retry_secs: 1,
            ..settings()
        },
    )
    .expect("source");
    let Err(SourceError::Api(e)) = s.fetch(ORDERS, &s.initial_cursor(ORDERS, None)).await else {
        panic!("expected an error")
    };
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(
            !text.contains(FAKE_SECRET) && !text.contains(FAKE_KEY),
            "{text}"
        );
    }
}

#[tokio::test]
async fn wrong_site_url_explains_the_404() {
    let server = FakeServer::start(fake::router(FakeData::empty())).await;
    let mut s = source(&format!("{}/blog", server.base_url), |_| {});
    let Err(SourceError::Api(e)) = s.fetch(ORDERS, &s.initial_cursor(ORDERS, None)).await else {
        panic!("expected an error")
    };
    assert!(!e.is_auth());
    assert_eq!(e.status(), Some(404));
    let msg = e.to_string();
    assert!(
        msg.contains("rest_no_route") && msg.contains("connectors.shop.site_url"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_shop_ignoring_modified_after_is_reported_not_looped() {
    let shop = FakeShop::new(FakeData::generate(120, 3));
    shop.set_legacy(true);
    let server = FakeServer::start(shop.router()).await;
    let mut s = source(&server.base_url, |c| c.per_page = 50);
    let first = s
        .fetch(ORDERS, &s.initial_cursor(ORDERS, None))
        .await
        .expect("first page");
    let Err(SourceError::Api(e)) = s.fetch(ORDERS, &first.cursor).await else {
        panic!("expected an error")
    };
    assert!(!e.is_auth());
    let msg = e.to_string();
    assert!(
        msg.contains("ignored `modified_after`") && msg.contains("5.8"),
        "{msg}"
    );
}

#[tokio::test]
async fn malformed_objects_are_rejected_and_the_walk_goes_on() {
    let mut data = FakeData::generate(40, 6);
    data.add_malformed_orders(4);
    data.add_malformed_customers(2);
    let expected = data.expected_event_ids(&fake_site());
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |_| {});
    let page = s
        .fetch(ORDERS, &s.initial_cursor(ORDERS, None))
        .await
        .expect("page");
    assert_eq!(page.rejected.len(), 4);
    assert!(page
        .rejected
        .iter()
        .all(|r| r.object_id.starts_with("order:")));
    assert_eq!(
        ids(&page.events),
        only(&expected, "order")
            .union(&only(&expected, "refund"))
            .cloned()
            .collect()
    );
    // the walk moved past them
    let again = s.fetch(ORDERS, &page.cursor).await.expect("again");
    assert!(again.rejected.is_empty() && again.events.is_empty() && again.caught_up);
    let page = s
        .fetch(CUSTOMERS, &s.initial_cursor(CUSTOMERS, None))
        .await
        .expect("customers");
    assert_eq!(page.rejected.len(), 2);
    assert_eq!(ids(&page.events), only(&expected, "customer"));
}

#[tokio::test]
async fn resume_from_a_stored_cursor_continues_exactly() {
    let data = FakeData::generate(650, 12);
    let expected = data.expected_event_ids(&fake_site());
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |c| c.per_page = 50);
    let mut stored = s.initial_cursor(ORDERS, None);
    let mut got = Vec::new();
    for _ in 0..6 {
        let p = s.fetch(ORDERS, &stored).await.expect("page");
        got.extend(p.events.iter().map(|e| e.event_id.clone()));
        stored = p.cursor;
    }
    // page 7 fetched, then a crash before its cursor was stored
    let lost: Vec<_> = s
        .fetch(ORDERS, &stored)
        .await
        .expect("page 7")
        .events
        .iter()
        .map(|e| e.event_id.clone())
        .collect();
    drop(s);
    let mut s = source(&server.base_url, |c| c.per_page = 50);
    let p = s.fetch(ORDERS, &stored).await.expect("replay");
    let replay: Vec<_> = p.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(replay, lost, "the replayed page has the same event ids");
    let (rest, _, _) = walk(&mut s, ORDERS, p.cursor, |_, _| {}).await;
    got.extend(replay);
    got.extend(rest.iter().map(|e| e.event_id.clone()));
    let set: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        set.len(),
        got.len(),
        "no duplicates beyond the replayed page"
    );
    assert_eq!(
        set,
        only(&expected, "order")
            .union(&only(&expected, "refund"))
            .cloned()
            .collect()
    );
}

#[tokio::test]
async fn since_sets_the_watermark_and_filters_customers() {
    let data = FakeData::generate(200, 14);
    let shop_orders = data.orders.clone();
    // orders: the middle of their modification times, rounded to a second
    let mut times: Vec<DateTime<Utc>> = shop_orders
        .iter()
        .filter_map(|o| o["date_modified_gmt"].as_str().and_then(parse_wc_date))
        .collect();
    times.sort();
    let since = times[times.len() / 2];
    let customers = data.customers.clone();
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |_| {});
    let start = s.initial_cursor(ORDERS, Some(since));
    assert_eq!(start, json!({"modified": since, "id": 0, "skip": 0}));
    let (events, _, _) = walk(&mut s, ORDERS, start, |_, _| {}).await;
    let want: BTreeSet<String> = FakeData {
        orders: shop_orders
            .iter()
            .filter(|o| {
                o["date_modified_gmt"]
                    .as_str()
                    .and_then(parse_wc_date)
                    .is_some_and(|m| m >= since)
            })
            .cloned()
            .collect(),
        ..FakeData::empty()
    }
    .expected_event_ids(&fake_site());
    assert!(!want.is_empty() && want.len() < shop_orders.len() * 3 / 4);
    assert_eq!(ids(&events), want);
    let after = super::wc_time(since - chrono::Duration::seconds(1)).replace(':', "%3A");
    assert!(server.controls.seen()[0]
        .uri
        .contains(&format!("modified_after={after}")));
    // customers: the middle of their modification times
    let mut times: Vec<DateTime<Utc>> = customers
        .iter()
        .filter_map(super::mapping::customer_modified)
        .collect();
    times.sort();
    let since = times[times.len() / 2];
    let start = s.initial_cursor(CUSTOMERS, Some(since));
    let (events, _, _) = walk(&mut s, CUSTOMERS, start, |_, _| {}).await;
    let want: BTreeSet<String> = FakeData {
        customers: customers
            .iter()
            .filter(|c| super::mapping::customer_modified(c).is_some_and(|m| m >= since))
            .cloned()
            .collect(),
        ..FakeData::empty()
    }
    .expected_event_ids(&fake_site());
    assert!(!want.is_empty() && want.len() < customers.len() - 2);
    assert_eq!(ids(&events), want);
}

#[tokio::test]
async fn orders_saved_just_now_wait_for_the_settle_time() {
    let data = FakeData::generate(20, 2);
    let shop = FakeShop::new(data);
    let server = FakeServer::start(shop.router()).await;
    let paid = shop
        .orders()
        .into_iter()
        .find(|o| o["status"] == "completed")
        .and_then(|o| o["id"].as_u64())
        .expect("a completed order");
    shop.touch_order(paid, Utc::now(), None);
    let mut s = source(&server.base_url, |c| c.settle_secs = 30);
    let start = s.initial_cursor(ORDERS, None);
    let (events, cursor, _) = walk(&mut s, ORDERS, start, |_, _| {}).await;
    let id = format!(":order:{paid}");
    assert!(!ids(&events).iter().any(|e| e.ends_with(&id)), "held back");
    // once it settled (here: a source without settle time), it comes
    let mut s = source(&server.base_url, |c| c.settle_secs = 0);
    let page = s.fetch(ORDERS, &cursor).await.expect("page");
    assert!(ids(&page.events).iter().any(|e| e.ends_with(&id)));
}

// ---------------------------------------------------------------- config

fn parse(toml_text: &str) -> Result<Config, String> {
    let t: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let c: Config = parse_source_config("connectors.shop", t)?;
    c.validate("connectors.shop")?;
    Ok(c)
}

const MINIMAL: &str = "site_url = \"https://Shop.Example.com/\"\nconsumer_key = \"ck_live_1234\"\nconsumer_secret = \"cs_live_5678\"";

#[test]
fn config_defaults_errors_and_secrets() {
    let c = parse(MINIMAL).expect("minimal");
    assert_eq!(c.per_page, 100);
    assert_eq!(c.customer_role, "customer");
    assert_eq!(c.customer_rescan_hours, 24);
    assert_eq!(c.settle_secs, 30);
    assert!(!c.query_string_auth);
    assert_eq!(c.site().as_deref(), Some("shop.example.com"));
    assert_eq!(c.api_base(), "https://Shop.Example.com/wp-json/wc/v3");
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("cs_live_5678") && !dbg.contains("ck_live_1234"),
        "{dbg}"
    );
    let e = parse(&format!("{MINIMAL}\nper_pag = 5")).expect_err("unknown");
    assert!(e.contains("per_pag"), "{e}");
    let e = parse("consumer_key = \"a\"\nconsumer_secret = \"b\"").expect_err("no site");
    assert!(e.contains("site_url"), "{e}");
    for (toml_text, field) in [
        (
            format!("{MINIMAL}\nper_page = 0"),
            "connectors.shop.per_page",
        ),
        (
            format!("{MINIMAL}\nper_page = 101"),
            "connectors.shop.per_page",
        ),
        (
            format!("{MINIMAL}\ncustomer_role = \"Shop Manager\""),
            "connectors.shop.customer_role",
        ),
        (
            format!("{MINIMAL}\ncustomer_rescan_hours = 0"),
            "connectors.shop.customer_rescan_hours",
        ),
        (
            format!("{MINIMAL}\nsettle_secs = 7200"),
            "connectors.shop.settle_secs",
        ),
        (
            MINIMAL.replace("https://Shop.Example.com/", "http://shop.example.com"),
            "connectors.shop.site_url",
        ),
        (
            MINIMAL.replace("https://Shop.Example.com/", "shop.example.com"),
            "connectors.shop.site_url",
        ),
        (
            MINIMAL.replace("https://Shop.Example.com/", "https://shop.example.com/?x=1"),
            "connectors.shop.site_url",
        ),
        (
            MINIMAL.replace("consumer_key = \"ck_live_1234\"\n", ""),
            "connectors.shop.consumer_key",
        ),
        (
            MINIMAL.replace("\nconsumer_secret = \"cs_live_5678\"", ""),
            "connectors.shop.consumer_secret",
        ),
    ] {
        let e = parse(&toml_text).expect_err(&toml_text);
        assert!(e.contains(field), "{toml_text}: {e}");
        assert!(!e.contains("cs_live_5678"), "{e}");
    }
    // plain http only for a shop on this machine (tests, local development)
    let c = parse(&MINIMAL.replace("https://Shop.Example.com/", "http://127.0.0.1:8080"))
        .expect("loopback");
    assert_eq!(c.site().as_deref(), Some("127.0.0.1"));
    let c = parse(&MINIMAL.replace("https://Shop.Example.com/", "https://example.com/shop"))
        .expect("sub-directory");
    assert_eq!(c.api_base(), "https://example.com/shop/wp-json/wc/v3");
}

#[test]
fn slim_field_lists_are_sorted() {
    use super::mapping::{
        CUSTOMER_FIELDS, CUSTOMER_KEY_FIELDS, LINE_ITEM_FIELDS, ORDER_FIELDS, ORDER_KEY_FIELDS,
    };
    for fields in [
        ORDER_FIELDS,
        ORDER_KEY_FIELDS,
        CUSTOMER_FIELDS,
        CUSTOMER_KEY_FIELDS,
        LINE_ITEM_FIELDS,
    ] {
        assert!(fields.windows(2).all(|w| w[0] < w[1]), "{fields:?}");
    }
}

#[test]
fn slim_orders_map_like_whole_orders() {
    // the walk parses only the fields the mapping reads: same events, same
    // rejections, for generated and malformed orders
    let mut data = FakeData::generate(400, 11);
    data.add_malformed_orders(8);
    for o in &data.orders {
        let raw = serde_json::value::RawValue::from_string(o.to_string()).expect("raw");
        let slim = super::mapping::slim(&raw, super::mapping::ORDER_FIELDS).expect("slim");
        assert_eq!(
            super::mapping::order_key(&slim),
            super::mapping::order_key(o)
        );
        // the walk reads the key from the key fields alone
        let key = super::mapping::slim(&raw, super::mapping::ORDER_KEY_FIELDS).expect("key");
        assert_eq!(
            super::mapping::order_key(&key),
            super::mapping::order_key(o)
        );
        match (map_order(&slim, &ctx()), map_order(o, &ctx())) {
            (OrderMapped::Events(a), OrderMapped::Events(b)) => {
                assert_eq!(
                    serde_json::to_value(&a).expect("json"),
                    serde_json::to_value(&b).expect("json")
                )
            }
            (OrderMapped::Skipped(a), OrderMapped::Skipped(b)) => assert_eq!(a, b),
            (OrderMapped::Rejected(a), OrderMapped::Rejected(b)) => {
                assert_eq!((a.object_id, a.reason), (b.object_id, b.reason))
            }
            (a, b) => panic!("{a:?} != {b:?}"),
        }
    }
    let not_object = serde_json::value::RawValue::from_string("[1]".into()).expect("raw");
    assert_eq!(
        super::mapping::slim(&not_object, super::mapping::ORDER_FIELDS),
        Some(json!([1]))
    );
}

#[test]
fn wc_dates_fast_path_agrees_with_the_parser() {
    for s in [
        "2017-03-22T16:28:08",
        "2024-02-29T23:59:59",
        "2023-02-29T10:00:00",
        "2017-13-22T16:28:08",
        "2017-03-22T16:28:60",
        "2017-03-22 16:28:08",
        "2017-03-22T16:28:08.5",
        "2017-03-22T16:28:08Z",
        "2017-03-22T16:28:08+02:00",
        "+017-03-22T16:28:08",
        "last tuesday",
    ] {
        let slow = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
            .ok()
            .map(|n| n.and_utc());
        let rfc = DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(parse_wc_date(s), rfc.or(slow), "{s}");
    }
}

#[test]
fn slim_customers_map_like_whole_customers() {
    let mut data = FakeData::generate(400, 12);
    data.add_malformed_customers(4);
    for c in &data.customers {
        let raw = serde_json::value::RawValue::from_string(c.to_string()).expect("raw");
        let slim = super::mapping::slim(&raw, super::mapping::CUSTOMER_FIELDS).expect("slim");
        assert_eq!(
            super::mapping::customer_id(&slim),
            super::mapping::customer_id(c)
        );
        assert_eq!(
            super::mapping::customer_modified(&slim),
            super::mapping::customer_modified(c)
        );
        // the walk reads id and time from the key fields alone
        let key = super::mapping::slim(&raw, super::mapping::CUSTOMER_KEY_FIELDS).expect("key");
        assert_eq!(
            super::mapping::customer_id(&key),
            super::mapping::customer_id(c)
        );
        assert_eq!(
            super::mapping::customer_modified(&key),
            super::mapping::customer_modified(c)
        );
        match (map_customer(&slim, &ctx()), map_customer(c, &ctx())) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!((a.object_id, a.reason), (b.object_id, b.reason)),
            (a, b) => panic!("{a:?} != {b:?}"),
        }
    }
}

/// A list of `n` objects `{"id": k}` from `from` on, as raw texts.
fn raws(from: u64, n: u64) -> Vec<Box<serde_json::value::RawValue>> {
    (from..from + n)
        .map(|k| serde_json::value::RawValue::from_string(format!("{{\"id\":{k}}}")).expect("raw"))
        .collect()
}

fn raw_ids(items: &[Box<serde_json::value::RawValue>]) -> Vec<u64> {
    items
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r.get()).expect("json")["id"]
                .as_u64()
                .expect("id")
        })
        .collect()
}

#[test]
fn step_windows_join_only_when_their_overlap_matches() {
    use super::window::{join, offsets, requests};
    // per_page 10, overlap 5: windows start every 5 objects
    assert_eq!(offsets(0, 10, 4), [0, 5, 10, 15]);
    assert_eq!(offsets(7, 100, 3), [7, 102, 197]);
    // consecutive windows of an unchanged list: each object once, in order
    let j = join(vec![raws(0, 10), raws(5, 10), raws(10, 10)], 10);
    assert_eq!(raw_ids(&j.items), (0..20).collect::<Vec<_>>());
    assert_eq!((j.windows, j.reached_end), (3, false));
    // a short window is the end of the list; windows after it are not used
    let j = join(vec![raws(0, 10), raws(5, 7), raws(10, 2)], 10);
    assert_eq!(raw_ids(&j.items), (0..12).collect::<Vec<_>>());
    assert_eq!((j.windows, j.reached_end), (2, true));
    // object 3 left the list between the first and the second request: the
    // second window starts one later, and joining it would skip object 10
    let j = join(vec![raws(0, 10), raws(6, 10), raws(11, 10)], 10);
    assert_eq!(raw_ids(&j.items), (0..10).collect::<Vec<_>>());
    assert_eq!((j.windows, j.reached_end), (1, false));
    // an object changed (same id, other text) inside the overlap: not joined
    let mut changed = raws(5, 10);
    changed[2] =
        serde_json::value::RawValue::from_string("{\"id\":7,\"status\":\"completed\"}".into())
            .expect("raw");
    let j = join(vec![raws(0, 10), changed], 10);
    assert_eq!((j.windows, j.items.len()), (1, 10));
    // the list shrank below the overlap: not joined, not the end either
    let j = join(vec![raws(0, 10), raws(5, 3)], 10);
    assert_eq!((j.windows, j.reached_end), (1, false));
    // nothing answered
    assert!(join(Vec::new(), 10).reached_end);
    // how many requests a step sends
    assert_eq!(requests(4, 100, None), 1, "unknown rest of the list");
    assert_eq!(requests(4, 100, Some(80)), 1);
    assert_eq!(requests(4, 100, Some(101)), 2);
    assert_eq!(requests(4, 100, Some(10_000)), 4);
    assert_eq!(requests(1, 100, Some(10_000)), 1, "concurrent_pages = 1");
    assert_eq!(
        requests(4, 5, Some(10_000)),
        1,
        "pages no larger than the overlap"
    );
}

/// Walks orders and customers with `concurrent_pages` requests per step; the
/// event ids, and how many steps (pages) each stream took.
async fn walk_all(data: FakeData, concurrent_pages: u32) -> (BTreeSet<String>, usize, usize) {
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |c| {
        c.per_page = 10;
        c.concurrent_pages = concurrent_pages;
    });
    let start = s.initial_cursor(ORDERS, None);
    let (orders, _, order_steps) = walk(&mut s, ORDERS, start, |_, _| {}).await;
    let start = s.initial_cursor(CUSTOMERS, None);
    let (customers, _, customer_steps) = walk(&mut s, CUSTOMERS, start, |_, _| {}).await;
    let all: Vec<CanonicalEvent> = orders.into_iter().chain(customers).collect();
    let got = ids(&all);
    assert_eq!(got.len(), all.len(), "no event emitted twice");
    (got, order_steps, customer_steps)
}

#[tokio::test]
async fn concurrent_pages_read_the_same_as_one_request_at_a_time() {
    let mut data = FakeData::generate(300, 21);
    data.add_malformed_orders(3);
    data.add_malformed_customers(2);
    let expected = data.expected_event_ids(&fake_site());
    let (serial, serial_orders, serial_customers) = walk_all(data.clone(), 1).await;
    let (windows, window_orders, window_customers) = walk_all(data, 4).await;
    assert_eq!(serial, expected);
    assert_eq!(windows, expected);
    // 4 windows of 10 with an overlap of 5 cover 25 objects per step
    assert!(
        window_orders * 2 < serial_orders,
        "{window_orders} vs {serial_orders}"
    );
    assert!(
        window_customers * 2 < serial_customers,
        "{window_customers} vs {serial_customers}"
    );
}

#[tokio::test]
async fn orders_leaving_their_place_between_a_steps_requests_are_never_skipped() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let shop = FakeShop::new(FakeData::generate(300, 22));
    let (shop2, tick) = (shop.clone(), Arc::new(AtomicI64::new(0)));
    // before answering a window request (one with an offset), the shop saves
    // the first order of the list again: it moves to the end and every order
    // after it moves up by one, under the windows answered before it
    let router = shop.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (shop, tick) = (shop2.clone(), tick.clone());
            async move {
                let query = req.uri().query().unwrap_or("").to_string();
                let t = tick.fetch_add(1, Ordering::SeqCst);
                if query.contains("offset=") && t < 60 {
                    // the first order of the list this request reads
                    let after = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("modified_after="))
                        .and_then(|v| parse_wc_date(&v.replace("%3A", ":")));
                    let first = shop
                        .orders()
                        .iter()
                        .filter_map(|o| {
                            let m = o["date_modified_gmt"].as_str().and_then(parse_wc_date)?;
                            Some((m, o["id"].as_u64()?))
                        })
                        .filter(|(m, _)| after.is_none_or(|a| *m > a))
                        .min();
                    if let Some((_, id)) = first {
                        let at = fake::seconds_ago(3600) + chrono::Duration::seconds(t);
                        shop.touch_order(id, at, None);
                    }
                }
                next.run(req).await
            }
        },
    ));
    let server = FakeServer::start(router).await;
    let mut s = source(&server.base_url, |c| {
        c.per_page = 10;
        c.concurrent_pages = 4;
    });
    let start = s.initial_cursor(ORDERS, None);
    let (events, _, _) = walk(&mut s, ORDERS, start, |_, _| {}).await;
    assert_emitted_every_order(shop.orders(), &events);
}

#[test]
fn typed_orders_map_like_slim_trees() {
    // generated and malformed orders, and variants with escapes, ids and amounts
    // in both JSON types, meta values of every type, and fields the typed
    // reading declines
    let mut data = FakeData::generate(400, 12);
    data.add_malformed_orders(8);
    let mut texts: Vec<String> = data.orders.iter().map(|o| o.to_string()).collect();
    let generated = texts.len();
    let base = data
        .orders
        .iter()
        .find(|o| {
            o["status"] == "completed" && o["refunds"].as_array().is_some_and(|r| !r.is_empty())
        })
        .expect("a completed order with a refund")
        .clone();
    let variant = |f: &dyn Fn(&mut Value)| {
        let mut o = base.clone();
        f(&mut o);
        o.to_string()
    };
    texts.extend([
        variant(&|o| o["billing"]["first_name"] = json!("Zo\u{eb} \"Z\"")),
        variant(&|o| o["id"] = json!(o["id"].to_string())),
        variant(&|o| o["total"] = json!(12.5)),
        variant(&|o| o["customer_id"] = Value::Null),
        variant(&|o| {
            o["meta_data"] = json!([
                {"key": "_wc_order_attribution_utm_source", "value": "  news  "},
                {"key": "_wc_order_attribution_session_pages", "value": 4},
                {"key": "_wc_order_attribution_utm_medium", "value": {"a": [1]}},
                {"key": "_wc_order_attribution_utm_term", "value": "(none)"},
                {"key": "_wc_order_attribution_referrer", "value": null},
                {"key": "other", "value": [1, 2]},
            ])
        }),
        variant(&|o| o["line_items"][0]["quantity"] = json!(1.5)),
        // declined by the typed reading, mapped by the tree
        variant(&|o| o["status"] = json!(7)),
        variant(&|o| o["billing"] = json!("nobody")),
        variant(&|o| o["line_items"][0]["quantity"] = json!("2")),
        variant(&|o| o["refunds"][0]["id"] = json!(0)),
        variant(&|o| o["date_paid_gmt"] = json!(5)),
        variant(&|o| o["customer_id"] = json!("x")),
        variant(&|o| {
            o["customer_id"] = json!(0);
            o["billing"] = json!({"email": "", "phone": ""});
        }),
    ]);
    let mut typed_took = 0;
    for (n, text) in texts.iter().enumerate() {
        let raw = serde_json::value::RawValue::from_string(text.clone()).expect("raw");
        let slim = super::mapping::slim(&raw, super::mapping::ORDER_FIELDS).expect("slim");
        let want = map_order(&slim, &ctx());
        let Some(got) = super::typed::map_order(text, &ctx()) else {
            continue;
        };
        typed_took += usize::from(n < generated);
        match (got, want) {
            (OrderMapped::Events(a), OrderMapped::Events(b)) => assert_eq!(a, b, "{text}"),
            (OrderMapped::Skipped(a), OrderMapped::Skipped(b)) => assert_eq!(a, b),
            (a, b) => panic!("{text}: typed {a:?}, tree {b:?}"),
        }
    }
    // the typed reading takes the well-formed generated orders
    assert!(
        typed_took >= generated - 8 - 20,
        "{typed_took} of {generated}"
    );
    for text in &texts[generated + 6..] {
        assert!(super::typed::map_order(text, &ctx()).is_none(), "{text}");
    }
}
