//! Helpers shared by the crate's unit tests.

use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier};

/// A valid web `page` event of the given identifiers at `at` (RFC 3339).
pub(crate) fn event(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
    CanonicalEvent {
        claimed: Vec::new(),
        schema_version: 1,
        event_id: id.into(),
        source: "web".into(),
        channel: Channel::Web,
        event_type: "page".into(),
        name: None,
        occurred_at: at.parse().expect("date"),
        received_at: at.parse().expect("date"),
        identifiers: ids.iter().map(|(t, v)| Identifier::new(*t, *v)).collect(),
        target: vec![],
        traits: Default::default(),
        properties: Default::default(),
        revenue: None,
        context: Default::default(),
    }
}
