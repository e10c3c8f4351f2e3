//! The pipeline (DESIGN §1, §4, §5): consumes canonical events, rejects invalid ones
//! to the dead-letter topic, resolves identities, builds unified profiles, and
//! writes events, identities, the identity ledger and profiles to ClickHouse and
//! Kafka. It knows nothing of any source.

pub mod codec;
pub mod config;
pub mod identity;
pub mod pii;
pub mod privacy;
pub mod profile;
pub mod rows;
pub mod run;
pub mod scoring;
pub mod small;
pub mod store;
#[cfg(test)]
mod testing;

pub use config::PipelineConfig;
pub use run::{run, PipelineError};
