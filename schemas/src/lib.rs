//! Contracts shared by every part of socialcrm: canonical events and identifiers
//! (DESIGN §3.1–3.2), topic messages and their JSON Schemas (§3.3), ClickHouse
//! migrations (§3.4), and the small plumbing every process needs (Kafka and
//! ClickHouse client settings, the one retry module).

pub mod borrowed;
pub mod clickhouse_config;
pub mod compat;
pub mod event;
pub mod identifier;
pub mod json_schema;
pub mod kafka;
pub mod messages;
pub mod migrations;
pub mod privacy;
pub mod retry;
pub mod secret;
pub mod suppression;

pub use event::{CanonicalEvent, Channel, EventError, JsonObject, Revenue, SCHEMA_VERSION};
pub use identifier::{IdError, IdType, Identifier, Normalizer};
