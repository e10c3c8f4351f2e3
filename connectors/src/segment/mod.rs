//! The web collector: a Segment HTTP Tracking API compatible server (DESIGN §3.5),
//! so existing Segment/RudderStack SDKs work by changing only the host.

pub mod auth;
pub mod config;
pub mod mapping;
pub mod server;
#[cfg(test)]
mod tests;

pub use config::{CollectorConfig, RateLimit, WriteKey};
pub use server::{router, serve, AppState};
