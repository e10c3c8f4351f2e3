//! `[connectors.<instance>]` keys of a Shopify store.

use serde::{Deserialize, Serialize};

use super::client::{
    customers_query_cost, orders_query_cost, MAX_PAGE_SIZE, MAX_QUERY_COST, REFUNDS_PER_ORDER,
};
use crate::runtime::config::Secret;

/// One Shopify store, read through the GraphQL Admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store's permanent `myshopify.com` domain (`eu-store.myshopify.com`), not a
    /// custom domain. It is also the account scope of events (`shopify:<shop>`) and of
    /// customer identifiers (`shopify:<shop>/<customer id>`).
    pub shop: String,
    /// Admin API access token of an app installed on the store with the
    /// `read_customers` and `read_orders` scopes (sent as `X-Shopify-Access-Token`).
    /// Required (optional in the type only so that a missing key is reported by name).
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// GraphQL Admin API version (`YYYY-MM`, a stable quarterly release).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Base URL of the API; empty means `https://<shop>`. Tests point it at a fake.
    #[serde(default)]
    pub api_url: String,
    /// Customers per page (1-250; the page's query cost must stay under Shopify's
    /// single-query limit of 1000 points, which caps it at 199).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Orders per page (1-250; limited by the query cost together with
    /// `line_items_per_order`).
    #[serde(default = "default_orders_page_size")]
    pub orders_page_size: u32,
    /// Line items fetched with each order; orders with more are completed with
    /// follow-up queries.
    #[serde(default = "default_line_items_per_order")]
    pub line_items_per_order: u32,
    /// Each new sync of a stream starts this many seconds before the newest
    /// `updatedAt` already synced, so that objects Shopify's search index saw late
    /// are not missed (replays keep their event ids and are deduplicated).
    #[serde(default = "default_overlap_secs")]
    pub overlap_secs: u64,
    /// Also map orders Shopify flags as test orders (`test: true`); by default they
    /// are skipped, so that test checkouts do not count as revenue.
    #[serde(default)]
    pub include_test_orders: bool,
    /// When a walk reads through a bulk operation (`bulkOperationRunQuery`, one
    /// JSONL file) instead of paged queries: `auto` for large reads (a stream that
    /// never completed a walk, a `--since` backfill, or one whose last completed
    /// walk is older than `bulk_threshold_secs`), `always`, or `never`.
    #[serde(default)]
    pub bulk: BulkMode,
    /// With `bulk = "auto"`: a stream whose last completed walk started longer ago
    /// than this is read with a bulk operation.
    #[serde(default = "default_bulk_threshold_secs")]
    pub bulk_threshold_secs: u64,
    /// Objects (customers, or orders with their line items) per runtime page when a
    /// bulk operation's result is read.
    #[serde(default = "default_bulk_page_size")]
    pub bulk_page_size: u32,
}

/// When a walk uses a bulk operation (see [`Config::bulk`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum BulkMode {
    /// Backfills and long-unsynced streams only; incremental syncs stay paged.
    #[default]
    Auto,
    /// Every walk.
    Always,
    /// Paged queries only.
    Never,
}

pub fn default_api_version() -> String {
    "2026-10".into()
}
pub fn default_page_size() -> u32 {
    100
}
fn default_orders_page_size() -> u32 {
    8
}
fn default_line_items_per_order() -> u32 {
    10
}
fn default_overlap_secs() -> u64 {
    60
}
fn default_bulk_threshold_secs() -> u64 {
    86_400
}
pub fn default_bulk_page_size() -> u32 {
    250
}
impl TryFrom<String> for BulkMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(BulkMode::Auto),
            "always" => Ok(BulkMode::Always),
            "never" => Ok(BulkMode::Never),
            other => Err(format!(
                "bulk must be \"auto\", \"always\" or \"never\", not `{other}`"
            )),
        }
    }
}

/// Largest `bulk_page_size`: a page is mapped in memory at once.
const MAX_BULK_PAGE_SIZE: u32 = 5_000;

/// True for `name.myshopify.com` with a valid store handle.
fn is_myshopify_domain(s: &str) -> bool {
    let Some(handle) = s.strip_suffix(".myshopify.com") else {
        return false;
    };
    !handle.is_empty()
        && handle.len() <= 63
        && !handle.starts_with('-')
        && !handle.ends_with('-')
        && handle
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Config {
    /// Checks values; errors name the field as `{prefix}.<field>`.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.access_token.is_none() {
            return Err(format!(
                "{prefix}.access_token is required: the store's Admin API access token, e.g. access_token = \"${{SHOPIFY_TOKEN}}\""
            ));
        }
        if !is_myshopify_domain(&self.shop) {
            return Err(format!(
                "{prefix}.shop: `{}` is not a store domain like `eu-store.myshopify.com` (use the permanent myshopify.com domain in lower case, without https:// or a path; custom domains do not serve the Admin API)",
                self.shop
            ));
        }
        let v = self.api_version.as_bytes();
        let version_ok = v.len() == 7
            && v[..4].iter().all(u8::is_ascii_digit)
            && v[4] == b'-'
            && matches!(&self.api_version[5..], "01" | "04" | "07" | "10");
        let recent = version_ok
            && (
                self.api_version[..4].parse::<u32>().unwrap_or(0),
                &self.api_version[5..],
            ) >= (2025, "04");
        if version_ok && !recent {
            return Err(format!(
                "{prefix}.api_version: `{}` is too old: the connector reads Customer.defaultEmailAddress and defaultPhoneNumber, added in 2025-04 (use `{}`)",
                self.api_version,
                default_api_version()
            ));
        }
        if !version_ok {
            return Err(format!(
                "{prefix}.api_version: `{}` is not a stable Admin API version like `{}` (YYYY-01, -04, -07 or -10)",
                self.api_version,
                default_api_version()
            ));
        }
        if !self.api_url.is_empty() {
            match reqwest::Url::parse(&self.api_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
                _ => {
                    return Err(format!(
                        "{prefix}.api_url: `{}` is not an http(s) base URL like https://{}",
                        self.api_url, self.shop
                    ))
                }
            }
        }
        for (key, v) in [
            ("page_size", self.page_size),
            ("orders_page_size", self.orders_page_size),
            ("line_items_per_order", self.line_items_per_order),
        ] {
            if v == 0 || v > MAX_PAGE_SIZE {
                return Err(format!(
                    "{prefix}.{key} must be between 1 and {MAX_PAGE_SIZE} (Shopify's largest page), not {v}"
                ));
            }
        }
        let cost = customers_query_cost(self.page_size);
        if cost > MAX_QUERY_COST {
            let max = (1..=MAX_PAGE_SIZE)
                .rev()
                .find(|n| customers_query_cost(*n) <= MAX_QUERY_COST)
                .unwrap_or(1);
            return Err(format!(
                "{prefix}.page_size: {} customers per page make a query of about {cost} points, over Shopify's single-query limit of {MAX_QUERY_COST}; use at most {max}",
                self.page_size
            ));
        }
        let cost = orders_query_cost(self.orders_page_size, self.line_items_per_order);
        if cost > MAX_QUERY_COST {
            let max = (1..=MAX_PAGE_SIZE)
                .rev()
                .find(|n| orders_query_cost(*n, self.line_items_per_order) <= MAX_QUERY_COST);
            let hint = match max {
                Some(m) => format!(
                    "with line_items_per_order = {} use orders_page_size <= {m}",
                    self.line_items_per_order
                ),
                None => "lower line_items_per_order".to_string(),
            };
            return Err(format!(
                "{prefix}.orders_page_size: {} orders per page with {} line items ({prefix}.line_items_per_order) and {REFUNDS_PER_ORDER} refunds each make a query of about {cost} points, over Shopify's single-query limit of {MAX_QUERY_COST}; {hint}",
                self.orders_page_size, self.line_items_per_order
            ));
        }
        if self.bulk_page_size == 0 || self.bulk_page_size > MAX_BULK_PAGE_SIZE {
            return Err(format!(
                "{prefix}.bulk_page_size must be between 1 and {MAX_BULK_PAGE_SIZE}, not {}",
                self.bulk_page_size
            ));
        }
        if self.overlap_secs > 86_400 {
            return Err(format!(
                "{prefix}.overlap_secs must be at most 86400 (one day), not {}",
                self.overlap_secs
            ));
        }
        Ok(())
    }

    /// The token (empty when missing; `validate` refuses that).
    pub fn token(&self) -> &str {
        self.access_token.as_ref().map_or("", Secret::expose)
    }

    /// The GraphQL endpoint: `<api_url or https://shop>/admin/api/<version>/graphql.json`.
    pub fn endpoint(&self) -> String {
        let base = if self.api_url.is_empty() {
            format!("https://{}", self.shop)
        } else {
            self.api_url.trim_end_matches('/').to_string()
        };
        format!("{base}/admin/api/{}/graphql.json", self.api_version)
    }
}
