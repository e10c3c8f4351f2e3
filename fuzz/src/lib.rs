//! Invariants shared by the fuzz targets (`fuzz_targets/`): what must hold for
//! every input, beyond "does not panic". A broken invariant panics, which
//! libFuzzer reports as a crash with the input that caused it.
//!
//! - An event a source emits and the runtime keeps is one the pipeline accepts:
//!   its Kafka bytes pass `CanonicalEvent::parse_and_validate`, validate against
//!   the canonical JSON Schema, fit in `MAX_EVENT_BYTES`, and parse back to the
//!   same event with nothing more to normalise.
//! - Anything refused can go to `crm.dlq`: its message has a reason, validates
//!   against the DLQ schema and keeps the original bytes.
//! - Normalised identifiers are fixed points of normalisation.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use socialcrm_connectors::runtime::Rejected;
use socialcrm_schemas::event::MAX_EVENT_BYTES;
use socialcrm_schemas::messages::{DlqMessage, DlqOrigin, MAX_DLQ_ORIGINAL_BYTES};
use socialcrm_schemas::{json_schema, CanonicalEvent, Identifier, Normalizer};

/// A fixed clock, so a crashing input reproduces whenever it is replayed.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default()
}

/// The normaliser with a default phone region, as the collector's sample config.
pub fn normalizer() -> &'static Normalizer {
    static N: OnceLock<Normalizer> = OnceLock::new();
    N.get_or_init(|| Normalizer::new(Some("US")).expect("US is a region"))
}

fn validator(schema: &'static str) -> jsonschema::Validator {
    let v: Value = serde_json::from_str(schema).expect("schema is JSON");
    jsonschema::validator_for(&v).expect("schema compiles")
}

fn event_schema() -> &'static jsonschema::Validator {
    static S: OnceLock<jsonschema::Validator> = OnceLock::new();
    S.get_or_init(|| validator(json_schema::CANONICAL_EVENT))
}

fn dlq_schema() -> &'static jsonschema::Validator {
    static S: OnceLock<jsonschema::Validator> = OnceLock::new();
    S.get_or_init(|| validator(json_schema::DLQ))
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every identifier of a validated event is already in normal form.
pub fn assert_normalised(ev: &CanonicalEvent) {
    for id in ev.identifiers.iter().chain(&ev.target).chain(&ev.claimed) {
        assert_fixed_point(id);
    }
}

/// Normalising a normalised identifier gives it back unchanged.
pub fn assert_fixed_point(id: &Identifier) {
    match normalizer().normalize(&id.id_type, &id.value) {
        Ok(again) => assert_eq!(&again, id, "normalisation is not idempotent"),
        Err(e) => panic!("normalised identifier {id} is refused when normalised again: {e}"),
    }
}

/// The pipeline accepts these Kafka bytes, they validate against the canonical
/// schema, and the accepted event encodes to bytes that are accepted again as the
/// same event with nothing dropped. Returns the accepted event.
pub fn assert_pipeline_accepts(payload: &[u8]) -> CanonicalEvent {
    assert!(
        payload.len() <= MAX_EVENT_BYTES,
        "an accepted event is {} bytes, over the pipeline's {MAX_EVENT_BYTES}",
        payload.len()
    );
    let (ev, _dropped) = CanonicalEvent::parse_and_validate(payload, normalizer(), now())
        .unwrap_or_else(|e| {
            panic!(
                "the pipeline refuses an accepted event ({e}): {}",
                String::from_utf8_lossy(payload)
            )
        });
    let doc: Value = serde_json::from_slice(payload).expect("accepted bytes are JSON");
    let errors = schema_errors(event_schema(), &doc);
    assert!(errors.is_empty(), "schema: {errors:?} in {doc}");
    assert_normalised(&ev);
    let again = serde_json::to_vec(&ev).expect("an event encodes");
    if again.len() <= MAX_EVENT_BYTES {
        let (ev2, dropped2) = CanonicalEvent::parse_and_validate(&again, normalizer(), now())
            .unwrap_or_else(|e| panic!("a validated event is refused once re-encoded: {e}"));
        assert!(dropped2.is_empty(), "re-validation dropped {dropped2:?}");
        assert_eq!(ev2, ev, "re-validation changed the event");
    }
    ev
}

/// An event a connector mapped, as the connector runtime treats it: kept when it
/// validates (then the pipeline must accept it as [`assert_pipeline_accepts`]
/// says), turned into a DLQ message with a reason when it does not.
pub fn assert_connector_event(ev: &CanonicalEvent, instance: &str) {
    let mut checked = ev.clone();
    match checked.validate_and_normalize(normalizer(), now()) {
        Ok(_) => {
            let payload = serde_json::to_vec(&checked).expect("an event encodes");
            assert_pipeline_accepts(&payload);
        }
        Err(e) => {
            let raw = serde_json::to_vec(ev).unwrap_or_default();
            let rejected = Rejected {
                object_id: ev.event_id.clone(),
                reason: format!("mapped event is invalid: {e}"),
                raw,
            };
            assert_connector_rejected(&rejected, instance);
        }
    }
}

/// A provider object a connector refused goes to the DLQ with a reason and its
/// original bytes (the message the connector runtime sends, `Rejected::dlq_message`).
pub fn assert_connector_rejected(r: &Rejected, instance: &str) {
    assert!(!r.reason.trim().is_empty(), "a rejection without a reason");
    assert_dlq_message(&r.dlq_message(instance, now()), &r.raw);
}

/// A DLQ message for `payload` validates against the DLQ schema, parses back, and
/// keeps the original bytes (up to the DLQ's limit).
pub fn assert_dlq(code: &str, reason: &str, stage: &str, origin: DlqOrigin, payload: &[u8]) {
    let msg = DlqMessage::new(code, reason.to_string(), stage, origin, payload, now());
    assert_dlq_message(&msg, payload);
}

/// A DLQ message validates against the DLQ schema, parses back, and keeps
/// `payload` (up to the DLQ's limit).
pub fn assert_dlq_message(msg: &DlqMessage, payload: &[u8]) {
    use base64::Engine as _;
    let doc = serde_json::to_value(msg).expect("a DLQ message encodes");
    let errors = schema_errors(dlq_schema(), &doc);
    assert!(errors.is_empty(), "DLQ schema: {errors:?} in {doc}");
    let back: DlqMessage = serde_json::from_value(doc).expect("a DLQ message parses back");
    assert_eq!(&back, msg);
    let kept = match (&msg.original, &msg.original_base64) {
        (Some(t), None) => t.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("base64 decodes"),
        other => panic!("a DLQ message must keep the original once: {other:?}"),
    };
    if payload.len() <= MAX_DLQ_ORIGINAL_BYTES {
        assert_eq!(kept, payload, "the DLQ message lost bytes of the original");
    } else {
        assert!(payload.starts_with(&kept) && msg.original_truncated);
    }
}

/// Event ids of a mapping's events, to check that mapping the same input twice
/// gives the same ids (a replay must not create new events).
pub fn ids(events: &[CanonicalEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// Input bytes as JSON, or `None` when they are not (the target then has nothing
/// to map: the provider clients refuse non-JSON answers before the mapping).
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}
