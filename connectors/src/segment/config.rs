//! `[collector]` section of the config file.

use serde::{Deserialize, Serialize};

/// Web collector settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Accepted write keys (HTTP Basic user name, or `writeKey` in the body).
    /// Use `${VAR}` interpolation for real keys; never logged.
    #[serde(default = "default_write_keys")]
    pub write_keys: Vec<String>,
    /// `source` of the canonical events this collector emits; also the `event_id` prefix.
    #[serde(default = "default_source")]
    pub source: String,
    /// Largest single message, bytes (Segment: 32 KB).
    #[serde(default = "default_max_event")]
    pub max_event_bytes: usize,
    /// Largest request body, bytes (Segment: 500 KB).
    #[serde(default = "default_max_batch")]
    pub max_batch_bytes: usize,
    /// Longest wait for Kafka's acknowledgement before answering 503.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// ISO 3166 region for phone numbers in traits written without a country code.
    #[serde(default)]
    pub default_phone_region: String,
    /// What happens to `context.ip` before events reach Kafka. Not a `[collector]`
    /// key: the binary copies `[privacy] ip` here (docs/privacy.md).
    #[serde(skip)]
    pub ip: socialcrm_schemas::privacy::IpPolicy,
}

impl std::fmt::Debug for CollectorConfig {
    // write keys are secrets: show how many, never which
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("listen", &self.listen)
            .field(
                "write_keys",
                &format!("<{} redacted>", self.write_keys.len()),
            )
            .field("source", &self.source)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("default_phone_region", &self.default_phone_region)
            .field("ip", &self.ip)
            .finish()
    }
}

fn default_listen() -> String {
    "127.0.0.1:8088".into()
}
fn default_write_keys() -> Vec<String> {
    vec!["local-dev-key".into()]
}
fn default_source() -> String {
    "web".into()
}
fn default_max_event() -> usize {
    32 * 1024
}
fn default_max_batch() -> usize {
    500 * 1024
}
fn default_ack_timeout() -> u64 {
    30_000
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: default_listen(),
            write_keys: default_write_keys(),
            source: default_source(),
            max_event_bytes: default_max_event(),
            max_batch_bytes: default_max_batch(),
            ack_timeout_ms: default_ack_timeout(),
            default_phone_region: String::new(),
            ip: Default::default(),
        }
    }
}

impl CollectorConfig {
    /// Pure checks, before the server binds.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "collector.listen: `{}` is not an address like 127.0.0.1:8088",
                self.listen
            ));
        }
        if self.write_keys.is_empty() || self.write_keys.iter().any(|k| k.trim().is_empty()) {
            return Err("collector.write_keys: at least one non-empty key is required".into());
        }
        if self.source.trim().is_empty() {
            return Err("collector.source must not be empty".into());
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_batch_bytes {
            return Err("collector.max_event_bytes must be > 0 and <= max_batch_bytes".into());
        }
        let cap = socialcrm_schemas::event::MAX_EVENT_BYTES;
        if self.max_event_bytes > cap {
            return Err(format!(
                "collector.max_event_bytes must be <= {cap} (the pipeline's canonical event limit)"
            ));
        }
        Ok(())
    }
}
