//! WooCommerce: one listed object read as the connector reads it (`slim` to the
//! fields the mapping uses), then a customer (`map_customer`) or an order with
//! its refunds (`map_order`) as the first byte says.
//!
//! Invariants: `slim` keeps what the mapping reads (mapping the slim and the
//! whole object gives the same outcome); an order the typed reading takes maps
//! as its slim tree does; mapping is deterministic; kept events are accepted by
//! the pipeline; rejections go to the DLQ with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use socialcrm_connectors::woocommerce::mapping::{
    map_customer, map_order, slim, Ctx, OrderMapped, CUSTOMER_FIELDS, ORDER_FIELDS,
};
use socialcrm_connectors::woocommerce::typed;
use socialcrm_fuzz::{assert_connector_event, assert_connector_rejected, ids, now};

const INSTANCE: &str = "woocommerce";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else {
        return;
    };
    let Ok(whole) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
        return;
    };
    let ctx = Ctx {
        site: "shop.example.com",
        received_at: now(),
    };
    if sel & 1 == 0 {
        let o = slim(&raw, CUSTOMER_FIELDS).unwrap_or(serde_json::Value::Null);
        let out = map_customer(&o, &ctx);
        match (&out, map_customer(&whole, &ctx)) {
            (Ok(a), Ok(b)) => assert_eq!(a, &b, "slim lost a field the mapping reads"),
            (Err(a), Err(b)) => assert_eq!(a.reason, b.reason),
            (a, b) => panic!("slim changed the outcome: {a:?} vs {b:?}"),
        }
        match out {
            Ok(ev) => assert_connector_event(&ev, INSTANCE),
            Err(r) => assert_connector_rejected(&r, INSTANCE),
        }
    } else {
        let o = slim(&raw, ORDER_FIELDS).unwrap_or(serde_json::Value::Null);
        let out = map_order(&o, &ctx);
        match (&out, map_order(&whole, &ctx)) {
            (OrderMapped::Events(a), OrderMapped::Events(b)) => {
                assert_eq!(a, &b, "slim lost a field the mapping reads");
                assert_eq!(ids(a), ids(&b));
            }
            (OrderMapped::Skipped(a), OrderMapped::Skipped(b)) => assert_eq!(a, &b),
            (OrderMapped::Rejected(a), OrderMapped::Rejected(b)) => {
                assert_eq!(a.reason, b.reason)
            }
            (a, b) => panic!("slim changed the outcome: {a:?} vs {b:?}"),
        }
        match (typed::map_order(raw.get(), &ctx), &out) {
            (None, _) => {}
            (Some(OrderMapped::Events(a)), OrderMapped::Events(b)) => {
                assert_eq!(&a, b, "the typed reading maps otherwise")
            }
            (Some(OrderMapped::Skipped(a)), OrderMapped::Skipped(b)) => assert_eq!(a, *b),
            (Some(a), b) => panic!("the typed reading gives {a:?}, the tree {b:?}"),
        }
        match out {
            OrderMapped::Events(evs) => {
                for ev in &evs {
                    assert_connector_event(ev, INSTANCE);
                }
            }
            OrderMapped::Skipped(reason) => assert!(!reason.is_empty()),
            OrderMapped::Rejected(r) => assert_connector_rejected(&r, INSTANCE),
        }
    }
});
