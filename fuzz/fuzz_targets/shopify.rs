//! Shopify: one GraphQL node, a customer (`map_customer`) or an order with its
//! refunds (`map_order`) as the first byte says; test orders kept or not.
//!
//! Invariants: mapping is deterministic; the node read as a bulk result line by
//! the typed reading, when it takes it, maps as its tree does; kept events are
//! accepted by the pipeline; rejections go to the DLQ with a reason; a skipped
//! order has no events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialcrm_connectors::shopify::mapping::{map_customer, map_order, MapCtx};
use socialcrm_connectors::shopify::typed;
use socialcrm_fuzz::{
    assert_connector_event, assert_connector_rejected, ids, json, normalizer, now,
};

const INSTANCE: &str = "shopify";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some(node) = json(rest) else {
        return;
    };
    let ctx = MapCtx {
        shop: "eu-store.myshopify.com",
        source: "shopify:eu-store.myshopify.com",
        received_at: now(),
        include_test_orders: sel & 0x80 != 0,
        normalizer: normalizer(),
    };
    let line = node.to_string();
    if sel & 1 == 0 {
        if let Some(ev) = typed::map_customer_line(&line, &ctx) {
            let tree =
                map_customer(&node, &ctx).expect("the typed reading took a rejected customer");
            assert_eq!(ev, tree, "the typed reading maps otherwise");
        }
        match map_customer(&node, &ctx) {
            Ok(ev) => {
                let again = map_customer(&node, &ctx).expect("maps again");
                assert_eq!(again.event_id, ev.event_id, "not deterministic");
                assert_connector_event(&ev, INSTANCE);
            }
            Err(r) => assert_connector_rejected(&r, INSTANCE),
        }
    } else {
        let out = map_order(&node, &ctx);
        if let Some(typed) = typed::map_order_line(&line, &ctx) {
            // a bulk line without line-item lines: the tree has an empty list
            let mut tree = node.clone();
            if let Some(o) = tree.as_object_mut() {
                o.insert("lineItems".into(), serde_json::json!({ "nodes": [] }));
            }
            let want = map_order(&tree, &ctx);
            assert_eq!(
                typed.events, want.events,
                "the typed reading maps otherwise"
            );
            assert_eq!(typed.skipped, want.skipped);
            assert!(
                want.rejected.is_empty(),
                "the typed reading took a rejected order"
            );
        }
        assert_eq!(ids(&map_order(&node, &ctx).events), ids(&out.events));
        if out.skipped.is_some() {
            assert!(out.events.is_empty(), "a skipped order with events");
        }
        for ev in &out.events {
            assert_connector_event(ev, INSTANCE);
        }
        for r in &out.rejected {
            assert_connector_rejected(r, INSTANCE);
        }
    }
});
