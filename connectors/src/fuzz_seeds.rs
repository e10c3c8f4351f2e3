//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`) from the
//! fixtures the tests use: the fake providers' generated data (with their
//! malformed objects), the bundled Segment sample, and events the mappings make
//! of them. Deterministic (fixed generator seeds and clock). Run when fixtures
//! change:
//!
//! ```sh
//! cargo test -p socialcrm-connectors --lib fuzz_seeds -- --ignored
//! ```
//!
//! Each seed starts as its fuzz target reads it: a selector byte first where the
//! target takes one (`fuzz/fuzz_targets/*.rs`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{CanonicalEvent, IdType, Normalizer};

use crate::segment::mapping::{map_message, Envelope};

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&d).expect("create the seed directory");
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).expect("write a seed");
}

fn with_selector(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(body);
    v
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default()
}

fn events_json(events: &[CanonicalEvent], target: &str, prefix: &str) {
    for (i, ev) in events.iter().enumerate() {
        let bytes = serde_json::to_vec(ev).expect("an event encodes");
        write(target, &format!("{prefix}-{i}.json"), &bytes);
    }
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand when fixtures change"]
fn fuzz_seeds() {
    let n = Normalizer::new(Some("US")).expect("region");

    // the collector: sample Segment messages, one per endpoint, and a batch
    let sample = include_str!("../../deploy/sample/web-events.jsonl");
    let messages: Vec<Value> = sample
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let env = Envelope {
        source: "web",
        received_at: at(),
        sent_at: None,
        context: None,
        normalizer: &n,
        ip: Default::default(),
    };
    let mut web_events = Vec::new();
    for m in &messages {
        let kind = m["type"].as_str().unwrap_or("track").to_string();
        if let Ok(ev) = map_message(m, None, &env) {
            if web_events.len() < 12 {
                web_events.push(ev);
            }
        }
        if seen.insert(kind.clone()) {
            let sel = kind.as_bytes()[0];
            write(
                "segment_request",
                &format!("{kind}.json"),
                &with_selector(sel, m.to_string().as_bytes()),
            );
        }
    }
    let batch = json!({"batch": messages.iter().take(4).collect::<Vec<_>>(),
        "context": {"library": {"name": "analytics-node"}}, "sentAt": "2026-11-20T12:00:00Z"});
    write(
        "segment_request",
        "batch.json",
        &with_selector(b'b', batch.to_string().as_bytes()),
    );
    let order = json!({"userId": "u-1", "event": "Order Completed", "messageId": "o-1",
        "properties": {"revenue": 12.5, "currency": "EUR", "order_id": "1001"},
        "context": {"traits": {"email": "Ann@Example.com", "phone": "(415) 555-0123"},
            "device": {"id": "dev-1"}}});
    write(
        "segment_request",
        "order.json",
        &with_selector(b't', order.to_string().as_bytes()),
    );
    write(
        "segment_request",
        "alias.json",
        &with_selector(
            b'a',
            br#"{"previousId":"anon-1","userId":"u-1","timestamp":"2026-11-20T11:00:00+01:00"}"#,
        ),
    );

    // the pipeline's parse: events the collector and the connectors make
    events_json(&web_events, "canonical_event", "web");

    // identifiers, one or more per type (selector: type index, high bit = region)
    let values: &[(IdType, &str)] = &[
        (IdType::UserId, " u-1 "),
        (IdType::Email, "mailto:Ann.Lee+crm@Example.COM"),
        (IdType::Phone, "+1 (415) 555-0123"),
        (IdType::Phone, "(415) 555-0123"),
        (IdType::Phone, "0049 30 901820"),
        // the input of RUSTSEC-2024-0369 (phonenumber panicked on it before 0.3.6)
        (IdType::Phone, "+dwPAA;phone-context=AA"),
        (
            IdType::Shopify,
            "https://EU-Store.myshopify.com/gid://shopify/Customer/55/",
        ),
        (IdType::Woocommerce, "shop.example.com/0012"),
        (IdType::X, "+000123"),
        (IdType::Mastodon, "@Ann@Mastodon.Social"),
        (IdType::Telegram, "777000"),
        (IdType::Bluesky, "did:plc:ABCdef"),
        (IdType::Reddit, "/u/Some_User"),
        (IdType::DeviceId, "DEV-1"),
        (IdType::AnonymousId, "00000000-0000-0000-0000-000000000000"),
    ];
    for (i, (t, v)) in values.iter().enumerate() {
        let idx = IdType::ALL.iter().position(|x| x == t).unwrap_or(0) as u8;
        let sel = if *t == IdType::Phone { idx | 0x80 } else { idx };
        write(
            "normalize",
            &format!("{i:02}-{t}"),
            &with_selector(sel, v.as_bytes()),
        );
    }

    // Mastodon: pages of notifications
    let data = crate::mastodon::fake::generate(12, 7);
    let notes = data.notifications();
    for (i, page) in notes.chunks(2).enumerate() {
        write(
            "mastodon",
            &format!("page-{i}.json"),
            Value::Array(page.to_vec()).to_string().as_bytes(),
        );
    }
    let types = crate::mastodon::config::SUPPORTED_TYPES.map(String::from);
    let events: Vec<CanonicalEvent> = data.expected(&types).events.into_iter().take(4).collect();
    events_json(&events, "canonical_event", "mastodon");

    // X: whole timeline answers
    for seed in [1, 2, 3] {
        let data = crate::x::fake::generate(4, seed);
        write("x", &format!("answer-{seed}.json"), &data.full_response());
        events_json(
            &data.expected(at()).events,
            "canonical_event",
            &format!("x{seed}"),
        );
    }

    // Telegram: updates, the malformed ones included
    let mut tg = crate::telegram::fake::FakeData::generate(16, 5);
    tg.add_malformed(4);
    for (i, u) in tg.values().iter().enumerate() {
        let sel = (i % 3) as u8 | 0x80;
        write(
            "telegram",
            &format!("update-{i:02}.json"),
            &with_selector(sel, u.to_string().as_bytes()),
        );
    }

    // Shopify: customers (selector even) and orders (odd), test orders kept
    let shop = crate::shopify::fake::generate(6, 3);
    for (i, c) in shop.customers().iter().take(6).enumerate() {
        write(
            "shopify",
            &format!("customer-{i}.json"),
            &with_selector(0x80, c.to_string().as_bytes()),
        );
    }
    for (i, o) in shop.orders().iter().take(8).enumerate() {
        write(
            "shopify",
            &format!("order-{i}.json"),
            &with_selector(0x81, o.to_string().as_bytes()),
        );
    }

    // WooCommerce: customers (even) and orders (odd), malformed ones included
    let mut wc = crate::woocommerce::fake::FakeData::generate(6, 3);
    wc.add_malformed_orders(4);
    wc.add_malformed_customers(2);
    for (i, c) in wc.customers.iter().take(8).enumerate() {
        write(
            "woocommerce",
            &format!("customer-{i}.json"),
            &with_selector(0, c.to_string().as_bytes()),
        );
    }
    for (i, o) in wc.orders.iter().rev().take(10).enumerate() {
        write(
            "woocommerce",
            &format!("order-{i}.json"),
            &with_selector(1, o.to_string().as_bytes()),
        );
    }
}
