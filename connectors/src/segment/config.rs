//! `[collector]` section of the config file: listener, write keys (the short form
//! `write_keys` for `source`, and named `[[collector.keys]]` with a source each),
//! size limits and the rate limit per key. Keys and limits can be reloaded (SIGHUP).

use serde::{Deserialize, Serialize};

use crate::runtime::config::Secret;

/// Web collector settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address to listen on (a change needs a restart).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Short form: accepted write keys (HTTP Basic user name, or `writeKey` in the
    /// body) whose events get `source`. Use `${VAR}` for real keys; never logged.
    /// When neither this nor `keys` is given: `["local-dev-key"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_keys: Option<Vec<String>>,
    /// Named write keys, each with the `source` its events get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<WriteKey>,
    /// `source` of the events of `write_keys` (and of `keys` without their own);
    /// also the `event_id` prefix.
    #[serde(default = "default_source")]
    pub source: String,
    /// Largest single message, bytes (Segment: 32 KB).
    #[serde(default = "default_max_event")]
    pub max_event_bytes: usize,
    /// Largest request body, bytes (Segment: 500 KB).
    #[serde(default = "default_max_batch")]
    pub max_batch_bytes: usize,
    /// Most messages in one `/v1/batch` call.
    #[serde(default = "default_max_batch_messages")]
    pub max_batch_messages: usize,
    /// Requests per write key: a token bucket per key; over it, 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit_per_key: RateLimit,
    /// Longest wait for Kafka's acknowledgement before answering 503 (a change needs a restart).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// ISO 3166 region for phone numbers in traits written without a country code
    /// (a change needs a restart).
    #[serde(default)]
    pub default_phone_region: String,
    /// What happens to `context.ip` before events reach Kafka. Not a `[collector]`
    /// key: the binary copies `[privacy] ip` here (docs/privacy.md).
    #[serde(skip)]
    pub ip: socialcrm_schemas::privacy::IpPolicy,
}

/// A named write key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteKey {
    /// Who holds the key; shown in logs and metrics instead of the key. Unique.
    pub name: String,
    /// The key, at least 8 characters: `"${VAR}"`, or `{ file = "/run/secrets/k" }`
    /// (read again on every reload, so keys can be added without a restart).
    pub key: Secret,
    /// `source` of this key's events and their `event_id` prefix; default `collector.source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Token bucket per write key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per key; 0 = no limit.
    #[serde(default = "default_rps")]
    pub requests_per_sec: u32,
    /// Requests a key may send at once above that rate (the bucket's size).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

/// A write key as the collector uses it (from either form).
#[derive(Clone, PartialEq)]
pub struct ResolvedKey {
    /// `keys[].name`, or `write_keys[i]` for the short form.
    pub name: String,
    pub key: String,
    pub source: String,
}

impl std::fmt::Debug for CollectorConfig {
    // write keys are secrets: show how many, never which
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("listen", &self.listen)
            .field(
                "write_keys",
                &self
                    .write_keys
                    .as_ref()
                    .map(|k| format!("<{} redacted>", k.len())),
            )
            .field("keys", &self.keys)
            .field("source", &self.source)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_batch_messages", &self.max_batch_messages)
            .field("rate_limit_per_key", &self.rate_limit_per_key)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("default_phone_region", &self.default_phone_region)
            .field("ip", &self.ip)
            .finish()
    }
}

impl std::fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

fn default_listen() -> String {
    "127.0.0.1:8088".into()
}
/// The local write key (DESIGN §3.6), used when no key is configured at all.
pub const LOCAL_DEV_KEY: &str = "local-dev-key";
fn default_source() -> String {
    "web".into()
}
fn default_max_event() -> usize {
    32 * 1024
}
fn default_max_batch() -> usize {
    500 * 1024
}
fn default_max_batch_messages() -> usize {
    2500
}
fn default_ack_timeout() -> u64 {
    30_000
}
// generous: a busy site shares one key among all its visitors' browsers, and the
// benchmark replays ~250 batch calls per second through one key
fn default_rps() -> u32 {
    1000
}
fn default_burst() -> u32 {
    2000
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_sec: default_rps(),
            burst: default_burst(),
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: default_listen(),
            write_keys: None,
            keys: Vec::new(),
            source: default_source(),
            max_event_bytes: default_max_event(),
            max_batch_bytes: default_max_batch(),
            max_batch_messages: default_max_batch_messages(),
            rate_limit_per_key: RateLimit::default(),
            ack_timeout_ms: default_ack_timeout(),
            default_phone_region: String::new(),
            ip: Default::default(),
        }
    }
}

/// A `source` becomes every event's `source` and `event_id` prefix: the
/// pipeline's rules for it (non-empty, at most 128 bytes, no control characters),
/// and no surrounding blanks.
fn check_source(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if v.trim() != v || v.len() > 128 || v.chars().any(char::is_control) {
        return Err(format!(
            "{field}: `{v}` must be at most 128 bytes, without surrounding blanks or control characters"
        ));
    }
    Ok(())
}

impl CollectorConfig {
    /// Every accepted key with its name and source: `write_keys` (or the local key
    /// when no key is configured at all), then `keys`.
    pub fn resolved_keys(&self) -> Vec<ResolvedKey> {
        let short: Vec<String> = match (&self.write_keys, self.keys.is_empty()) {
            (Some(k), _) => k.clone(),
            (None, true) => vec![LOCAL_DEV_KEY.to_string()],
            (None, false) => Vec::new(),
        };
        let mut out: Vec<ResolvedKey> = short
            .into_iter()
            .enumerate()
            .map(|(i, key)| ResolvedKey {
                name: format!("write_keys[{i}]"),
                key,
                source: self.source.clone(),
            })
            .collect();
        out.extend(self.keys.iter().map(|k| ResolvedKey {
            name: k.name.clone(),
            key: k.key.expose().to_string(),
            source: k.source.clone().unwrap_or_else(|| self.source.clone()),
        }));
        out
    }

    /// Pure checks, before the server binds and before a reload is applied; errors
    /// name the field (never a key's value).
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "collector.listen: `{}` is not an address like 127.0.0.1:8088",
                self.listen
            ));
        }
        check_source("collector.source", &self.source)?;
        if let Some(short) = &self.write_keys {
            if short.is_empty() && self.keys.is_empty() {
                return Err(
                    "collector.write_keys: at least one key is required (here or in [[collector.keys]])"
                        .into(),
                );
            }
            if let Some(i) = short.iter().position(|k| k.trim().is_empty()) {
                return Err(format!("collector.write_keys[{i}] is empty"));
            }
        }
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("collector.keys[{i}]");
            if k.name.trim().is_empty() || k.name.chars().any(char::is_control) {
                return Err(format!("{at}.name must be a non-empty name"));
            }
            if k.key.expose().trim().len() < 8 {
                return Err(format!(
                    "{at} ({}): `key` must be at least 8 characters",
                    k.name
                ));
            }
            if let Some(s) = &k.source {
                check_source(&format!("{at} ({}).source", k.name), s)?;
            }
        }
        let all = self.resolved_keys();
        for (i, a) in all.iter().enumerate() {
            if let Some(b) = all[..i].iter().find(|b| b.name == a.name) {
                return Err(format!(
                    "collector.keys: the name `{}` is used twice",
                    b.name
                ));
            }
            if let Some(b) = all[..i].iter().find(|b| b.key == a.key) {
                return Err(format!(
                    "collector.keys: `{}` has the same key as `{}` (one key, one source)",
                    a.name, b.name
                ));
            }
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
        if self.max_batch_messages == 0 {
            return Err("collector.max_batch_messages must be at least 1".into());
        }
        let r = self.rate_limit_per_key;
        if r.requests_per_sec > 0 && r.burst == 0 {
            return Err(
                "collector.rate_limit_per_key.burst must be at least 1 when requests_per_sec > 0"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> CollectorConfig {
        toml::from_str(toml_text).expect("collector toml")
    }

    #[test]
    fn keys_resolve_with_their_sources() {
        // nothing configured: the local key, for `source`
        let d = CollectorConfig::default();
        let keys = d.resolved_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].key.as_str(), keys[0].source.as_str()),
            (LOCAL_DEV_KEY, "web")
        );
        assert!(d.validate().is_ok());

        let c = parse(
            r#"
            write_keys = ["short-one"]
            source = "site"
            [[keys]]
            name = "web-eu"
            key = "eu-key-123"
            source = "web-eu"
            [[keys]]
            name = "app"
            key = "app-key-456"
            "#,
        );
        c.validate().expect("valid");
        let got: Vec<(String, String, String)> = c
            .resolved_keys()
            .into_iter()
            .map(|k| (k.name, k.key, k.source))
            .collect();
        let want = [
            ("write_keys[0]", "short-one", "site"),
            ("web-eu", "eu-key-123", "web-eu"),
            ("app", "app-key-456", "site"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }

        // a key from a file (trailing newline dropped)
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k");
        std::fs::write(&file, "file-key-789\n").expect("write");
        let f = parse(&format!(
            "[[keys]]\nname = \"f\"\nkey = {{ file = \"{}\" }}\n",
            file.display()
        ));
        f.validate().expect("valid");
        assert_eq!(f.resolved_keys()[0].key, "file-key-789");
        assert!(!format!("{f:?}").contains("file-key-789"));

        // named keys alone: the local key is NOT added
        let only = parse("[[keys]]\nname = \"a\"\nkey = \"aaaaaaaa1\"\n");
        let keys = only.resolved_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name, "a");
        // keys never show in Debug output
        let shown = format!("{c:?} {:?}", c.resolved_keys());
        for secret in ["short-one", "eu-key-123", "app-key-456"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn bad_key_configs_name_the_field() {
        let cases = [
            ("write_keys = []", "collector.write_keys"),
            ("write_keys = [\" \"]", "collector.write_keys[0]"),
            (
                "[[keys]]\nname = \"a\"\nkey = \"short\"",
                "collector.keys[0] (a)",
            ),
            (
                "[[keys]]\nname = \"\"\nkey = \"long-enough\"",
                "collector.keys[0].name",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"long-enough\"\nsource = \"\"",
                "collector.keys[0] (a).source",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"long-enough\"\n[[keys]]\nname = \"a\"\nkey = \"other-key-1\"",
                "`a` is used twice",
            ),
            (
                "write_keys = [\"long-enough\"]\n[[keys]]\nname = \"b\"\nkey = \"long-enough\"",
                "`b` has the same key as `write_keys[0]`",
            ),
            ("source = \" web\"", "collector.source"),
            ("max_batch_messages = 0", "collector.max_batch_messages"),
            (
                "rate_limit_per_key = { requests_per_sec = 5, burst = 0 }",
                "collector.rate_limit_per_key.burst",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).validate().expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("long-enough"), "a key in an error: {e}");
        }
        // rate limit off, with no burst
        let off = parse("rate_limit_per_key = { requests_per_sec = 0, burst = 0 }");
        assert!(off.validate().is_ok());
        // unknown keys in a key entry are refused by serde, with the name
        let e =
            toml::from_str::<CollectorConfig>("[[keys]]\nname = \"a\"\nkey = \"k\"\nsorce = \"x\"")
                .expect_err("unknown field");
        assert!(e.to_string().contains("sorce"), "{e}");
    }
}
