//! The web collector's request parsing (`segment::server::{read_body,
//! map_request}`): one selector byte picks the endpoint (a one-letter alias such
//! as `t` or `b`, else by its value), the rest is the request body.
//!
//! Invariants: a refusal is a 400 with a reason; an accepted request yields one
//! event per message, each accepted by the pipeline as it is (schema, size,
//! validation, normal form); mapping the same request twice gives the same bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socialcrm_connectors::segment::server::{endpoint, map_request, read_body, Refusal};
use socialcrm_connectors::segment::CollectorConfig;
use socialcrm_fuzz::{assert_pipeline_accepts, normalizer, now};

const KINDS: [&str; 7] = [
    "batch", "identify", "track", "page", "screen", "group", "alias",
];

/// Small limits, so that inputs of a few KB reach the size checks.
fn config() -> &'static CollectorConfig {
    static C: OnceLock<CollectorConfig> = OnceLock::new();
    C.get_or_init(|| CollectorConfig {
        max_event_bytes: 1024,
        max_batch_bytes: 4096,
        ..CollectorConfig::default()
    })
}

fn assert_refusal(r: &Refusal) {
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(r.body["success"], false, "{}", r.body);
    let reason = r.body["error"].as_str().unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "a refusal without a reason: {}",
        r.body
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = endpoint(&char::from(sel).to_string()).unwrap_or(KINDS[sel as usize % KINDS.len()]);
    let cfg = config();
    let parsed = match read_body(cfg, body) {
        Ok(v) => v,
        Err(r) => return assert_refusal(&r),
    };
    assert!(parsed.is_object());
    match map_request(cfg, normalizer(), kind, &parsed, body.len(), now()) {
        Ok(events) => {
            let expected = match kind {
                "batch" => parsed["batch"].as_array().map_or(0, Vec::len),
                _ => 1,
            };
            assert_eq!(events.len(), expected, "one event per message");
            for e in &events {
                assert!(!e.key.is_empty(), "an event without a Kafka key");
                let ev = assert_pipeline_accepts(&e.payload);
                assert_eq!(ev.event_id, e.event_id);
            }
            let again = map_request(cfg, normalizer(), kind, &parsed, body.len(), now())
                .expect("the same request is accepted again");
            for (a, b) in events.iter().zip(&again) {
                assert_eq!(a.payload, b.payload, "mapping is not deterministic");
            }
        }
        Err(r) => assert_refusal(&r),
    }
});
