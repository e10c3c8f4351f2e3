//! Helpers shared by the crate's unit tests.

use socialcrm_schemas::{CanonicalEvent, IdType, Identifier};

/// A valid web `page` event of the given identifiers at `at` (RFC 3339).
pub(crate) fn event(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
    CanonicalEvent::bare(
        id,
        "web",
        "page",
        at.parse().expect("date"),
        ids.iter().map(|(t, v)| Identifier::new(*t, *v)).collect(),
    )
}
