//! Connector runtime and sources. Every connector emits canonical events only
//! (DESIGN §3.2) through [`producer::EventProducer`], which answers only after Kafka
//! acknowledged them.
//!
//! - [`segment`]: the web collector, a Segment HTTP Tracking API compatible server.
//! - [`runtime`]: the loop every pull connector runs in (cursors, retries, DLQ,
//!   progress, metrics); [`registry`] lists the pull connectors.

#[cfg(test)]
mod fuzz_seeds;
pub mod mastodon;
pub mod producer;
pub mod registry;
pub mod runtime;
pub mod segment;
pub mod shopify;
pub mod telegram;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod typed;
pub mod woocommerce;
pub mod x;
