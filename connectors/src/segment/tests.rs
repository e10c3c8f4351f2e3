//! Mapping tests: Segment messages → canonical events that validate against the
//! canonical JSON Schema.

use chrono::{DateTime, Utc};
use serde_json::json;
use socialcrm_schemas::json_schema;
use socialcrm_schemas::Normalizer;

use super::mapping::{map_message, Envelope};

fn env(n: &Normalizer) -> Envelope<'_> {
    Envelope {
        source: "web",
        received_at: "2026-11-20T12:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("date"),
        sent_at: None,
        context: None,
        normalizer: n,
        ip: Default::default(),
    }
}

fn schema() -> jsonschema::Validator {
    let s: serde_json::Value =
        serde_json::from_str(json_schema::CANONICAL_EVENT).expect("schema json");
    jsonschema::validator_for(&s).expect("schema")
}

#[test]
fn identify_maps_traits_to_identifiers_and_validates() {
    let n = Normalizer::new(Some("US")).expect("region");
    let msg = json!({"type": "identify", "messageId": "m1", "userId": "u-1", "anonymousId": "a-1",
        "traits": {"email": " Ann@Example.COM", "phone": "(415) 555-0123", "name": "Ann"},
        "timestamp": "2026-11-19T10:00:00Z"});
    let ev = map_message(&msg, None, &env(&n)).expect("mapped");
    assert_eq!(ev.event_id, "web:m1");
    let keys: Vec<String> = ev.identifiers.iter().map(|i| i.key()).collect();
    assert_eq!(
        keys,
        [
            "user_id:u-1",
            "anonymous_id:a-1",
            "email:ann@example.com",
            "phone:+14155550123"
        ]
    );
    let v = serde_json::to_value(&ev).expect("json");
    assert!(schema().is_valid(&v), "{v}");
}

#[test]
fn order_completed_becomes_order_with_revenue() {
    let n = Normalizer::default();
    let msg = json!({"type": "track", "event": "Order Completed", "messageId": "o1", "userId": "u-1",
        "properties": {"total": "42.50", "currency": "eur", "products": [{"sku": "A"}]},
        "context": {"traits": {"email": "ann@example.com"}}});
    let ev = map_message(&msg, None, &env(&n)).expect("mapped");
    assert_eq!(ev.event_type, "order");
    assert_eq!(ev.name.as_deref(), Some("Order Completed"));
    let r = ev.revenue.clone().expect("revenue");
    assert_eq!((r.amount, r.currency.as_str()), (42.5, "EUR"));
    assert!(ev
        .identifiers
        .iter()
        .any(|i| i.key() == "email:ann@example.com"));
    assert!(schema().is_valid(&serde_json::to_value(&ev).expect("json")));
}

#[test]
fn clock_skew_is_corrected_with_sent_at() {
    let n = Normalizer::default();
    let msg = json!({"type": "page", "anonymousId": "a", "messageId": "p",
        "originalTimestamp": "2026-11-20T11:00:00Z", "sentAt": "2026-11-20T11:00:10Z"});
    let ev = map_message(&msg, Some("page"), &env(&n)).expect("mapped");
    // device clock says it was sent 10 s after it happened: occurred 10 s before receipt
    assert_eq!(ev.occurred_at.to_rfc3339(), "2026-11-20T11:59:50+00:00");
}

#[test]
fn missing_message_id_gives_a_stable_id() {
    let n = Normalizer::default();
    let msg = json!({"type": "track", "event": "Clicked", "anonymousId": "a"});
    let a = map_message(&msg, None, &env(&n)).expect("mapped");
    let b = map_message(&msg, None, &env(&n)).expect("mapped");
    assert_eq!(a.event_id, b.event_id);
    assert!(a.event_id.starts_with("web:h-"));
}

#[test]
fn bad_messages_are_refused_with_a_reason() {
    let n = Normalizer::default();
    let cases = [
        (
            json!({"type": "track", "event": "X"}),
            "no usable identifier",
        ),
        (
            json!({"type": "track", "event": "X", "userId": "undefined"}),
            "no usable identifier",
        ),
        (
            json!({"type": "track", "anonymousId": "a"}),
            "requires a non-empty `event`",
        ),
        (
            json!({"type": "track", "event": "X", "userId": {"a": 1}}),
            "`userId` must be a string",
        ),
        (
            json!({"type": "track", "event": "X", "userId": "u", "timestamp": "yesterday"}),
            "RFC 3339",
        ),
        (json!({"type": "fly", "userId": "u"}), "unknown `type`"),
        (json!({"event": "X", "userId": "u"}), "`type` is required"),
        (json!({"type": "alias", "userId": "u"}), "previousId"),
        (
            json!({"type": "identify", "userId": "u", "traits": {"email": 5}}),
            "`traits.email` must be a string",
        ),
        (json!("just a string"), "JSON object"),
    ];
    for (msg, want) in cases {
        let e = map_message(&msg, None, &env(&n)).expect_err("must fail");
        assert!(e.0.contains(want), "{msg} -> {e}");
    }
}

#[test]
fn endpoints_and_their_aliases() {
    use super::server::endpoint;
    assert_eq!(endpoint("t"), Some("track"));
    assert_eq!(endpoint("import"), Some("batch"));
    assert_eq!(endpoint("batch"), Some("batch"));
    assert_eq!(endpoint("alias"), Some("alias"));
    assert_eq!(endpoint("nope"), None);
    assert_eq!(endpoint(""), None);
}

#[test]
fn a_request_is_read_and_mapped_whole_or_refused_whole() {
    use super::server::{map_request, read_body};
    use super::CollectorConfig;
    let cfg = CollectorConfig::default();
    let n = Normalizer::default();
    let at = env(&n).received_at;

    for (body, reason) in [
        (&b"{\"a\":"[..], "not valid JSON"),
        (&b"\xff{}"[..], "not valid UTF-8"),
        (&b"[1]"[..], "JSON object"),
    ] {
        let r = read_body(&cfg, body).expect_err("refused");
        assert_eq!(r.status, 400);
        assert!(
            r.body["error"].as_str().unwrap_or("").contains(reason),
            "{}",
            r.body
        );
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = read_body(&cfg, format!("{{\"a\":{deep}}}").as_bytes()).expect_err("too deep");
    assert!(
        r.body["error"].as_str().unwrap_or("").contains("recursion"),
        "{}",
        r.body
    );

    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "A", "messageId": "m1"},
        {"type": "track", "event": "B", "messageId": "m2"},
    ]});
    let r = map_request(&cfg, &n, "batch", &batch, 100, at).expect_err("one bad message");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["index"], 1, "{}", r.body);

    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "A", "messageId": "m1"},
        {"type": "identify", "anonymousId": "a1", "traits": {"email": "Ann@Example.com"}},
    ]});
    let events = map_request(&cfg, &n, "batch", &batch, 100, at).expect("accepted");
    assert_eq!(events.len(), 2);
    // what the collector accepts, the pipeline accepts
    for e in &events {
        socialcrm_schemas::CanonicalEvent::parse_and_validate(&e.payload, &n, at)
            .expect("pipeline accepts it");
    }
    let single = json!({"userId": "u1", "event": "A"});
    assert_eq!(
        map_request(&cfg, &n, "track", &single, 40, at)
            .expect("ok")
            .len(),
        1
    );
    let r = map_request(&cfg, &n, "track", &single, cfg.max_event_bytes + 1, at)
        .expect_err("too large");
    assert!(
        r.body["error"].as_str().unwrap_or("").contains("limit"),
        "{}",
        r.body
    );
}

#[test]
fn context_ip_follows_the_privacy_policy_before_kafka() {
    use socialcrm_schemas::privacy::IpPolicy;
    let n = Normalizer::new(None).expect("normalizer");
    let msg = json!({"type": "track", "event": "A", "userId": "u-1", "messageId": "m1",
        "context": {"ip": "203.0.113.77", "locale": "de-DE"}});
    let batch_ctx = json!({"ip": "2001:db8:85a3:8d3:1319:8a2e:370:7348"});
    let ip_of = |policy: IpPolicy, msg: &serde_json::Value, batch: bool| {
        let mut e = env(&n);
        e.ip = policy;
        if batch {
            e.context = batch_ctx.as_object();
        }
        let ev = map_message(msg, None, &e).expect("mapped");
        let ctx = ev.context.to_map();
        assert_eq!(
            ctx.get("locale")
                .and_then(|v| v.as_str())
                .unwrap_or("de-DE"),
            "de-DE"
        );
        ctx.get("ip").cloned()
    };
    assert_eq!(
        ip_of(IpPolicy::Truncate, &msg, false),
        Some(json!("203.0.113.0"))
    );
    assert_eq!(ip_of(IpPolicy::Drop, &msg, false), None);
    assert_eq!(
        ip_of(IpPolicy::Keep, &msg, false),
        Some(json!("203.0.113.77"))
    );
    // an address from the batch's context is treated the same way
    let bare = json!({"type": "track", "event": "A", "userId": "u-1", "messageId": "m2"});
    assert_eq!(
        ip_of(IpPolicy::Truncate, &bare, true),
        Some(json!("2001:db8:85a3::"))
    );
    assert_eq!(ip_of(IpPolicy::Drop, &bare, true), None);
}
