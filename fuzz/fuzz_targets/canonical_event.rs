//! The pipeline's parse and validation of raw Kafka bytes
//! (`CanonicalEvent::parse_and_validate`).
//!
//! Invariants: an accepted event, re-encoded, is accepted again unchanged, is in
//! normal form and validates against the canonical schema; a refused one becomes a
//! DLQ message with a known code and a reason that validates against the DLQ
//! schema and keeps the original bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialcrm_fuzz::{assert_dlq, assert_pipeline_accepts, normalizer, now};
use socialcrm_schemas::event::MAX_EVENT_BYTES;
use socialcrm_schemas::messages::DlqOrigin;
use socialcrm_schemas::CanonicalEvent;

fuzz_target!(|data: &[u8]| {
    match CanonicalEvent::parse_and_validate(data, normalizer(), now()) {
        Ok((ev, _dropped)) => {
            let payload = serde_json::to_vec(&ev).expect("an event encodes");
            if payload.len() <= MAX_EVENT_BYTES {
                assert_pipeline_accepts(&payload);
            }
        }
        Err(e) => {
            let origin = DlqOrigin {
                topic: Some("crm.events".into()),
                partition: Some(0),
                offset: Some(0),
                ..DlqOrigin::default()
            };
            assert_dlq(e.code(), &e.to_string(), "validate", origin, data);
        }
    }
});
