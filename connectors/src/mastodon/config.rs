//! `[connectors.<instance>]` keys of a Mastodon connector.

use serde::{Deserialize, Serialize};
use socialcrm_schemas::{IdType, Normalizer};

use crate::runtime::config::Secret;

/// Notification types the connector maps (`types` may list any of them).
pub const SUPPORTED_TYPES: [&str; 5] = ["mention", "reblog", "favourite", "follow", "status"];

/// Largest `limit` Mastodon accepts on `GET /api/v1/notifications` (since 4.1).
pub const MAX_PAGE_SIZE: u32 = 80;

/// Configuration of one Mastodon connector instance (one brand account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the Mastodon server the brand account lives on, e.g.
    /// `https://mastodon.social`. `http://` is accepted for loopback hosts only
    /// (local tests): the token must not travel in clear text.
    pub instance_url: String,
    /// The brand account's access token (scopes `read:notifications
    /// read:statuses read:accounts`, or `read`). Written `"${MASTODON_TOKEN}"` or
    /// `{ file = "/run/secrets/mastodon" }`. Required.
    #[serde(default = "missing_secret")]
    pub access_token: Secret,
    /// Notification types to pull (`mention`, `reblog`, `favourite`, `follow`,
    /// `status`); sent as `types[]`.
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// Notifications per request (`limit`), 1 to 80.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The server's domain as it appears in handles (`@user@<domain>`), event ids
    /// and `source`. Empty: asked once from the server (`GET /api/v2/instance`,
    /// `/api/v1/instance` on servers older than 4.0). Set it to skip that call.
    #[serde(default)]
    pub domain: String,
    /// Longest status text kept in `properties.text` (characters of plain text).
    #[serde(default = "default_max_text_chars")]
    pub max_text_chars: usize,
}

/// Lets a missing `access_token` reach [`Config::validate`], which names it.
fn missing_secret() -> Secret {
    Secret::new("")
}
pub(crate) fn default_types() -> Vec<String> {
    SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect()
}
/// 80, Mastodon's maximum since 4.1 (its own default is 40): every request
/// counts against the server's rate limit (300 per 5 minutes by default), so a
/// full page doubles what a sync gets per request. Older servers answer at most
/// 30, which the walk handles.
pub fn default_page_size() -> u32 {
    80
}
fn default_max_text_chars() -> usize {
    2000
}

impl Config {
    /// Checks values; errors name the field under `prefix` (`connectors.brand`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(self.instance_url.trim()).map_err(|e| {
            format!(
                "{prefix}.instance_url: `{}` is not a URL like https://mastodon.social ({e})",
                self.instance_url
            )
        })?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(format!(
                "{prefix}.instance_url: `{}` has no host",
                self.instance_url
            ));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => {
                return Err(format!(
                    "{prefix}.instance_url: `{}` must use https:// (the access token would travel in clear text)",
                    self.instance_url
                ))
            }
            other => {
                return Err(format!(
                    "{prefix}.instance_url: scheme `{other}` is not http(s)"
                ))
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{prefix}.instance_url: `{}` must be the server's base URL, without query or fragment",
                self.instance_url
            ));
        }
        if self.access_token.expose().trim().is_empty() {
            return Err(format!(
                "{prefix}.access_token is required: the brand account's token, e.g. \"${{MASTODON_TOKEN}}\""
            ));
        }
        if self.types.is_empty() {
            return Err(format!(
                "{prefix}.types must list at least one of {}",
                SUPPORTED_TYPES.join(", ")
            ));
        }
        for (i, t) in self.types.iter().enumerate() {
            if !SUPPORTED_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "{prefix}.types: unknown notification type `{t}` (supported: {})",
                    SUPPORTED_TYPES.join(", ")
                ));
            }
            if self.types[..i].contains(t) {
                return Err(format!("{prefix}.types: `{t}` is listed twice"));
            }
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(format!(
                "{prefix}.page_size must be between 1 and {MAX_PAGE_SIZE} (Mastodon's maximum), not {}",
                self.page_size
            ));
        }
        if !self.domain.is_empty() && check_domain(&self.domain).is_err() {
            return Err(format!(
                "{prefix}.domain: `{}` is not a domain name like mastodon.social",
                self.domain
            ));
        }
        if self.max_text_chars == 0 || self.max_text_chars > 20_000 {
            return Err(format!(
                "{prefix}.max_text_chars must be between 1 and 20000, not {}",
                self.max_text_chars
            ));
        }
        Ok(())
    }

    /// `instance_url` without a trailing slash.
    pub fn base_url(&self) -> String {
        self.instance_url.trim().trim_end_matches('/').to_string()
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A domain is valid when a handle on it is (same rules as identifiers).
pub(crate) fn check_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim();
    if d.contains('/') || d.contains('@') || d.contains(':') {
        return Err(format!("`{d}` is not a bare domain name"));
    }
    let handle = Normalizer::default()
        .normalize_value(IdType::Mastodon, &format!("@x@{d}"))
        .map_err(|e| e.to_string())?;
    Ok(handle.trim_start_matches("@x@").to_string())
}
