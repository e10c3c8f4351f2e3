//! Scoring (DESIGN §6, docs/scoring.md): engagement, influence (reach,
//! amplification, PageRank centrality), RFM, lifecycle and affinities, each 0–100
//! or a named class, stored with the components that explain them.
//!
//! - [`model`]: the formulas, pure functions over per-customer facts;
//! - [`pagerank`]: weighted PageRank by power iteration;
//! - [`job`]: `socialcrm score run`, reading facts from ClickHouse and writing
//!   `crm.scores`;
//! - [`incremental`]: between runs, the profiles that events touch, against the
//!   last run's distributions.

pub mod apply;
pub mod config;
pub mod incremental;
pub mod job;
pub mod model;
pub mod pagerank;
#[cfg(test)]
mod tests;

pub use config::ScoringConfig;
