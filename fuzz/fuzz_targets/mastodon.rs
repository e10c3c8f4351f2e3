//! Mastodon: a page of notifications (a JSON array, as `GET /api/v1/notifications`
//! answers) mapped as the connector maps it (`PageItem::parse` + `map_items`, the
//! typed fast path) and by the plain `map_notifications`.
//!
//! Invariants: both paths give the same events, rejections and skips; mapping is
//! deterministic; kept events are accepted by the pipeline; rejections go to the
//! DLQ with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use socialcrm_connectors::mastodon::config::SUPPORTED_TYPES;
use socialcrm_connectors::mastodon::mapping::{map_items, map_notifications, Context, PageItem};
use socialcrm_fuzz::{assert_connector_event, assert_connector_rejected, ids, now};

const INSTANCE: &str = "mastodon";

fuzz_target!(|data: &[u8]| {
    let Ok(raws) = serde_json::from_slice::<Vec<Box<RawValue>>>(data) else {
        return;
    };
    // the plain path needs serde_json::Value; a page it cannot hold (a number out of
    // f64 range in a field the typed path never reads) has no plain reference
    let Ok(values) = raws
        .iter()
        .map(|r| serde_json::from_str(r.get()))
        .collect::<Result<Vec<Value>, _>>()
    else {
        let items: Vec<PageItem> = raws.iter().map(|r| PageItem::parse(r)).collect();
        let types: Vec<String> = SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect();
        for ev in &map_items(&items, &context(&types)).events {
            assert_connector_event(ev, INSTANCE);
        }
        return;
    };
    let items: Vec<PageItem> = raws.iter().map(|r| PageItem::parse(r)).collect();
    let types: Vec<String> = SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect();
    let ctx = context(&types);
    let fast = map_items(&items, &ctx);
    let plain = map_notifications(&values, &ctx);
    assert_eq!(fast.events, plain.events, "typed and plain mapping differ");
    assert_eq!(fast.skipped, plain.skipped);
    assert_eq!(
        fast.rejected.iter().map(|r| &r.reason).collect::<Vec<_>>(),
        plain.rejected.iter().map(|r| &r.reason).collect::<Vec<_>>()
    );
    assert_eq!(ids(&map_items(&items, &ctx).events), ids(&fast.events));
    for ev in &fast.events {
        assert_connector_event(ev, INSTANCE);
    }
    for r in &fast.rejected {
        assert_connector_rejected(r, INSTANCE);
    }
});

fn context(types: &[String]) -> Context<'_> {
    Context {
        domain: "mastodon.social",
        source: "mastodon:mastodon.social",
        brand_id: "1",
        brand_handle: "@brand@mastodon.social",
        types,
        received_at: now(),
        max_text_chars: 200,
    }
}
