//! Connector instances in the config file:
//!
//! ```toml
//! [connectors.shop_eu]          # instance name: `socialcrm connector run shop_eu`
//! type = "shopify"              # optional when the instance is named like its type
//! poll_interval_secs = 60       # runtime settings (below), shared by every type
//! shop = "eu-store.myshopify.com"
//! access_token = "${SHOPIFY_EU_TOKEN}"
//! ```
//!
//! Runtime keys are taken out of the table first; the rest must be exactly the
//! keys of the connector type's own config (unknown keys fail with their name).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// Settings every connector instance has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Where cursors live (`<state_dir>/<instance>.cursors.json`).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Wait between polls once a sync caught up.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// `/metrics` and `/health` of this process; empty = off.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Upper bound of one API call.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Total time one call may spend in retries (429/5xx/network) before the
    /// sync gives up for this poll and tries again after `poll_interval_secs`.
    #[serde(default = "default_max_retry_secs")]
    pub max_retry_secs: u64,
    /// Longest single backoff wait (provider-imposed waits may be longer).
    #[serde(default = "default_retry_max_interval_ms")]
    pub retry_max_interval_ms: u64,
}

/// Keys of [`RuntimeSettings`]; they are taken out of an instance's table before
/// the type's own config is read.
pub const RUNTIME_KEYS: &[&str] = &[
    "state_dir",
    "poll_interval_secs",
    "metrics_listen",
    "request_timeout_secs",
    "max_retry_secs",
    "retry_max_interval_ms",
];

fn default_state_dir() -> String {
    ".local/state/connectors".into()
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9470".into()
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_max_retry_secs() -> u64 {
    900
}
fn default_retry_max_interval_ms() -> u64 {
    60_000
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            state_dir: default_state_dir(),
            poll_interval_secs: default_poll_interval_secs(),
            metrics_listen: default_metrics_listen(),
            request_timeout_secs: default_request_timeout_secs(),
            max_retry_secs: default_max_retry_secs(),
            retry_max_interval_ms: default_retry_max_interval_ms(),
        }
    }
}

impl RuntimeSettings {
    /// Checks values; errors name the field under `prefix` (`connectors.shop_eu`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.state_dir.trim().is_empty() {
            return Err(format!("{prefix}.state_dir must not be empty"));
        }
        if self.poll_interval_secs == 0 {
            return Err(format!("{prefix}.poll_interval_secs must be at least 1"));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "{prefix}.metrics_listen: `{}` is not an address like 127.0.0.1:9470",
                self.metrics_listen
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(format!("{prefix}.request_timeout_secs must be at least 1"));
        }
        if self.max_retry_secs == 0 {
            return Err(format!("{prefix}.max_retry_secs must be at least 1"));
        }
        Ok(())
    }

    /// The retry policy of API calls.
    pub fn retry_policy(&self) -> socialcrm_schemas::retry::RetryPolicy {
        socialcrm_schemas::retry::RetryPolicy {
            initial_ms: 500,
            max_interval_ms: self.retry_max_interval_ms.max(1),
            max_elapsed_secs: self.max_retry_secs,
            ..Default::default()
        }
    }

    pub fn state_path(&self) -> PathBuf {
        PathBuf::from(&self.state_dir)
    }
}

/// A secret (API token, key). Written in the config as `"${ENV_VAR}"` or as
/// `{ file = "/run/secrets/token" }` (trailing newline removed). `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // a visitor (not an untagged enum) so that serde's own "missing field `x`"
        // error for an absent key reaches the user unchanged
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string (e.g. \"${TOKEN_VAR}\") or { file = \"/path/to/secret\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("secret is empty"));
                }
                Ok(Secret(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Secret, A::Error> {
                let mut file: Option<String> = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k != "file" {
                        return Err(serde::de::Error::unknown_field(&k, &["file"]));
                    }
                    file = Some(map.next_value()?);
                }
                let file = file.ok_or_else(|| serde::de::Error::missing_field("file"))?;
                let s = std::fs::read_to_string(&file)
                    .map_err(|e| {
                        serde::de::Error::custom(format!("cannot read secret file {file}: {e}"))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if s.trim().is_empty() {
                    return Err(serde::de::Error::custom(format!(
                        "secret file {file} is empty"
                    )));
                }
                Ok(Secret(s))
            }
        }
        d.deserialize_any(V)
    }
}

/// Splits an instance table into its runtime settings and the type's own table.
pub fn split_runtime(
    prefix: &str,
    mut table: toml::Table,
) -> Result<(RuntimeSettings, toml::Table), String> {
    let mut rt = toml::Table::new();
    for k in RUNTIME_KEYS {
        if let Some(v) = table.remove(*k) {
            rt.insert((*k).to_string(), v);
        }
    }
    let settings: RuntimeSettings = toml::Value::Table(rt)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{prefix}: {}", e.message().trim()))?;
    settings.validate(prefix)?;
    Ok((settings, table))
}

/// Reads a type's own config from its table; errors name the key.
pub fn parse_source_config<T: serde::de::DeserializeOwned>(
    prefix: &str,
    table: toml::Table,
) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{prefix}: {}", e.message().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_keys_are_split_and_checked() {
        let t: toml::Table =
            toml::from_str("poll_interval_secs = 5\nshop = \"x\"\n").expect("toml");
        let (rt, rest) = split_runtime("connectors.a", t).expect("split");
        assert_eq!(rt.poll_interval_secs, 5);
        assert_eq!(rest.len(), 1);
        let t: toml::Table = toml::from_str("poll_interval_secs = 0\n").expect("toml");
        let e = split_runtime("connectors.a", t).expect_err("zero");
        assert!(e.contains("connectors.a.poll_interval_secs"), "{e}");
    }

    #[test]
    fn secrets_from_value_or_file_never_debug_printed() {
        #[derive(Debug, Deserialize)]
        struct C {
            token: Secret,
        }
        let c: C = toml::from_str("token = \"abc123\"").expect("value");
        assert_eq!(c.token.expose(), "abc123");
        assert!(!format!("{c:?}").contains("abc123"));
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tok");
        std::fs::write(&f, "from-file\n").expect("write");
        let c: C =
            toml::from_str(&format!("token = {{ file = \"{}\" }}", f.display())).expect("file");
        assert_eq!(c.token.expose(), "from-file");
        let e = toml::from_str::<C>("token = { file = \"/nonexistent/x\" }").expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
        assert!(toml::from_str::<C>("token = \"\"").is_err());
        let e = toml::from_str::<C>("").expect_err("missing");
        assert!(e.to_string().contains("missing field `token`"), "{e}");
        let e = toml::from_str::<C>("token = 5").expect_err("number");
        assert!(e.to_string().contains("${TOKEN_VAR}"), "{e}");
    }
}
