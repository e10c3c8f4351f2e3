//! `socialcrm serve`: the marketers' read-only HTTP API (JSON, OpenAPI at
//! `/openapi.json`) and web page, on one listener (docs/api.md, docs/marketers.md).

pub mod filter;
mod http;
pub mod model;
pub mod queries;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;

pub use http::router;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Profiles, search, segment counts and previews, leaderboards, reports.
    Read,
    /// Segment exports (CSV).
    Export,
    /// Administrative operations (erasure; issue 7).
    Admin,
}

/// One API key. Write the key itself as `"${VAR}"` so it stays out of the file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who holds the key (shown in logs instead of the key).
    pub name: String,
    pub key: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Read]
}

/// A campaign's cost, for ROI in the campaign report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignCost {
    pub cost: f64,
    pub currency: String,
}

/// Where profile lookups (`/v1/profiles/lookup`, `/v1/profiles/{customer_id}`) are
/// answered from (docs/api.md "Read model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadModelMode {
    /// An in-memory model of every live profile, loaded at start and kept current
    /// by polling ClickHouse; misses go to ClickHouse.
    Memory,
    /// Point queries to ClickHouse for every lookup (small memory budgets).
    Clickhouse,
}

/// `[api]` of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the API and web page.
    pub listen: String,
    /// Keys and their scopes; requests without a valid key get 401.
    pub keys: Vec<ApiKey>,
    /// Most rows one CSV export may hold.
    pub max_export_rows: u64,
    /// Most rows one page (search, preview, leaderboard) may hold.
    pub max_page_rows: u64,
    /// Events shown with a profile.
    pub recent_events: u64,
    /// Cost per campaign name, e.g. `spring_sale = { cost = 500.0, currency = "EUR" }`.
    pub campaign_costs: BTreeMap<String, CampaignCost>,
    /// `memory` (default) or `clickhouse`: where profile lookups are answered from.
    pub read_model: ReadModelMode,
    /// How often the in-memory read model asks ClickHouse for changes (ms).
    pub read_model_poll_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8089".into(),
            keys: vec![ApiKey {
                name: "local".into(),
                key: "local-api-key".into(),
                scopes: vec![Scope::Read, Scope::Export],
            }],
            max_export_rows: 1_000_000,
            max_page_rows: 1000,
            recent_events: 20,
            campaign_costs: BTreeMap::new(),
            read_model: ReadModelMode::Memory,
            read_model_poll_ms: 1000,
        }
    }
}

impl ApiConfig {
    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if k.key.len() < 8 {
                return Err(format!(
                    "api.keys[{i}] ({}): `key` must be at least 8 characters",
                    k.name
                ));
            }
            if k.scopes.is_empty() {
                return Err(format!("api.keys[{i}] ({}): `scopes` is empty", k.name));
            }
            if !names.insert(k.name.as_str()) {
                return Err(format!(
                    "api.keys[{i}]: the name `{}` is used twice",
                    k.name
                ));
            }
        }
        if self.max_page_rows == 0 || self.max_export_rows == 0 {
            return Err("api.max_page_rows and api.max_export_rows must be at least 1".into());
        }
        if !(50..=3_600_000).contains(&self.read_model_poll_ms) {
            return Err(format!(
                "api.read_model_poll_ms must be from 50 to 3600000, got {}",
                self.read_model_poll_ms
            ));
        }
        if self.recent_events > u64::from(u16::MAX) {
            return Err(format!(
                "api.recent_events must be at most {}, got {}",
                u16::MAX,
                self.recent_events
            ));
        }
        for (name, c) in &self.campaign_costs {
            if !(c.cost.is_finite() && c.cost >= 0.0) {
                return Err(format!(
                    "api.campaign_costs.{name}.cost must be a number ≥ 0"
                ));
            }
        }
        Ok(())
    }
}

/// The queries of a config.
pub fn queries(cfg: &Config) -> Result<queries::Queries> {
    let normalizer = socialcrm_schemas::Normalizer::new(Some(&cfg.identity.default_phone_region))
        .context("identity.default_phone_region")?;
    Ok(queries::Queries {
        client: cfg.clickhouse.client(),
        normalizer: Arc::new(normalizer),
        hasher: cfg.privacy.hasher(),
        scoring: cfg.scoring.clone(),
        recent_events: cfg.api.recent_events,
        campaign_costs: cfg.api.campaign_costs.clone(),
    })
}

/// Runs the API and web page until `shutdown`.
pub async fn serve(
    cfg: &Config,
    metrics: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if cfg.api.keys.is_empty() {
        anyhow::bail!("api.keys is empty: configure at least one key (docs/api.md)");
    }
    let q = queries(cfg)?;
    let model = match cfg.api.read_model {
        ReadModelMode::Memory => {
            let m = Arc::new(model::ReadModel::new(
                q.clone(),
                std::time::Duration::from_millis(cfg.api.read_model_poll_ms),
            ));
            tokio::spawn(m.clone().run());
            Some(m)
        }
        ReadModelMode::Clickhouse => None,
    };
    let app = router(model::Profiles { q, model }, cfg).merge(metrics);
    let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {}", cfg.api.listen))?;
    tracing::info!(listen = %cfg.api.listen, keys = cfg.api.keys.len(), "API and web page listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server")
}
