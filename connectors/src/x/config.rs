//! `[connectors.<instance>]` keys of an X connector.

use serde::{Deserialize, Deserializer, Serialize};

use crate::runtime::config::Secret;

/// What an X connector instance reads: the mentions of one brand account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the X API (tests point it at a fake server).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// App-only OAuth 2.0 Bearer Token of an App attached to a Project with access
    /// to the v2 user mention timeline (`"${X_BEARER_TOKEN}"` or `{ file = "..." }`).
    #[serde(deserialize_with = "secret")]
    pub bearer_token: Secret,
    /// Numeric user id of the brand account whose mentions are pulled (not the
    /// @handle: X ids never change, handles do). Written as a string or a number.
    #[serde(deserialize_with = "string_or_number")]
    pub user_id: String,
    /// Posts asked for per request (X allows 5–100).
    #[serde(default = "default_max_results")]
    pub max_results: u32,
}

fn default_api_url() -> String {
    "https://api.x.com".into()
}

fn default_max_results() -> u32 {
    100
}

/// Smallest and largest `max_results` the mentions endpoint accepts.
pub const MAX_RESULTS_RANGE: (u32, u32) = (5, 100);

/// Through a function so that a missing key is reported by its name (`Secret`'s
/// own error for an absent value does not name it).
fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Secret::deserialize(d)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected the numeric user id, e.g. \"2244994945\"")
    })? {
        Raw::S(s) => Ok(s),
        Raw::N(n) => Ok(n.to_string()),
    }
}

impl Config {
    /// Checks values; errors name the field under `prefix` (`connectors.x_brand`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        match reqwest::Url::parse(&self.api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(format!(
                    "{prefix}.api_url: `{}` is not an http(s) URL like https://api.x.com",
                    self.api_url
                ))
            }
        }
        let id = self.user_id.trim();
        if id.is_empty()
            || id.len() > 20
            || !id.chars().all(|c| c.is_ascii_digit())
            || id.chars().all(|c| c == '0')
        {
            return Err(format!(
                "{prefix}.user_id: `{}` is not a numeric X user id (the brand account's id, e.g. \"2244994945\", not its @handle; look it up with GET /2/users/by/username/<handle>)",
                self.user_id
            ));
        }
        let (lo, hi) = MAX_RESULTS_RANGE;
        if !(lo..=hi).contains(&self.max_results) {
            return Err(format!(
                "{prefix}.max_results must be between {lo} and {hi} (got {})",
                self.max_results
            ));
        }
        Ok(())
    }

    /// The brand's user id in canonical form (no leading zeros), as X identifiers
    /// are normalised.
    pub fn brand_id(&self) -> String {
        let t = self.user_id.trim().trim_start_matches('0');
        if t.is_empty() {
            "0".to_string()
        } else {
            t.to_string()
        }
    }
}
