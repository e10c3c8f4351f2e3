//! The JSON Schemas of every topic (DESIGN §3.3), embedded so tests and tools
//! can validate what is produced.

/// `crm.events`: the canonical event.
pub const CANONICAL_EVENT: &str = include_str!("../json/canonical-event.v1.schema.json");
/// `crm.dlq`: rejected inputs.
pub const DLQ: &str = include_str!("../json/dlq.v1.schema.json");
/// `crm.identity`: identity-ledger entries.
pub const IDENTITY: &str = include_str!("../json/identity.v1.schema.json");
/// `crm.profiles`: full current profiles (a null value is a tombstone).
pub const PROFILE: &str = include_str!("../json/profile.v1.schema.json");

/// `crm.identity.commands`: unlink and split commands to the identity writer.
pub const IDENTITY_COMMAND: &str = include_str!("../json/identity-command.v1.schema.json");

/// `crm.privacy.commands`: erasure requests to the identity writer.
pub const ERASE_COMMAND: &str = include_str!("../json/erase-command.v1.schema.json");

/// Every schema with the default topic it describes.
pub const ALL: [(&str, &str); 6] = [
    ("crm.events", CANONICAL_EVENT),
    ("crm.dlq", DLQ),
    ("crm.identity", IDENTITY),
    ("crm.profiles", PROFILE),
    ("crm.identity.commands", IDENTITY_COMMAND),
    ("crm.privacy.commands", ERASE_COMMAND),
];
