//! X: one answer of the mention timeline (`map_response`, the whole body with
//! `data`, `includes`, `meta`, `errors`).
//!
//! Invariants: a body that is not the documented object is an error with a
//! reason; mapping is deterministic; kept events are accepted by the pipeline;
//! rejected posts go to the DLQ with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialcrm_connectors::x::mapping::{map_response, MapContext};
use socialcrm_fuzz::{assert_connector_event, assert_connector_rejected, ids, now};

const INSTANCE: &str = "x";

fuzz_target!(|data: &[u8]| {
    let ctx = MapContext {
        brand_id: "1000",
        source: "x:1000",
        received_at: now(),
        since_id: None,
    };
    match map_response(data, &ctx) {
        Ok(page) => {
            let again = map_response(data, &ctx).expect("the same answer maps again");
            assert_eq!(ids(&page.events), ids(&again.events), "not deterministic");
            for ev in &page.events {
                assert_connector_event(ev, INSTANCE);
            }
            for r in &page.rejected {
                assert_connector_rejected(r, INSTANCE);
            }
        }
        Err(reason) => assert!(!reason.trim().is_empty()),
    }
});
