//! Bad input: the collector answers clearly and accepts nothing it cannot keep;
//! invalid events that reach Kafka land in the DLQ with a reason and origin, and
//! the pipeline keeps going.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_schemas::json_schema;

fn post_raw(w: &World, path: &str, auth: Option<String>, body: &[u8]) -> http::Resp {
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http::request("POST", &w.collector_url(path), &headers, body).expect("collector reachable")
}

fn error_of(r: &http::Resp) -> String {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no JSON error in {}: {}", r.status, r.body))
}

#[test]
fn collector_refuses_bad_requests_with_clear_errors() {
    let mut w = World::new("badhttp");
    w.start_collector();
    let key = Some(basic_auth(&w.write_key));
    let ok = json!({"userId": "u1", "event": "Clicked", "messageId": "ok-1"}).to_string();

    // auth
    let r = post_raw(&w, "/v1/track", None, ok.as_bytes());
    assert_eq!(r.status, 401);
    assert!(error_of(&r).contains("write key"));
    let r = post_raw(
        &w,
        "/v1/track",
        Some(basic_auth("wrong-key")),
        ok.as_bytes(),
    );
    assert_eq!(r.status, 401);
    // the key in the body (older SDKs) works too
    let with_body_key =
        json!({"userId": "u1", "event": "Clicked", "messageId": "ok-2", "writeKey": w.write_key});
    assert_eq!(
        post_raw(&w, "/v1/track", None, with_body_key.to_string().as_bytes()).status,
        200
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/v1/track", b"{not json".to_vec(), "not valid JSON"),
        ("/v1/track", vec![0xff, 0xfe, b'{', b'}'], "not valid UTF-8"),
        ("/v1/track", b"[1,2]".to_vec(), "JSON object"),
        (
            "/v1/track",
            json!({"event": "Clicked"}).to_string().into_bytes(),
            "no usable identifier",
        ),
        (
            "/v1/track",
            json!({"userId": "undefined", "event": "Clicked"})
                .to_string()
                .into_bytes(),
            "no usable identifier",
        ),
        (
            "/v1/track",
            json!({"userId": ["a"], "event": "Clicked"})
                .to_string()
                .into_bytes(),
            "must be a string",
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": 5}).to_string().into_bytes(),
            "`event` must be a string",
        ),
        (
            "/v1/identify",
            json!({"userId": "u", "traits": "x"})
                .to_string()
                .into_bytes(),
            "`traits` must be an object",
        ),
        (
            "/v1/page",
            json!({"userId": "u", "timestamp": "2099-01-01T00:00:00Z"})
                .to_string()
                .into_bytes(),
            "future",
        ),
        (
            "/v1/batch",
            json!({"batch": []}).to_string().into_bytes(),
            "empty",
        ),
        (
            "/v1/batch",
            json!({"batch": "x"}).to_string().into_bytes(),
            "array",
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": "X", "properties": {"blob": "x".repeat(40_000)}})
                .to_string()
                .into_bytes(),
            "limit is 32768",
        ),
    ];
    for (path, body, want) in &cases {
        let r = post_raw(&w, path, key.clone(), body);
        assert_eq!(r.status, 400, "{path} {want}: {}", r.body);
        let e = error_of(&r);
        assert!(e.contains(want), "{path}: expected `{want}` in `{e}`");
    }
    // a batch over 500 KB
    let big: Vec<Value> = (0..40)
        .map(|i| json!({"type": "track", "userId": "u", "event": "X", "messageId": format!("b{i}"), "properties": {"pad": "y".repeat(15_000)}}))
        .collect();
    let r = post_raw(
        &w,
        "/v1/batch",
        key.clone(),
        json!({"batch": big}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("limit is 512000"), "{}", r.body);
    // a batch with one bad message is refused whole, with the index of the bad one
    let mixed = json!({"batch": [
        {"type": "track", "userId": "u", "event": "X", "messageId": "mix-1"},
        {"type": "track", "event": "X", "messageId": "mix-2"}
    ]});
    let r = post_raw(&w, "/v1/batch", key.clone(), mixed.to_string().as_bytes());
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["errors"][0]["index"], 1, "{v}");
    // a gzip-compressed batch, as some SDKs send, is accepted
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(json!({"batch": [{"type": "track", "userId": "u", "event": "Zipped", "messageId": "gz-1"}]}).to_string().as_bytes())
            .expect("gzip");
        e.finish().expect("gzip")
    };
    let r = http::request(
        "POST",
        &w.collector_url("/v1/batch"),
        &[
            ("Authorization", basic_auth(&w.write_key)),
            ("Content-Encoding", "gzip".into()),
            ("Content-Type", "application/json".into()),
        ],
        &gz,
    )
    .expect("collector reachable");
    assert_eq!(r.status, 200, "{}", r.body);
    // collector metrics on its own port
    let m = http::request("GET", &w.collector_url("/metrics"), &[], b"").expect("metrics");
    assert!(
        m.body.contains("socialcrm_collector_rejected_total"),
        "{}",
        m.body
    );
    // unknown endpoint
    assert_eq!(
        post_raw(&w, "/v1/fly", key.clone(), ok.as_bytes()).status,
        404
    );

    // nothing refused reached Kafka: only the accepted calls are there
    let events = consume_all(&w.topics().events, 2, Duration::from_secs(10));
    let ids: Vec<String> = events
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| {
            serde_json::from_slice::<Value>(p).expect("json")["event_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&"web:ok-2".to_string()) && ids.contains(&"web:gz-1".to_string()),
        "{ids:?}"
    );
}

#[test]
fn invalid_events_in_kafka_go_to_the_dlq_and_the_pipeline_keeps_going() {
    let mut w = World::new("dlq");
    let t = w.topics();
    let good = |n: u32| {
        json!({"schema_version": 1, "event_id": format!("good:{n}"), "source": "test", "channel": "web",
            "type": "page", "occurred_at": "2026-11-01T00:00:00Z", "received_at": "2026-11-01T00:00:01Z",
            "identifiers": [{"type": "anonymous_id", "value": format!("a{n}")}]})
        .to_string()
        .into_bytes()
    };
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"schema_version\": 1, ".to_vec()),
        ("not_utf8", vec![0xc3, 0x28, 0xa0, 0xa1]),
        ("no_identifier", json!({"schema_version": 1, "event_id": "bad:1", "source": "test", "channel": "web",
            "type": "page", "occurred_at": "2026-11-01T00:00:00Z", "received_at": "2026-11-01T00:00:00Z",
            "identifiers": [{"type": "email", "value": "null"}]}).to_string().into_bytes()),
        ("schema_version", json!({"schema_version": 9, "event_id": "bad:2", "source": "test", "channel": "web",
            "type": "page", "occurred_at": "2026-11-01T00:00:00Z", "received_at": "2026-11-01T00:00:00Z",
            "identifiers": [{"type": "user_id", "value": "u"}]}).to_string().into_bytes()),
        ("malformed", json!({"schema_version": 1, "event_id": "bad:3", "source": "test", "channel": "web",
            "type": "page", "occurred_at": 12345, "received_at": "2026-11-01T00:00:00Z",
            "identifiers": [{"type": "user_id", "value": "u"}]}).to_string().into_bytes()),
        ("too_large", format!("{{\"pad\": \"{}\"}}", "z".repeat(70_000)).into_bytes()),
    ];
    let mut msgs = Vec::new();
    for n in 0..10u32 {
        msgs.push((format!("k{n}"), good(n)));
        if let Some((_, b)) = bad.pop() {
            msgs.push((format!("bad{n}"), b));
        }
    }
    produce_raw(&t.events, &msgs);
    w.start_pipeline();
    wait_until(Duration::from_secs(60), "good events written", || {
        w.query_u64("SELECT count() FROM events FINAL") == 10
    });
    let dlq = consume_all(&t.dlq, 6, Duration::from_secs(30));
    assert_eq!(dlq.len(), 6, "one DLQ message per bad event");
    let payloads: Vec<Vec<u8>> = dlq.iter().filter_map(|(_, p)| p.clone()).collect();
    let parsed = assert_all_valid(json_schema::DLQ, &payloads, "crm.dlq");
    let mut codes: Vec<String> = parsed
        .iter()
        .map(|m| m["error_code"].as_str().unwrap_or("").to_string())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "malformed",
            "malformed",
            "no_identifier",
            "not_utf8",
            "schema_version",
            "too_large"
        ]
    );
    for m in &parsed {
        assert_eq!(m["origin"]["topic"], t.events.as_str());
        assert!(m["origin"]["offset"].as_i64().is_some());
        assert!(!m["reason"].as_str().unwrap_or("").is_empty());
        assert!(m["original"].is_string() || m["original_base64"].is_string());
    }
    let not_utf8 = parsed
        .iter()
        .find(|m| m["error_code"] == "not_utf8")
        .expect("not_utf8");
    assert_eq!(
        not_utf8["original_base64"], "wyigoQ==",
        "original bytes kept exactly"
    );

    // operators see it: rejections by reason on the pipeline's /metrics
    let m = http::request(
        "GET",
        &format!("http://{}/metrics", w.metrics_addr),
        &[],
        b"",
    )
    .expect("metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .contains("socialcrm_pipeline_rejected_total{code=\"not_utf8\"} 1"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("socialcrm_pipeline_events_total{outcome=\"accepted\"} 10"),
        "{}",
        m.body
    );

    // still alive: a later good event is processed
    produce_raw(&t.events, &[("late".into(), good(99))]);
    wait_until(Duration::from_secs(60), "late event", || {
        w.query_u64("SELECT count() FROM events FINAL") == 11
    });
}
