//! Connector runtime and sources. Every connector emits canonical events only
//! (DESIGN §3.2) through [`producer::EventProducer`], which answers only after Kafka
//! acknowledged them.
//!
//! Sources:
//! - [`segment`]: the web collector, a Segment HTTP Tracking API compatible server.

pub mod producer;
pub mod segment;
