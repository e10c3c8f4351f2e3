//! Shopify connector tests: mapping of documented objects, the source against the
//! fake API (pagination, cursors, throttling, errors), and the config.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{json_schema, CanonicalEvent, Normalizer};

use super::client::{self, PageInfo};
use super::config::BulkMode;
use super::fake::{self, Bucket, FakeData};
use super::mapping::{self, MapCtx, SkipReason};
use super::{Config, Source, StreamCursor, CUSTOMERS, ORDERS};
use crate::runtime::config::RuntimeSettings;
use crate::runtime::{Page, Source as _, SourceError};
use crate::testkit::{FakeServer, Fault};

const SHOP: &str = "eu-store.myshopify.com";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("date")
}

fn ctx(n: &Normalizer) -> MapCtx<'_> {
    MapCtx {
        shop: SHOP,
        source: "shopify:eu-store.myshopify.com",
        received_at: at("2026-11-20T12:00:00Z"),
        include_test_orders: false,
        normalizer: n,
    }
}

fn schema() -> jsonschema::Validator {
    let s: Value = serde_json::from_str(json_schema::CANONICAL_EVENT).expect("schema json");
    jsonschema::validator_for(&s).expect("schema")
}

/// Every event passes the runtime's validation and the JSON Schema.
fn assert_valid(events: &[CanonicalEvent]) {
    let schema = schema();
    let n = Normalizer::default();
    for ev in events {
        let mut e = ev.clone();
        let dropped = e
            .validate_and_normalize(&n, Utc::now())
            .unwrap_or_else(|err| panic!("{} invalid: {err}", ev.event_id));
        assert!(dropped.is_empty(), "{}: dropped {dropped:?}", ev.event_id);
        let v = serde_json::to_value(&e).expect("json");
        assert!(schema.is_valid(&v), "{v}");
    }
}

fn keys(ev: &CanonicalEvent) -> Vec<String> {
    ev.identifiers.iter().map(|i| i.key()).collect()
}

/// The shape of the `customers` query example in Shopify's docs (2025-04+).
fn documented_customer() -> Value {
    json!({
        "id": "gid://shopify/Customer/105906728",
        "firstName": "John",
        "lastName": "Smith",
        "displayName": "John Smith",
        "defaultEmailAddress": {"emailAddress": "JohnSmith@Example.com", "marketingState": "NOT_SUBSCRIBED"},
        "defaultPhoneNumber": {"phoneNumber": "+16134504532", "marketingState": "NOT_SUBSCRIBED"},
        "createdAt": "2025-04-15T19:26:33Z",
        "updatedAt": "2025-04-16T08:00:00Z",
        "numberOfOrders": "3",
        "state": "ENABLED",
        "amountSpent": {"amount": "120.5", "currencyCode": "USD"},
        "verifiedEmail": true,
        "locale": "en",
        "tags": ["vip", "newsletter"],
        "defaultAddress": {"city": "Ottawa", "provinceCode": "ON", "countryCodeV2": "CA"}
    })
}

fn documented_order() -> Value {
    json!({
        "id": "gid://shopify/Order/5500000001",
        "name": "#1001",
        "email": "johnsmith@example.com",
        "phone": null,
        "createdAt": "2026-03-01T10:00:00Z",
        "updatedAt": "2026-03-02T09:00:00Z",
        "processedAt": "2026-03-01T10:00:05Z",
        "cancelledAt": null,
        "test": false,
        "sourceName": "web",
        "tags": [],
        "currencyCode": "EUR",
        "presentmentCurrencyCode": "USD",
        "displayFinancialStatus": "PARTIALLY_REFUNDED",
        "displayFulfillmentStatus": "FULFILLED",
        "discountCodes": ["WELCOME10"],
        "customer": {"id": "gid://shopify/Customer/105906728"},
        "totalPriceSet": {"shopMoney": {"amount": "59.90", "currencyCode": "EUR"},
                          "presentmentMoney": {"amount": "64.70", "currencyCode": "USD"}},
        "subtotalPriceSet": {"shopMoney": {"amount": "61.11", "currencyCode": "EUR"}},
        "totalDiscountsSet": {"shopMoney": {"amount": "6.11", "currencyCode": "EUR"}},
        "totalTaxSet": {"shopMoney": {"amount": "9.56", "currencyCode": "EUR"}},
        "totalShippingPriceSet": {"shopMoney": {"amount": "4.90", "currencyCode": "EUR"}},
        "totalRefundedSet": {"shopMoney": {"amount": "19.90", "currencyCode": "EUR"}},
        "customerJourneySummary": {
            "firstVisit": {"occurredAt": "2026-02-20T18:00:00Z",
                "landingPage": "https://eu-store.example/products/boots?utm_source=google",
                "referrerUrl": "https://www.google.com/", "source": "google",
                "utmParameters": {"source": "google", "medium": "cpc", "campaign": "brand_search", "content": null, "term": "boots"}},
            "lastVisit": {"occurredAt": "2026-03-01T09:40:00Z",
                "landingPage": "https://eu-store.example/?utm_source=newsletter",
                "referrerUrl": null, "source": "newsletter",
                "utmParameters": {"source": "newsletter", "medium": "email", "campaign": "spring_sale", "content": "hero", "term": null}}
        },
        "lineItems": {"pageInfo": {"hasNextPage": false, "endCursor": "eyJsYXN0X2luZGV4IjoxfQ=="}, "nodes": [
            {"id": "gid://shopify/LineItem/13000000001", "title": "Boots", "variantTitle": "42", "sku": "BOOT-42",
             "quantity": 1, "product": {"id": "gid://shopify/Product/8000000007", "productType": "Shoes"},
             "originalUnitPriceSet": {"shopMoney": {"amount": "49.90", "currencyCode": "EUR"}},
             "discountedTotalSet": {"shopMoney": {"amount": "44.91", "currencyCode": "EUR"}}},
            {"id": "gid://shopify/LineItem/13000000002", "title": "Gift wrap", "variantTitle": null, "sku": "",
             "quantity": 2, "product": null,
             "originalUnitPriceSet": {"shopMoney": {"amount": "5.605", "currencyCode": "EUR"}},
             "discountedTotalSet": {"shopMoney": {"amount": "10.09", "currencyCode": "EUR"}}}
        ]},
        "refunds": [
            {"id": "gid://shopify/Refund/9000000001", "createdAt": "2026-03-02T08:59:00Z", "note": "too small",
             "totalRefundedSet": {"shopMoney": {"amount": "19.90", "currencyCode": "EUR"}}}
        ]
    })
}

// ---------------------------------------------------------------- mapping

#[test]
fn customer_maps_to_identify_with_every_field() {
    let n = Normalizer::default();
    let ev = mapping::map_customer(&documented_customer(), &ctx(&n)).expect("mapped");
    assert_eq!(
        ev.event_id,
        "shopify:eu-store.myshopify.com:customer:105906728:2025-04-16T08:00:00Z"
    );
    assert_eq!(ev.source, "shopify:eu-store.myshopify.com");
    assert_eq!(ev.channel.as_str(), "shop");
    assert_eq!(ev.event_type, "identify");
    assert_eq!(ev.occurred_at, at("2025-04-16T08:00:00Z"));
    assert_eq!(ev.received_at, at("2026-11-20T12:00:00Z"));
    assert_eq!(
        keys(&ev),
        [
            "shopify:eu-store.myshopify.com/105906728",
            "email:johnsmith@example.com",
            "phone:+16134504532"
        ]
    );
    let t = Value::Object(ev.traits.clone());
    assert_eq!(
        t,
        json!({
            "email": "johnsmith@example.com",
            "email_marketing_consent": "NOT_SUBSCRIBED",
            "phone": "+16134504532",
            "sms_marketing_consent": "NOT_SUBSCRIBED",
            "first_name": "John",
            "last_name": "Smith",
            "name": "John Smith",
            "tags": ["vip", "newsletter"],
            "shopify_orders_count": 3,
            "shopify_amount_spent": 120.5,
            "shopify_currency": "USD",
            "shopify_account_state": "ENABLED",
            "verified_email": true,
            "locale": "en",
            "city": "Ottawa",
            "region": "ON",
            "country": "CA",
            "shopify_created_at": "2025-04-15T19:26:33Z"
        })
    );
    assert_eq!(ev.properties.to_map()["customer_id"], "105906728");
    assert!(ev.revenue.is_none() && ev.target.is_empty() && ev.context.is_empty());
    assert_valid(&[ev]);
}

#[test]
fn each_customer_update_is_a_new_identify_version() {
    let n = Normalizer::default();
    let mut c = documented_customer();
    let a = mapping::map_customer(&c, &ctx(&n)).expect("a");
    c["updatedAt"] = json!("2025-05-01T00:00:00.000+02:00");
    let b = mapping::map_customer(&c, &ctx(&n)).expect("b");
    assert_ne!(a.event_id, b.event_id);
    assert!(
        b.event_id.ends_with(":2025-04-30T22:00:00Z"),
        "{}",
        b.event_id
    );
    // same version, same id (a replay is deduplicated)
    assert_eq!(
        a.event_id,
        mapping::map_customer(&documented_customer(), &ctx(&n))
            .expect("again")
            .event_id
    );
}

#[test]
fn order_maps_to_order_and_refund_events() {
    let n = Normalizer::default();
    let out = mapping::map_order(&documented_order(), &ctx(&n));
    assert!(out.rejected.is_empty() && out.skipped.is_none());
    assert_eq!(out.events.len(), 2);
    let order = &out.events[0];
    assert_eq!(
        order.event_id,
        "shopify:eu-store.myshopify.com:order:5500000001"
    );
    assert_eq!(order.event_type, "order");
    assert_eq!(order.channel.as_str(), "shop");
    assert_eq!(order.occurred_at, at("2026-03-01T10:00:05Z"), "processedAt");
    assert_eq!(
        keys(order),
        [
            "shopify:eu-store.myshopify.com/105906728",
            "email:johnsmith@example.com"
        ]
    );
    let r = order.revenue.clone().expect("revenue");
    assert_eq!((r.amount, r.currency.as_str()), (59.9, "EUR"));
    let p = Value::Object(order.properties.to_map());
    assert_eq!(
        p,
        json!({
            "order_id": "5500000001",
            "order_name": "#1001",
            "customer_id": "105906728",
            "created_at": "2026-03-01T10:00:00Z",
            "processed_at": "2026-03-01T10:00:05Z",
            "financial_status": "PARTIALLY_REFUNDED",
            "fulfillment_status": "FULFILLED",
            "source_name": "web",
            "test": false,
            "tags": [],
            "discount_codes": ["WELCOME10"],
            "currency": "EUR",
            "total": 59.9,
            "subtotal": 61.11,
            "discounts": 6.11,
            "tax": 9.56,
            "shipping": 4.9,
            "refunded": 19.9,
            "presentment_total": 64.7,
            "presentment_currency": "USD",
            "line_item_count": 2,
            "quantity": 3,
            "line_items": [
                {"line_item_id": "13000000001", "product_id": "8000000007", "category": "Shoes",
                 "title": "Boots", "variant_title": "42", "sku": "BOOT-42", "quantity": 1,
                 "unit_price": 49.9, "total": 44.91},
                {"line_item_id": "13000000002", "title": "Gift wrap", "quantity": 2,
                 "unit_price": 5.605, "total": 10.09}
            ],
            "landing_page": "https://eu-store.example/products/boots?utm_source=google",
            "referrer": "https://www.google.com/",
            "first_visit": {"occurred_at": "2026-02-20T18:00:00Z",
                "landing_page": "https://eu-store.example/products/boots?utm_source=google",
                "referrer": "https://www.google.com/", "source": "google",
                "utm": {"name": "brand_search", "source": "google", "medium": "cpc", "term": "boots"}},
            "last_visit": {"occurred_at": "2026-03-01T09:40:00Z",
                "landing_page": "https://eu-store.example/?utm_source=newsletter",
                "source": "newsletter",
                "utm": {"name": "spring_sale", "source": "newsletter", "medium": "email", "content": "hero"}}
        })
    );
    // the session that led to the order, as Segment's context
    assert_eq!(
        Value::Object(order.context.to_map()),
        json!({
            "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email", "content": "hero"},
            "page": {"url": "https://eu-store.example/?utm_source=newsletter"}
        })
    );

    let refund = &out.events[1];
    assert_eq!(
        refund.event_id,
        "shopify:eu-store.myshopify.com:refund:9000000001"
    );
    assert_eq!(refund.event_type, "refund");
    assert_eq!(refund.occurred_at, at("2026-03-02T08:59:00Z"));
    assert_eq!(keys(refund), keys(order));
    let r = refund.revenue.clone().expect("revenue");
    assert_eq!((r.amount, r.currency.as_str()), (19.9, "EUR"), "positive");
    assert_eq!(
        Value::Object(refund.properties.to_map()),
        json!({"refund_id": "9000000001", "order_id": "5500000001", "order_name": "#1001", "note": "too small"})
    );
    assert_valid(&out.events);
}

#[test]
fn orders_without_identity_and_test_orders_are_skipped_with_a_reason() {
    let n = Normalizer::default();
    let mut pos = documented_order();
    pos["customer"] = Value::Null;
    pos["email"] = Value::Null;
    pos["phone"] = json!("not a phone");
    let out = mapping::map_order(&pos, &ctx(&n));
    assert_eq!(out.skipped, Some(SkipReason::NoIdentifier));
    assert!(out.events.is_empty() && out.rejected.is_empty());

    // a guest order with only a phone is kept
    pos["phone"] = json!("+1 415 555 0123");
    let out = mapping::map_order(&pos, &ctx(&n));
    assert_eq!(keys(&out.events[0]), ["phone:+14155550123"]);

    let mut test = documented_order();
    test["test"] = json!(true);
    assert_eq!(
        mapping::map_order(&test, &ctx(&n)).skipped,
        Some(SkipReason::TestOrder)
    );
    let mut c = ctx(&n);
    c.include_test_orders = true;
    let out = mapping::map_order(&test, &c);
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0].properties.to_map()["test"], true);
}

#[test]
fn malformed_objects_are_rejected_with_id_and_reason() {
    let n = Normalizer::default();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"updatedAt": "2026-01-01T00:00:00Z"}), "?", "no `id`"),
        (
            json!({"id": "gid://shopify/Customer/abc", "updatedAt": "2026-01-01T00:00:00Z"}),
            "gid://shopify/Customer/abc",
            "not a gid",
        ),
        (
            json!({"id": "gid://shopify/Customer/5", "updatedAt": "yesterday"}),
            "gid://shopify/Customer/5",
            "`updatedAt` is not an ISO 8601",
        ),
        (
            json!({"id": "gid://shopify/Customer/5", "updatedAt": "2026-01-01T00:00:00Z", "tags": "vip"}),
            "gid://shopify/Customer/5",
            "`tags`",
        ),
        (
            json!({"id": "gid://shopify/Customer/5", "updatedAt": "2026-01-01T00:00:00Z",
                "amountSpent": {"amount": "lots", "currencyCode": "EUR"}}),
            "gid://shopify/Customer/5",
            "amountSpent.amount",
        ),
        (json!([1, 2]), "?", "not a JSON object"),
    ];
    for (node, id, reason) in cases {
        let r = mapping::map_customer(&node, &ctx(&n)).expect_err("rejected");
        assert_eq!(r.object_id, id, "{node}");
        assert!(r.reason.contains(reason), "{node}: {}", r.reason);
        assert_eq!(r.raw, serde_json::to_vec(&node).expect("raw"));
    }

    let mut bad = documented_order();
    bad["totalPriceSet"] = json!({"shopMoney": {"amount": "1.00", "currencyCode": "euro"}});
    let out = mapping::map_order(&bad, &ctx(&n));
    assert!(out.events.is_empty());
    assert_eq!(out.rejected[0].object_id, "gid://shopify/Order/5500000001");
    assert!(
        out.rejected[0].reason.contains("currencyCode"),
        "{}",
        out.rejected[0].reason
    );

    // a malformed refund is rejected alone; the order and other refunds stay
    let mut o = documented_order();
    o["refunds"] = json!([
        {"id": "gid://shopify/Refund/1", "createdAt": null, "totalRefundedSet": null},
        {"id": "gid://shopify/Refund/2", "createdAt": null, "note": null,
         "totalRefundedSet": {"shopMoney": {"amount": "1.00", "currencyCode": "EUR"}}}
    ]);
    let out = mapping::map_order(&o, &ctx(&n));
    assert_eq!(out.events.len(), 2);
    assert_eq!(
        out.events[1].event_id,
        "shopify:eu-store.myshopify.com:refund:2"
    );
    assert_eq!(
        out.events[1].occurred_at,
        at("2026-03-02T09:00:00Z"),
        "order's updatedAt"
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].object_id, "gid://shopify/Refund/1");
    assert!(out.rejected[0].reason.contains("order 5500000001"));
}

#[test]
fn generated_data_maps_to_valid_events() {
    let data = fake::generate(300, 7);
    let n = Normalizer::default();
    let c = ctx(&n);
    let mut events = Vec::new();
    let mut skipped = 0;
    for node in data.customers() {
        events.push(mapping::map_customer(&node, &c).expect("customer"));
    }
    for node in data.orders() {
        let out = mapping::map_order(&node, &c);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        skipped += usize::from(out.skipped.is_some());
        events.extend(out.events);
    }
    assert!(skipped > 0, "the generator makes POS and test orders");
    assert!(events.iter().any(|e| e.event_type == "refund"));
    assert_valid(&events);
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
}

// ---------------------------------------------------------------- cursor

#[test]
fn cursor_walks_then_moves_the_watermark() {
    let c = StreamCursor {
        updated_at_min: Some(at("2026-01-01T00:00:00Z")),
        ..Default::default()
    };
    let more = PageInfo {
        has_next_page: true,
        end_cursor: Some("abc".into()),
    };
    let now = at("2026-11-20T12:00:00Z");
    let (c1, done) = c.advance(
        Some(at("2026-01-02T00:00:00Z")),
        &more,
        chrono::Duration::zero(),
        now,
    );
    assert!(!done);
    assert_eq!(c1.after.as_deref(), Some("abc"));
    assert_eq!(
        c1.updated_at_min, c.updated_at_min,
        "same walk, same filter"
    );
    assert_eq!(c1.max_updated_at, Some(at("2026-01-02T00:00:00Z")));
    let (c2, done) = c1.advance(
        Some(at("2026-01-01T12:00:00Z")),
        &PageInfo::default(),
        chrono::Duration::seconds(60),
        now,
    );
    assert!(done);
    assert_eq!(
        c2,
        StreamCursor {
            updated_at_min: Some(at("2026-01-01T23:59:00Z")),
            after: None,
            max_updated_at: None,
            synced_at: Some(now),
            bulk: None,
        }
    );
    // an empty walk keeps the watermark
    let (c3, done) = c2.advance(
        None,
        &PageInfo::default(),
        chrono::Duration::seconds(60),
        now,
    );
    assert!(done);
    assert_eq!(c3, c2);
}

// ---------------------------------------------------------------- source

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        max_retry_secs: 30,
        request_timeout_secs: 10,
        ..RuntimeSettings::default()
    }
}

async fn start(data: &FakeData) -> (FakeServer, Source) {
    let server = FakeServer::start(fake::router(data.clone())).await;
    let src =
        Source::new("shop_eu", fake::test_config(&server.base_url), &settings()).expect("source");
    (server, src)
}

fn cursor(page: &Page) -> StreamCursor {
    serde_json::from_value(page.cursor.clone()).expect("cursor")
}

fn ids(events: &[CanonicalEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// Fetches `stream` until caught up; returns the pages.
async fn walk(src: &mut Source, stream: &str, mut c: Value) -> Vec<Page> {
    let mut pages = Vec::new();
    for _ in 0..1000 {
        let page = src.fetch(stream, &c).await.expect("page");
        c = page.cursor.clone();
        let done = page.caught_up;
        pages.push(page);
        if done {
            return pages;
        }
    }
    panic!("never caught up");
}

#[tokio::test]
async fn customers_are_walked_page_by_page_with_the_right_cursor() {
    let data = fake::generate(130, 1);
    let (server, mut src) = start(&data).await;
    let all = data.customers();
    let pages = walk(&mut src, CUSTOMERS, Value::Null).await;
    assert_eq!(pages.len(), 3, "50 + 50 + 30");
    for (i, p) in pages.iter().enumerate() {
        let c = cursor(p);
        let last = &all[(i * 50 + p.objects as usize) - 1];
        let last_updated = mapping::node_updated_at(last).expect("t");
        assert_eq!(p.position, Some(last_updated));
        if i < 2 {
            assert!(!p.caught_up);
            assert_eq!(p.objects, 50);
            assert!(c.after.is_some());
            assert_eq!(c.updated_at_min, None);
            assert_eq!(c.max_updated_at, Some(last_updated));
        } else {
            assert!(p.caught_up);
            assert_eq!(p.objects, 30);
            assert!(c.synced_at.is_some(), "the walk ended: {c:?}");
            assert_eq!(
                c,
                StreamCursor {
                    updated_at_min: Some(last_updated),
                    after: None,
                    max_updated_at: None,
                    synced_at: c.synced_at,
                    bulk: None,
                }
            );
        }
    }
    let got: Vec<String> = pages.iter().flat_map(|p| ids(&p.events)).collect();
    assert_eq!(got.len(), 130);
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 130);
    // requests carried the token header and the documented operation
    let seen = server.controls.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.uri, "/admin/api/2026-10/graphql.json");
        assert!(s
            .headers
            .iter()
            .any(|(k, v)| k == "x-shopify-access-token" && v == fake::FAKE_TOKEN));
    }

    // caught up: the next poll re-reads only the newest timestamp (inclusive
    // filter) and produces the same event ids
    let last = walk(&mut src, CUSTOMERS, pages[2].cursor.clone()).await;
    assert_eq!(last.len(), 1);
    let again = ids(&last[0].events);
    assert!(!again.is_empty() && again.iter().all(|id| got.contains(id)));

    // an update after the sync is picked up as a new version
    let mut changed = all[3].clone();
    changed["updatedAt"] = json!("2026-06-01T00:00:00Z");
    changed["firstName"] = json!("Renamed");
    data.push_customer(changed);
    let next = walk(&mut src, CUSTOMERS, last[0].cursor.clone()).await;
    let new_ids: Vec<String> = next.iter().flat_map(|p| ids(&p.events)).collect();
    assert!(
        new_ids
            .iter()
            .any(|id| id.ends_with(":customer:7100000003:2026-06-01T00:00:00Z")),
        "{new_ids:?}"
    );
}

#[tokio::test]
async fn an_empty_store_is_caught_up_at_once() {
    let data = FakeData::empty();
    let (_server, mut src) = start(&data).await;
    for stream in [CUSTOMERS, ORDERS] {
        let page = src.fetch(stream, &Value::Null).await.expect("page");
        assert!(page.caught_up && page.events.is_empty() && page.objects == 0);
        let c = cursor(&page);
        assert!(c.synced_at.is_some());
        assert_eq!(
            c,
            StreamCursor {
                synced_at: c.synced_at,
                ..StreamCursor::default()
            }
        );
    }
}

#[tokio::test]
async fn orders_are_completed_with_follow_ups_and_skips_are_counted() {
    // 400 orders: some with 23 and 120 line items (> 10 per page), one with 12
    // refunds (> 10 per order)
    let data = fake::generate(400, 3);
    let (_server, mut src) = start(&data).await;
    let pages = walk(&mut src, ORDERS, Value::Null).await;
    let events: Vec<CanonicalEvent> = pages.into_iter().flat_map(|p| p.events).collect();
    assert!(
        data.stats
            .follow_ups
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let n = Normalizer::default();
    let c = ctx(&n);
    let (mut long_checked, mut refunds_checked) = (0, 0);
    for full in data.orders() {
        if mapping::map_order(&full, &c).skipped.is_some() {
            continue;
        }
        let oid = mapping::gid_number(full["id"].as_str().expect("id"), "Order").expect("n");
        let ev = events
            .iter()
            .find(|e| e.event_id == format!("shopify:eu-store.myshopify.com:order:{oid}"))
            .expect("order event");
        let count = full["lineItems"]["nodes"].as_array().map_or(0, Vec::len);
        if count > 10 {
            let p = ev.properties.to_map();
            assert_eq!(p["line_item_count"], count);
            assert_eq!(p["line_items"].as_array().map(Vec::len), Some(count));
            long_checked += 1;
        }
        let refunds = full["refunds"].as_array().expect("refunds");
        if refunds.len() > client::REFUNDS_PER_ORDER as usize {
            for r in refunds {
                let rid = mapping::gid_number(r["id"].as_str().expect("id"), "Refund").expect("n");
                let want = format!("shopify:eu-store.myshopify.com:refund:{rid}");
                assert!(events.iter().any(|e| e.event_id == want), "{want} missing");
            }
            refunds_checked += 1;
        }
    }
    assert!(long_checked >= 5, "{long_checked}");
    assert!(refunds_checked >= 1, "{refunds_checked}");
    let skipped_any = src.skipped().values().sum::<u64>() > 0;
    assert!(skipped_any);
    // exactly what the mapping of the complete data gives
    let expected = data.expected_event_ids(&fake::test_config("http://unused"));
    let expected_orders: BTreeSet<String> = expected
        .into_iter()
        .filter(|id| !id.contains(":customer:"))
        .collect();
    let got: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(got, expected_orders);
    assert!(src.skipped().contains_key(&SkipReason::NoIdentifier));
    assert!(src.skipped().contains_key(&SkipReason::TestOrder));
    assert_valid(&events);
}

#[tokio::test]
async fn a_stored_cursor_resumes_exactly_where_it_stopped() {
    let data = fake::generate(240, 2);
    let expected: BTreeSet<String> = data
        .expected_event_ids(&fake::test_config("http://unused"))
        .into_iter()
        .filter(|id| id.contains(":customer:"))
        .collect();
    let (_server, mut src) = start(&data).await;
    let p1 = src.fetch(CUSTOMERS, &Value::Null).await.expect("p1");
    let p2 = src.fetch(CUSTOMERS, &p1.cursor).await.expect("p2");
    let stored = p2.cursor.clone();
    drop(src);
    // a new process with the stored cursor
    let (_server2, mut src2) = start(&data).await;
    let rest = walk(&mut src2, CUSTOMERS, stored).await;
    let mut all: Vec<String> = ids(&p1.events);
    all.extend(ids(&p2.events));
    for p in &rest {
        all.extend(ids(&p.events));
    }
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "no duplicates");
    assert_eq!(unique, expected, "no gap");
}

#[tokio::test]
async fn since_sets_the_watermark() {
    let data = fake::generate(200, 4);
    let (server, mut src) = start(&data).await;
    let since = at("2026-01-05T01:00:00Z");
    let c = src.initial_cursor(CUSTOMERS, Some(since));
    assert_eq!(
        serde_json::from_value::<StreamCursor>(c.clone()).expect("c"),
        StreamCursor {
            updated_at_min: Some(since),
            ..Default::default()
        }
    );
    let pages = walk(&mut src, CUSTOMERS, c).await;
    let got: Vec<CanonicalEvent> = pages.into_iter().flat_map(|p| p.events).collect();
    let want = data
        .customers()
        .iter()
        .filter(|n| mapping::node_updated_at(n).expect("t") >= since)
        .count();
    assert!(want > 0 && want < 200);
    assert_eq!(got.len(), want);
    assert!(got.iter().all(|e| e.occurred_at >= since));
    drop(server);
}

#[tokio::test]
async fn retry_after_429_is_waited_then_the_page_comes() {
    let data = fake::generate(10, 5);
    let (server, mut src) = start(&data).await;
    server.controls.push_fault(Fault::too_many(1));
    let t = Instant::now();
    let page = src.fetch(CUSTOMERS, &Value::Null).await.expect("page");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(page.events.len(), 10);
    assert_eq!(server.controls.seen().len(), 2);
}

#[tokio::test]
async fn a_503_is_retried() {
    let data = fake::generate(10, 5);
    let (server, mut src) = start(&data).await;
    server.controls.push_fault(Fault::status(503));
    let page = src.fetch(ORDERS, &Value::Null).await.expect("page");
    assert!(!page.events.is_empty());
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 200]);
}

#[tokio::test]
async fn throttled_in_a_200_waits_what_the_cost_says() {
    let data = fake::generate(10, 5);
    let (server, mut src) = start(&data).await;
    // 150 requested, 50 available, 100 restored per second: 1 s
    let body = json!({
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED",
            "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
        "extensions": {"cost": {"requestedQueryCost": 150, "actualQueryCost": null,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 50, "restoreRate": 100.0}}}
    });
    server
        .controls
        .push_fault(Fault::status(200).body(&body.to_string()));
    let t = Instant::now();
    let page = src.fetch(CUSTOMERS, &Value::Null).await.expect("page");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(page.events.len(), 10);
    assert_eq!(server.controls.seen().len(), 2);
}

#[tokio::test]
async fn the_bucket_is_honoured_before_asking() {
    let data = fake::generate(120, 6);
    // a page of 50 customers costs 253 points; the bucket holds 300 and restores
    // 200 per second: the second page must wait ~1 s, or be throttled
    data.set_bucket(Some(Bucket {
        maximum: 300.0,
        restore_rate: 200.0,
    }));
    let (_server, mut src) = start(&data).await;
    let t = Instant::now();
    let pages = walk(&mut src, CUSTOMERS, Value::Null).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(
        data.stats
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the connector waited instead of being throttled"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_throttled_answer_from_the_bucket_is_retried() {
    let data = fake::generate(60, 6);
    data.set_bucket(Some(Bucket {
        maximum: 300.0,
        restore_rate: 300.0,
    }));
    let (server, mut a) = start(&data).await;
    // another client of the same app drains the bucket; `b` cannot know
    let mut b =
        Source::new("shop_eu", fake::test_config(&server.base_url), &settings()).expect("b");
    a.fetch(CUSTOMERS, &Value::Null).await.expect("a");
    let t = Instant::now();
    let page = b
        .fetch(CUSTOMERS, &Value::Null)
        .await
        .expect("b, after waiting");
    assert_eq!(page.events.len(), 50);
    assert!(
        data.stats
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // (253 requested - 47 left) / 300 per second
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn refused_token_stops_with_the_fix() {
    let data = fake::generate(5, 5);
    data.set_token("shpat_other");
    let (server, mut src) = start(&data).await;
    let err = src.fetch(CUSTOMERS, &Value::Null).await.expect_err("401");
    let SourceError::Api(e) = err else {
        panic!("not an API error")
    };
    assert!(e.is_auth());
    assert_eq!(e.status(), Some(401));
    let msg = e.to_string();
    assert!(msg.starts_with("shop_eu:"), "{msg}");
    assert!(msg.contains("connectors.shop_eu.access_token"), "{msg}");
    assert!(
        msg.contains("read_customers") && msg.contains("read_orders"),
        "{msg}"
    );
    assert!(!msg.contains(fake::FAKE_TOKEN), "{msg}");
    assert_eq!(server.controls.seen().len(), 1, "not retried");
}

#[tokio::test]
async fn a_missing_scope_names_it() {
    let data = fake::generate(5, 5);
    data.set_scopes(&["read_customers"]);
    let (_server, mut src) = start(&data).await;
    assert!(src.fetch(CUSTOMERS, &Value::Null).await.is_ok());
    let err = src.fetch(ORDERS, &Value::Null).await.expect_err("denied");
    let SourceError::Api(e) = err else {
        panic!("not an API error")
    };
    assert!(e.is_auth(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("`read_orders`"), "{msg}");
    assert!(msg.contains("connectors.shop_eu.access_token"), "{msg}");
    assert!(msg.contains("Access denied for orders field"), "{msg}");

    data.set_scopes(&["read_orders"]);
    let err = src
        .fetch(CUSTOMERS, &Value::Null)
        .await
        .expect_err("denied");
    let msg = err.to_string();
    assert!(msg.contains("lacks the `read_customers` scope"), "{msg}");
}

#[tokio::test]
async fn a_malformed_object_is_rejected_and_the_page_goes_on() {
    let data = fake::generate(20, 8);
    data.push_customer(
        json!({"id": "gid://shopify/Customer/42", "updatedAt": "2026-01-05T00:03:00Z",
        "defaultEmailAddress": {"emailAddress": 17}}),
    );
    let (_server, mut src) = start(&data).await;
    let page = src.fetch(CUSTOMERS, &Value::Null).await.expect("page");
    assert_eq!(page.objects, 21);
    assert_eq!(page.events.len(), 20);
    assert_eq!(page.rejected.len(), 1);
    assert_eq!(page.rejected[0].object_id, "gid://shopify/Customer/42");
    assert!(
        page.rejected[0].reason.contains("emailAddress"),
        "{}",
        page.rejected[0].reason
    );
}

#[tokio::test]
async fn a_refused_page_cursor_restarts_the_walk() {
    let data = fake::generate(5, 5);
    let (_server, mut src) = start(&data).await;
    let c = StreamCursor {
        updated_at_min: Some(at("2026-01-01T00:00:00Z")),
        after: Some("bm90IGEgY3Vyc29y".into()),
        ..StreamCursor::default()
    };
    match src.fetch(ORDERS, &c.to_value()).await {
        Err(SourceError::CursorInvalid {
            restart_from,
            message,
        }) => {
            assert!(message.contains("shop_eu"), "{message}");
            let r: StreamCursor = serde_json::from_value(restart_from).expect("c");
            assert_eq!(r.after, None);
            assert_eq!(r.updated_at_min, c.updated_at_min);
        }
        other => panic!("expected CursorInvalid, got {other:?}"),
    }
    match src.fetch(ORDERS, &json!({"nonsense": 1})).await {
        Err(SourceError::CursorInvalid { restart_from, .. }) => {
            assert_eq!(restart_from, StreamCursor::default().to_value())
        }
        other => panic!("expected CursorInvalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_over_cost_query_is_a_clear_error() {
    let data = fake::generate(5, 5);
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut cfg = fake::test_config(&server.base_url);
    cfg.page_size = 250; // validate() refuses this; the server must too
    let mut src = Source::new("shop_eu", cfg, &settings()).expect("source");
    let SourceError::Api(e) = src.fetch(CUSTOMERS, &Value::Null).await.expect_err("cost") else {
        panic!("not an API error")
    };
    let msg = e.to_string();
    assert!(msg.contains("MAX_COST_EXCEEDED"), "{msg}");
    assert!(msg.contains("connectors.shop_eu.page_size"), "{msg}");
}

// ---------------------------------------------------------------- config

fn parse(toml_text: &str) -> Result<Config, String> {
    let t: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let c: Config = crate::runtime::config::parse_source_config("connectors.shop_eu", t)?;
    c.validate("connectors.shop_eu")?;
    Ok(c)
}

#[test]
fn config_defaults_and_endpoint() {
    let c = parse("shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_x\"\n").expect("ok");
    assert_eq!(c.api_version, "2026-10");
    assert_eq!(c.page_size, 100);
    assert_eq!(
        c.endpoint(),
        "https://eu-store.myshopify.com/admin/api/2026-10/graphql.json"
    );
    let c = parse("shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_x\"\napi_url = \"http://127.0.0.1:9/\"\n")
        .expect("ok");
    assert_eq!(
        c.endpoint(),
        "http://127.0.0.1:9/admin/api/2026-10/graphql.json"
    );
}

#[test]
fn config_errors_name_the_field() {
    let base = "access_token = \"shpat_secret_value\"\n";
    let cases = [
        ("shop = \"eu-store.myshopify.com\"\nfoo = 1\n", "foo"),
        (
            "shop = \"https://eu-store.myshopify.com\"\n",
            "connectors.shop_eu.shop",
        ),
        ("shop = \"shop.example.com\"\n", "connectors.shop_eu.shop"),
        (
            "shop = \"eu-store.myshopify.com\"\napi_version = \"2026-11\"\n",
            "connectors.shop_eu.api_version",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\napi_version = \"2025-01\"\n",
            "connectors.shop_eu.api_version: `2025-01` is too old",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\napi_url = \"ftp://x\"\n",
            "connectors.shop_eu.api_url",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\npage_size = 0\n",
            "connectors.shop_eu.page_size",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\npage_size = 250\n",
            "connectors.shop_eu.page_size",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\norders_page_size = 50\n",
            "connectors.shop_eu.orders_page_size",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\nline_items_per_order = 251\n",
            "connectors.shop_eu.line_items_per_order",
        ),
        (
            "shop = \"eu-store.myshopify.com\"\noverlap_secs = 100000\n",
            "connectors.shop_eu.overlap_secs",
        ),
    ];
    for (extra, field) in cases {
        let e = parse(&format!("{base}{extra}")).expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
    let e = parse("shop = \"eu-store.myshopify.com\"\n").expect_err("token");
    assert!(e.contains("access_token"), "{e}");
    let e = parse(&format!(
        "{base}shop = \"eu-store.myshopify.com\"\norders_page_size = 50\n"
    ))
    .expect_err("cost");
    assert!(e.contains("orders_page_size <= 8"), "{e}");
}

#[test]
fn secrets_are_not_in_debug() {
    let c = parse("shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_secret_value\"\n")
        .expect("ok");
    let d = format!("{c:?}");
    assert!(!d.contains("shpat_secret_value"), "{d}");
}

#[test]
fn two_stores_are_two_instances() {
    let t: toml::Table = toml::from_str(
        r#"
[shop_eu]
type = "shopify"
shop = "eu-store.myshopify.com"
access_token = "shpat_eu"
[shop_us]
type = "shopify"
shop = "us-store.myshopify.com"
access_token = "shpat_us"
poll_interval_secs = 300
"#,
    )
    .expect("toml");
    let all = crate::registry::parse_instances(&t).expect("parsed");
    assert_eq!(all.len(), 2);
    let shops: Vec<String> = all
        .values()
        .map(|i| match &i.config {
            crate::registry::SourceConfig::Shopify(c) => c.shop.clone(),
            _ => panic!("not shopify"),
        })
        .collect();
    assert_eq!(shops, ["eu-store.myshopify.com", "us-store.myshopify.com"]);
    assert_eq!(all["shop_us"].settings.poll_interval_secs, 300);
    // each has its own event source
    let a = Source::new("shop_eu", fake::test_config("http://x"), &settings()).expect("a");
    let mut cfg = fake::test_config("http://x");
    cfg.shop = "us-store.myshopify.com".into();
    let b = Source::new("shop_us", cfg, &settings()).expect("b");
    assert_ne!(a.source, b.source);
}

#[test]
fn query_costs_fit_with_the_defaults() {
    let c = fake::test_config("http://x");
    assert!(client::customers_query_cost(c.page_size) <= client::MAX_QUERY_COST);
    assert!(
        client::orders_query_cost(c.orders_page_size, c.line_items_per_order)
            <= client::MAX_QUERY_COST
    );
}

/// Found by the `shopify` fuzz target: a customer whose `id` is empty is
/// rejected, and its DLQ message must still validate (the schema wants a
/// non-empty `origin.object_id`; it is named `?`).
#[test]
fn a_customer_with_an_empty_id_goes_to_the_dlq_as_a_valid_message() {
    let n = Normalizer::default();
    let node: Value = serde_json::from_str(
        r#"{"amountSpent":{"amount":"456.50","currencyCode":"EUR"},"createdAt":"2026-01-05T00:00:37Z","defaultAddress":{"city":"Vienna","countryCodeV2":"AT","provinceCode":"9"},"defaultEmailAddress":{"emailAddress":"david.schmidt3@example.com","":{"markgState":"NOT_SUBSCRIBED"},"tingState":"NOT_SUBSCRIBED","phoneNumber":"+16175549999"},"displayName":"David Schmidt","firstName":"David","id":"","tags":["vip"],"updatedAt":"2026-01-05T00:00:37Z","verifiedEmail":true}"#,
    )
    .expect("json");
    let r = mapping::map_customer(&node, &ctx(&n)).expect_err("an empty id is refused");
    assert!(r.reason.contains("gid://shopify/Customer"), "{}", r.reason);
    let msg = serde_json::to_value(r.dlq_message("shop_eu", at("2026-11-20T12:00:00Z")))
        .expect("encodes");
    let dlq: Value = serde_json::from_str(json_schema::DLQ).expect("schema");
    let v = jsonschema::validator_for(&dlq).expect("validator");
    assert!(v.is_valid(&msg), "{msg}");
    assert_eq!(msg["origin"]["object_id"], "?");
}

// ---------------------------------------------------------------- bulk operations

/// A config for bulk reads: `auto` (a first walk is a backfill) and small pages.
fn bulk_config(base_url: &str) -> Config {
    let mut c = fake::test_config(base_url);
    c.bulk = BulkMode::Auto;
    c.bulk_page_size = 40;
    c
}

async fn start_bulk(data: &FakeData) -> (FakeServer, Source) {
    let server = FakeServer::start(fake::router(data.clone())).await;
    let src = Source::new("shop_eu", bulk_config(&server.base_url), &settings()).expect("source");
    (server, src)
}

/// Every event of the pages, by id, without `received_at` (the time of the fetch).
fn by_id(pages: &[Page]) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for ev in pages.iter().flat_map(|p| &p.events) {
        let mut v = serde_json::to_value(ev).expect("json");
        if let Some(o) = v.as_object_mut() {
            o.remove("received_at");
        }
        assert!(
            out.insert(ev.event_id.clone(), v).is_none(),
            "{} twice",
            ev.event_id
        );
    }
    out
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

fn bulk_cursor(page: &Page) -> Option<super::bulk::BulkCursor> {
    cursor(page).bulk
}

/// The event ids one clean sync of `stream` gives.
fn expected_of(data: &FakeData, stream: &str) -> BTreeSet<String> {
    let customer = |id: &String| id.contains(":customer:");
    data.expected_event_ids(&fake::test_config("http://unused"))
        .into_iter()
        .filter(|id| customer(id) == (stream == CUSTOMERS))
        .collect()
}

#[tokio::test]
async fn a_bulk_backfill_gives_the_same_events_as_the_paged_walk() {
    // orders with 23 and 120 line items and with 12 refunds: what the paged walk
    // completes with follow-ups comes in one piece from the bulk result
    let data = fake::generate(400, 3);
    let (_paged_server, mut paged) = start(&data).await;
    let (_server, mut bulk) = start_bulk(&data).await;
    for stream in [CUSTOMERS, ORDERS] {
        let want = walk(&mut paged, stream, Value::Null).await;
        let follow_ups = count(&data.stats.follow_ups);
        let got = walk(&mut bulk, stream, Value::Null).await;
        assert_eq!(count(&data.stats.follow_ups), follow_ups, "no follow-ups");
        // the first page starts the operation and carries its id
        assert_eq!(got[0].objects, 0);
        let b = bulk_cursor(&got[0]).expect("operation id stored first");
        assert!(b.id.starts_with("gid://shopify/BulkOperation/"), "{b:?}");
        assert_eq!((b.offset, b.lines), (0, 0));
        for p in &got[1..got.len() - 1] {
            assert!(p.objects <= 40 && p.objects > 0, "{}", p.objects);
            let c = bulk_cursor(p).expect("walk in progress");
            assert_eq!(c.id, b.id);
            assert!(c.offset > 0 && c.lines >= p.objects);
            assert!(!p.caught_up);
            assert_eq!(p.total, Some(400), "rootObjectCount");
        }
        let last = got.last().expect("pages");
        assert!(last.caught_up);
        assert_eq!(
            got.iter().map(|p| p.objects).sum::<u64>(),
            400,
            "every object once"
        );
        assert_eq!(by_id(&got), by_id(&want), "{stream}: same events");
        assert!(got.iter().all(|p| p.rejected.is_empty()));
        // the walk's end: the same watermark as the paged walk
        let (c, w) = (cursor(last), cursor(want.last().expect("pages")));
        assert_eq!(c.bulk, None);
        assert_eq!(c.updated_at_min, w.updated_at_min);
        assert!(c.synced_at.is_some());
    }
    assert_eq!(count(&data.stats.bulk_runs), 2);
    assert_eq!(bulk.skipped(), paged.skipped(), "same orders skipped");
}

#[tokio::test]
async fn the_incremental_walk_after_a_bulk_backfill_is_paged() {
    let data = fake::generate(120, 4);
    let (server, mut src) = start_bulk(&data).await;
    let backfill = walk(&mut src, CUSTOMERS, Value::Null).await;
    let stored = backfill.last().expect("pages").cursor.clone();
    assert_eq!(count(&data.stats.bulk_runs), 1);
    let mut changed = data.customers()[5].clone();
    changed["updatedAt"] = json!("2026-06-01T00:00:00Z");
    data.push_customer(changed);
    let queries = server.controls.seen().len();
    let next = walk(&mut src, CUSTOMERS, stored).await;
    assert_eq!(count(&data.stats.bulk_runs), 1, "no second bulk operation");
    assert_eq!(next.len(), 1, "one page");
    assert_eq!(server.controls.seen().len(), queries + 1, "one paged query");
    assert!(next[0].events.iter().any(|e| e
        .event_id
        .ends_with(":customer:7100000005:2026-06-01T00:00:00Z")));

    // a stream last synced longer ago than bulk_threshold_secs is read in bulk
    let mut old = cursor(&next[0]);
    old.synced_at = Some(Utc::now() - chrono::Duration::days(3));
    let again = walk(&mut src, CUSTOMERS, old.to_value()).await;
    assert_eq!(count(&data.stats.bulk_runs), 2);
    assert!(again.last().expect("pages").caught_up);
}

#[tokio::test]
async fn a_bulk_walk_killed_mid_way_resumes_at_the_stored_cursor() {
    let data = fake::generate(300, 2);
    let (server, mut src) = start_bulk(&data).await;
    // a first process: the operation and three pages, then it dies
    let mut first = Vec::new();
    let mut c = Value::Null;
    for _ in 0..4 {
        let p = src.fetch(ORDERS, &c).await.expect("page");
        c = p.cursor.clone();
        first.push(p);
    }
    let stored = bulk_cursor(&first[3]).expect("mid-walk");
    assert!(stored.offset > 0, "{stored:?}");
    drop(src);
    // a new process with the stored cursor: same operation, resumed with a Range
    let mut src2 =
        Source::new("shop_eu", bulk_config(&server.base_url), &settings()).expect("source");
    let rest = walk(&mut src2, ORDERS, c).await;
    assert_eq!(count(&data.stats.bulk_runs), 1, "the operation was resumed");
    let ranged: Vec<_> = server
        .controls
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/bulk-results/"))
        .collect();
    assert_eq!(ranged.len(), 2);
    assert!(ranged[1]
        .headers
        .iter()
        .any(|(k, v)| k == "range" && *v == format!("bytes={}-", stored.offset)));
    assert_eq!(ranged[1].status, 206);
    let mut all = Vec::new();
    for p in first.iter().chain(&rest) {
        all.extend(ids(&p.events));
    }
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "nothing emitted twice");
    assert_eq!(unique, expected_of(&data, ORDERS), "no gap");
}

#[tokio::test]
async fn a_restart_after_the_result_expired_starts_a_new_operation() {
    let data = fake::generate(200, 6);
    let (server, mut src) = start_bulk(&data).await;
    let p0 = src.fetch(CUSTOMERS, &Value::Null).await.expect("start");
    let p1 = src.fetch(CUSTOMERS, &p0.cursor).await.expect("page 1");
    drop(src);
    data.expire_bulk_results();
    let mut src2 =
        Source::new("shop_eu", bulk_config(&server.base_url), &settings()).expect("source");
    let rest = walk(&mut src2, CUSTOMERS, p1.cursor.clone()).await;
    assert_eq!(count(&data.stats.bulk_runs), 2, "a new operation");
    assert_eq!(rest[0].objects, 0, "it starts with the new operation's id");
    let got: BTreeSet<String> = rest.iter().flat_map(|p| ids(&p.events)).collect();
    assert_eq!(got.len(), 200, "the new operation reads everything again");
    assert!(
        ids(&p1.events).iter().all(|id| got.contains(id)),
        "replays keep their ids"
    );
}

#[tokio::test]
async fn a_failed_operation_falls_back_to_pages() {
    let data = fake::generate(150, 7);
    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        fail_with: Some("TIMEOUT".into()),
        ..Default::default()
    });
    let (_server, mut src) = start_bulk(&data).await;
    let pages = walk(&mut src, ORDERS, Value::Null).await;
    let got: BTreeSet<String> = pages.iter().flat_map(|p| ids(&p.events)).collect();
    assert_eq!(got, expected_of(&data, ORDERS));
    assert_eq!(count(&data.stats.bulk_runs), 1);
    assert!(
        count(&data.stats.follow_ups) > 0,
        "read with the paged queries"
    );
    // the next walk may try bulk again (the fallback held for one walk)
    let c = cursor(pages.last().expect("pages"));
    assert!(c.bulk.is_none() && c.synced_at.is_some());
}

#[tokio::test]
async fn an_operation_denied_for_a_missing_scope_stops_with_the_fix() {
    let data = fake::generate(20, 7);
    data.set_scopes(&["read_customers"]);
    let (_server, mut src) = start_bulk(&data).await;
    let start = src.fetch(ORDERS, &Value::Null).await.expect("started");
    let err = src.fetch(ORDERS, &start.cursor).await.expect_err("denied");
    let SourceError::Api(e) = err else {
        panic!("not an API error")
    };
    assert!(e.is_auth(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("`read_orders`") && msg.contains("connectors.shop_eu.access_token"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_refused_bulk_query_is_read_paged_or_reported() {
    let data = fake::generate(30, 8);
    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        refuse: Some((
            "OPERATION_IN_PROGRESS".into(),
            "A bulk query operation for this app and shop is already in progress".into(),
        )),
        ..Default::default()
    });
    let (server, mut src) = start_bulk(&data).await;
    let pages = walk(&mut src, CUSTOMERS, Value::Null).await;
    assert_eq!(
        pages.iter().map(|p| p.events.len()).sum::<usize>(),
        30,
        "auto: paged"
    );
    let mut cfg = bulk_config(&server.base_url);
    cfg.bulk = BulkMode::Always;
    let mut always = Source::new("shop_eu", cfg, &settings()).expect("source");
    let err = always
        .fetch(CUSTOMERS, &Value::Null)
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("OPERATION_IN_PROGRESS") && msg.contains("next poll"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_download_503_then_429_with_retry_after_is_retried() {
    let data = fake::generate(60, 9);
    let (server, mut src) = start_bulk(&data).await;
    server
        .controls
        .push_fault(Fault::status(503).on_path("/bulk-results/"));
    server
        .controls
        .push_fault(Fault::too_many(1).on_path("/bulk-results/"));
    let t = Instant::now();
    let pages = walk(&mut src, CUSTOMERS, Value::Null).await;
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(pages.iter().map(|p| p.events.len()).sum::<usize>(), 60);
    let downloads: Vec<u16> = server
        .controls
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/bulk-results/"))
        .map(|s| s.status)
        .collect();
    assert_eq!(downloads, [503, 429, 200]);
    // the result link is a storage URL: the token is never sent there
    assert!(server
        .controls
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/bulk-results/"))
        .all(|s| !s.headers.iter().any(|(k, _)| k == "x-shopify-access-token")));
}

#[tokio::test]
async fn a_truncated_download_is_read_again_from_the_cursor() {
    let data = fake::generate(300, 10);
    // a few pages of 40 orders in
    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        truncate_next_at: Some(300_000),
        ..Default::default()
    });
    let (server, mut src) = start_bulk(&data).await;
    let mut c = Value::Null;
    let mut all = Vec::new();
    let mut failures = 0;
    loop {
        match src.fetch(ORDERS, &c).await {
            Ok(p) => {
                c = p.cursor.clone();
                all.extend(ids(&p.events));
                if p.caught_up {
                    break;
                }
            }
            Err(e) => {
                // the runtime stores nothing for a failed fetch and asks again
                assert!(e.to_string().contains("truncated"), "{e}");
                failures += 1;
                assert!(failures < 3);
            }
        }
    }
    assert_eq!(failures, 0, "opened again at the page's start");
    assert_eq!(count(&data.stats.bulk_runs), 1);
    let ranged = server
        .controls
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/bulk-results/"))
        .filter(|s| s.headers.iter().any(|(k, _)| k == "range"))
        .count();
    assert_eq!(ranged, 1);
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(unique, expected_of(&data, ORDERS));
}

#[tokio::test]
async fn a_malformed_line_is_rejected_with_its_id_and_the_rest_goes_on() {
    let data = fake::generate(50, 12);
    // line 3: the third customer
    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        malformed_line: Some(3),
        ..Default::default()
    });
    let (_server, mut src) = start_bulk(&data).await;
    let pages = walk(&mut src, CUSTOMERS, Value::Null).await;
    let rejected: Vec<_> = pages.iter().flat_map(|p| &p.rejected).collect();
    assert_eq!(rejected.len(), 1);
    let bad_id = data.customers()[2]["id"].as_str().expect("id").to_string();
    assert_eq!(rejected[0].object_id, bad_id);
    assert!(
        rejected[0]
            .reason
            .contains("line 3 of bulk operation gid://shopify/BulkOperation/")
            && rejected[0].reason.contains("not JSON"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(pages.iter().map(|p| p.events.len()).sum::<usize>(), 49);
    assert!(pages.last().expect("pages").caught_up);
}

#[tokio::test]
async fn older_api_versions_poll_with_node_and_run_one_operation_at_a_time() {
    let data = fake::generate(30, 13);
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut cfg = bulk_config(&server.base_url);
    cfg.api_version = "2025-10".into();
    let mut a = Source::new("shop_eu", cfg.clone(), &settings()).expect("a");
    let started = a.fetch(CUSTOMERS, &Value::Null).await.expect("started");
    // another process of the same app cannot start a second one: it reads paged
    let mut b = Source::new("shop_eu", cfg, &settings()).expect("b");
    let paged = walk(&mut b, ORDERS, Value::Null).await;
    assert_eq!(count(&data.stats.bulk_runs), 2);
    assert!(count(&data.stats.follow_ups) > 0 || paged.len() > 1);
    let rest = walk(&mut a, CUSTOMERS, started.cursor).await;
    assert_eq!(rest.iter().map(|p| p.events.len()).sum::<usize>(), 30);
}

#[test]
fn cursors_of_earlier_versions_are_read() {
    let old = json!({"updated_at_min": "2026-03-01T10:00:00Z", "after": "eyJsYXN0X2lk", "max_updated_at": null});
    let c: StreamCursor = serde_json::from_value(old).expect("old cursor");
    assert_eq!(c.after.as_deref(), Some("eyJsYXN0X2lk"));
    assert_eq!((c.synced_at, c.bulk), (None, None));
    // and a paged cursor is written as before
    let c = StreamCursor {
        updated_at_min: Some(at("2026-03-01T10:00:00Z")),
        ..StreamCursor::default()
    };
    assert_eq!(
        c.to_value(),
        json!({"updated_at_min": "2026-03-01T10:00:00Z", "after": null, "max_updated_at": null})
    );
}

#[test]
fn bulk_config_keys() {
    let c = parse("shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_x\"\n").expect("ok");
    assert_eq!(c.bulk, BulkMode::Auto);
    assert_eq!((c.bulk_threshold_secs, c.bulk_page_size), (86_400, 250));
    let c = parse("shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_x\"\nbulk = \"never\"\nbulk_page_size = 1000\n")
        .expect("ok");
    assert_eq!((c.bulk, c.bulk_page_size), (BulkMode::Never, 1000));
    for (extra, field) in [
        ("bulk = \"sometimes\"\n", "bulk"),
        ("bulk_page_size = 0\n", "connectors.shop_eu.bulk_page_size"),
    ] {
        let e = parse(&format!(
            "shop = \"eu-store.myshopify.com\"\naccess_token = \"shpat_x\"\n{extra}"
        ))
        .expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
}

/// The real run loop and Kafka: a bulk backfill stopped once some of its pages
/// were acknowledged and their cursor stored resumes the same operation at the
/// stored position; Kafka then holds every expected event id and no other.
#[tokio::test]
async fn a_bulk_backfill_stopped_mid_way_resumes_through_kafka_without_gap() {
    use crate::runtime::{run_source, RunOptions};
    let k = crate::runtime::tests::kafka().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fake::generate(600, 14);
    let slow = fake::BulkOptions {
        polls_until_done: 1,
        block_delay: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    data.set_bulk(slow);
    let server = FakeServer::start(fake::router(data.clone())).await;
    let cfg = bulk_config(&server.base_url);
    let expected = data.expected_event_ids(&cfg);
    let run_opts = RunOptions {
        instance: "shop_eu".into(),
        settings: RuntimeSettings {
            state_dir: dir.path().display().to_string(),
            poll_interval_secs: 1,
            ..settings()
        },
        since: None,
        once: true,
        kafka: k.clone(),
        suppression: None,
    };
    let state = dir.path().join("shop_eu.cursors.json");
    let stored = |stream: &str| -> Value {
        std::fs::read(&state)
            .ok()
            .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
            .map(|v| v["streams"][stream]["cursor"].clone())
            .unwrap_or(Value::Null)
    };
    let mid_walk = || async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if stored(CUSTOMERS)["bulk"]["offset"].as_u64().unwrap_or(0) > 0 {
                return;
            }
        }
    };
    let src = Source::new("shop_eu", cfg.clone(), &settings()).expect("source");
    let first = run_source(src, run_opts.clone(), mid_walk())
        .await
        .expect("first run");
    let at_stop: StreamCursor = serde_json::from_value(stored(CUSTOMERS)).expect("cursor");
    let b = at_stop.bulk.clone().expect("stopped mid bulk walk");
    assert!(first.events > 0 && first.events < 600, "{first:?}");

    data.set_bulk(fake::BulkOptions {
        polls_until_done: 1,
        ..Default::default()
    });
    let src = Source::new("shop_eu", cfg, &settings()).expect("source");
    let second = run_source(src, run_opts, std::future::pending())
        .await
        .expect("second run");
    // one operation per stream: the customers' one was resumed, not restarted
    assert_eq!(count(&data.stats.bulk_runs), 2);
    let resumed = server.controls.seen().into_iter().any(|s| {
        s.uri.starts_with("/bulk-results/")
            && s.headers
                .iter()
                .any(|(k, v)| k == "range" && *v == format!("bytes={}-", b.offset))
    });
    assert!(resumed, "the result was resumed at byte {}", b.offset);
    let c: StreamCursor = serde_json::from_value(stored(CUSTOMERS)).expect("cursor");
    assert!(c.bulk.is_none() && c.synced_at.is_some(), "{c:?}");

    let payloads = crate::runtime::tests::read_topic(&k.topics.events, expected.len());
    let got: Vec<String> = payloads
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(p).expect("event")["event_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected, "no gap, and only the expected ids");
    // replays: what was produced but not yet stored when the first run stopped
    // (acknowledged pages, and pages in flight that the stop abandoned)
    let replayed = got.len() - unique.len();
    assert!(got.len() as u64 >= first.events + second.events);
    assert!(replayed < 600, "{replayed} {first:?} {second:?}");
}
