//! Shopify connector: customers and orders of one store through the GraphQL Admin
//! API (`POST https://<shop>/admin/api/<version>/graphql.json`, header
//! `X-Shopify-Access-Token`).
//!
//! Two streams, each with its own cursor ([`StreamCursor`]): `customers` and
//! `orders`, both read as "updated at or after the watermark" (`query:
//! "updated_at:>='…'"`, `sortKey: UPDATED_AT`), page after page with the
//! connection's `endCursor`. When a walk reaches `hasNextPage: false`, the
//! watermark moves to the newest `updatedAt` seen (minus `overlap_secs`). The
//! filter is inclusive, so objects sharing a timestamp are never lost; what is read
//! twice keeps its deterministic `event_id`.
//!
//! Cost-based throttling is honoured twice: before each query the connector waits
//! until the last reported bucket (`extensions.cost.throttleStatus`) holds the
//! query's requested cost, and a `THROTTLED` answer (an HTTP 200) is retried after
//! the wait it implies (see [`client`]).
//!
//! Large reads (backfills, streams not synced for a long time; `bulk`) go through
//! a bulk operation instead of pages: see [`bulk`].

pub mod bulk;
pub mod client;
pub mod config;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
pub mod mapping;
#[cfg(test)]
mod tests;
pub mod typed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use socialcrm_schemas::Normalizer;

use crate::runtime::config::RuntimeSettings;
use crate::runtime::http::{ApiClient, ApiError, Request};
use crate::runtime::{Deferred, DeferredOutput, Page, SourceError};
use bulk::BulkCursor;
use client::{Answer, GqlError, PageInfo, Throttle};
pub use config::Config;
use mapping::{MapCtx, SkipReason};

/// Stream names.
pub const CUSTOMERS: &str = "customers";
pub const ORDERS: &str = "orders";

/// The stored position of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCursor {
    /// The watermark: objects updated at or after this time are read (none: all).
    #[serde(default)]
    pub updated_at_min: Option<DateTime<Utc>>,
    /// `endCursor` of the last page stored of the walk in progress.
    #[serde(default)]
    pub after: Option<String>,
    /// Newest `updatedAt` seen so far in the walk in progress.
    #[serde(default)]
    pub max_updated_at: Option<DateTime<Utc>>,
    /// When the stream last caught up (a bulk walk: its operation's `createdAt`);
    /// `bulk = "auto"` reads the next walk in bulk when this is old or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<DateTime<Utc>>,
    /// The bulk operation the walk in progress reads, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkCursor>,
}

impl StreamCursor {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The cursor after a page: the next page of the same walk, or (at the end of
    /// the walk, at `now`) a new walk from the newest `updatedAt` seen minus
    /// `overlap`.
    pub fn advance(
        &self,
        page_max: Option<DateTime<Utc>>,
        info: &PageInfo,
        overlap: chrono::Duration,
        now: DateTime<Utc>,
    ) -> (StreamCursor, bool) {
        let max = self.max_updated_at.max(page_max);
        if info.has_next_page {
            if let Some(end) = &info.end_cursor {
                return (
                    StreamCursor {
                        after: Some(end.clone()),
                        max_updated_at: max,
                        bulk: None,
                        ..self.clone()
                    },
                    false,
                );
            }
        }
        let next_min = match max {
            Some(m) => self.updated_at_min.max(Some(m - overlap)),
            None => self.updated_at_min,
        };
        (
            StreamCursor {
                updated_at_min: next_min,
                after: None,
                max_updated_at: None,
                synced_at: Some(now),
                bulk: None,
            },
            true,
        )
    }
}

/// [`MapCtx`] with owned fields.
struct OwnedCtx {
    shop: String,
    source: String,
    received_at: DateTime<Utc>,
    include_test_orders: bool,
    normalizer: Normalizer,
}

impl OwnedCtx {
    fn ctx(&self) -> MapCtx<'_> {
        MapCtx {
            shop: &self.shop,
            source: &self.source,
            received_at: self.received_at,
            include_test_orders: self.include_test_orders,
            normalizer: &self.normalizer,
        }
    }
}

/// The queries, built once.
struct Queries {
    customers: String,
    orders: String,
    line_items: String,
    refunds: String,
    bulk_run: String,
    bulk_operation: String,
}

/// Maps customer nodes into `out` (paged and bulk pages).
fn map_customers_into(nodes: &[Value], ctx: &MapCtx<'_>, out: &mut DeferredOutput) {
    for node in nodes {
        map_customer_into(node, ctx, out);
    }
}

fn map_customer_into(node: &Value, ctx: &MapCtx<'_>, out: &mut DeferredOutput) {
    match mapping::map_customer(node, ctx) {
        Ok(ev) => out.events.push(ev),
        Err(r) => out.rejected.push(r),
    }
}

/// Maps order nodes and counts the skipped ones (paged and bulk pages).
#[derive(Clone)]
struct OrderMapper {
    instance: String,
    skipped_total: Arc<Mutex<BTreeMap<SkipReason, u64>>>,
}

impl OrderMapper {
    fn map_into(&self, nodes: &[Value], ctx: &MapCtx<'_>, out: &mut DeferredOutput) {
        let mut skipped: Vec<SkipReason> = Vec::new();
        for node in nodes {
            self.record(
                mapping::map_order(node, ctx),
                || order_gid(node),
                out,
                &mut skipped,
            );
        }
        self.count_skipped(skipped);
    }

    /// Adds one order's events and rejections to `out`, and its skip to `skipped`.
    fn record(
        &self,
        mapped: mapping::OrderOutcome,
        order: impl FnOnce() -> String,
        out: &mut DeferredOutput,
        skipped: &mut Vec<SkipReason>,
    ) {
        out.events.extend(mapped.events);
        out.rejected.extend(mapped.rejected);
        if let Some(reason) = mapped.skipped {
            tracing::debug!(connector = %self.instance, order = %order(), reason = reason.as_str(),
                "order skipped");
            skipped.push(reason);
        }
    }

    fn count_skipped(&self, skipped: Vec<SkipReason>) {
        if !skipped.is_empty() {
            let mut total = self.skipped_total.lock().unwrap_or_else(|e| e.into_inner());
            for reason in skipped {
                *total.entry(reason).or_default() += 1;
                metrics::counter!("socialcrm_connector_skipped_objects_total",
                    "connector" => self.instance.clone(), "stream" => ORDERS, "reason" => reason.as_str())
                .increment(1);
            }
        }
    }
}

/// An order's `id` as given (for logs).
fn order_gid(node: &Value) -> String {
    node.get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// A Shopify store.
pub struct Source {
    instance: String,
    cfg: Config,
    /// `shopify:<shop>`.
    source: String,
    endpoint: String,
    client: ApiClient,
    throttle: Arc<Throttle>,
    normalizer: Normalizer,
    queries: Queries,
    /// Orders skipped, by reason (counted by the deferred mappings).
    skipped: Arc<Mutex<BTreeMap<SkipReason, u64>>>,
    /// Downloads of bulk results (no token: the result URL is a signed link).
    download: ApiClient,
    /// Per stream, the bulk result being read.
    readers: HashMap<String, bulk::Reader>,
    /// Streams whose current walk is read paged after a bulk operation failed.
    paged_fallback: HashSet<String>,
}

impl Source {
    pub fn new(instance: &str, cfg: Config, settings: &RuntimeSettings) -> Result<Self, ApiError> {
        let auth_fix = format!(
            "the Admin API access token was refused: use the Admin API access token of an app installed on {shop} with the read_customers and read_orders scopes (plus read_all_orders for orders older than 60 days), e.g. a custom app, and set connectors.{instance}.access_token to it",
            shop = cfg.shop
        );
        let throttle = Arc::new(Throttle::default());
        let client = ApiClient::new(
            instance,
            &auth_fix,
            settings.retry_policy(),
            Duration::from_secs(settings.request_timeout_secs),
        )?
        .redact(cfg.token())
        .with_inspector(client::inspector(instance.to_string(), throttle.clone()));
        let download = ApiClient::streaming(
            instance,
            "the bulk operation's result link was refused",
            settings.retry_policy(),
            Duration::from_secs(settings.request_timeout_secs),
        )?;
        let queries = Queries {
            customers: client::customers_query(),
            orders: client::orders_query(),
            line_items: client::order_line_items_query(),
            refunds: client::order_refunds_query(),
            bulk_run: client::bulk_run_mutation(&cfg.api_version),
            bulk_operation: client::bulk_operation_query(&cfg.api_version),
        };
        Ok(Source {
            instance: instance.to_string(),
            source: format!("shopify:{}", cfg.shop),
            endpoint: cfg.endpoint(),
            cfg,
            client,
            throttle,
            normalizer: Normalizer::default(),
            queries,
            skipped: Arc::default(),
            download,
            readers: HashMap::new(),
            paged_fallback: HashSet::new(),
        })
    }

    /// Orders skipped so far, by reason (of the pages mapped so far).
    pub fn skipped(&self) -> BTreeMap<SkipReason, u64> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn payload(&self, message: String) -> SourceError {
        SourceError::Api(ApiError::Payload {
            source_name: self.instance.clone(),
            url: self.endpoint.clone(),
            message,
        })
    }

    /// GraphQL errors of an answer (other than the throttle, which the client
    /// retries) as a clear, permanent error.
    fn query_error(&self, stream: &str, op: &str, errors: &[GqlError]) -> SourceError {
        let text = client::coded_messages(
            errors
                .iter()
                .map(|e| (e.code.as_deref(), e.message.as_str())),
        );
        if let Some(denied) = errors
            .iter()
            .find(|e| e.code.as_deref() == Some("ACCESS_DENIED"))
        {
            // the scope Shopify names (`read_customers` access scope.), else the
            // stream's own
            let named = denied
                .required_access
                .iter()
                .chain(std::iter::once(&denied.message))
                .find_map(|t| {
                    t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .find(|w| w.starts_with("read_") || w.starts_with("write_"))
                        .map(str::to_string)
                });
            let scope = named.unwrap_or_else(|| {
                if stream == CUSTOMERS {
                    "read_customers".to_string()
                } else {
                    "read_orders".to_string()
                }
            });
            let required = denied
                .required_access
                .as_deref()
                .map(|r| format!(" (Shopify requires: {r})"))
                .unwrap_or_default();
            return SourceError::Api(ApiError::Auth {
                source_name: self.instance.clone(),
                status: 200,
                url: format!("{} ({op}: GraphQL ACCESS_DENIED)", self.endpoint),
                fix: format!(
                    "Shopify denied access: {}{required}. The app's token lacks the `{scope}` scope (or the app has no access to protected customer data): grant read_customers and read_orders to the app, install the new version on {}, and set connectors.{}.access_token to the token it issues",
                    denied.message, self.cfg.shop, self.instance
                ),
            });
        }
        if errors
            .iter()
            .any(|e| e.code.as_deref() == Some("MAX_COST_EXCEEDED"))
        {
            return self.payload(format!(
                "{op}: the query costs more than Shopify allows ({text}); lower connectors.{i}.page_size, connectors.{i}.orders_page_size or connectors.{i}.line_items_per_order",
                i = self.instance
            ));
        }
        if errors
            .iter()
            .any(|e| e.code.as_deref() == Some("SHOP_INACTIVE"))
        {
            return self.payload(format!(
                "{op}: the shop {} is not active (frozen, paused or closed): {text}",
                self.cfg.shop
            ));
        }
        let hint = if text.contains("doesn't exist on type") || text.contains("undefinedField") {
            format!(
                " (a field this connector reads is missing in API version {}: check connectors.{}.api_version)",
                self.cfg.api_version, self.instance
            )
        } else {
            String::new()
        };
        self.payload(format!("{op}: GraphQL errors: {text}{hint}"))
    }

    /// One GraphQL call: waits for the bucket, posts, reads the answer's data.
    async fn query<T: DeserializeOwned>(
        &self,
        stream: &str,
        op: &str,
        query: &str,
        variables: Value,
        cost: u64,
    ) -> Result<T, SourceError> {
        if let Some(wait) = self.throttle.wait_before(cost) {
            tracing::info!(connector = %self.instance, operation = op, wait_ms = wait.as_millis() as u64,
                cost, "waiting for Shopify's query-cost bucket to refill");
            metrics::counter!("socialcrm_connector_rate_limit_waits_total",
                "connector" => self.instance.clone())
            .increment(1);
            tokio::time::sleep(wait).await;
        }
        let req = Request {
            method: Some(reqwest::Method::POST),
            headers: vec![(
                "X-Shopify-Access-Token".to_string(),
                self.cfg.token().to_string(),
            )],
            json_body: Some(json!({
                "query": query,
                "operationName": op,
                "variables": variables,
            })),
            ..Request::default()
        };
        let resp = self.client.call(&self.endpoint, &req).await?;
        let answer: Answer = resp.json(&self.instance)?;
        let errors = answer.errors();
        if !errors.is_empty() {
            return Err(self.query_error(stream, op, &errors));
        }
        match answer.data::<T>() {
            Some(Ok(data)) => Ok(data),
            Some(Err(e)) => {
                Err(self.payload(format!("{op}: `data` is not what the query selects: {e}")))
            }
            None => Err(self.payload(format!("{op}: the answer has neither `data` nor `errors`"))),
        }
    }

    fn parse_cursor(&self, stream: &str, cursor: &Value) -> Result<StreamCursor, SourceError> {
        if cursor.is_null() {
            return Ok(StreamCursor::default());
        }
        serde_json::from_value(cursor.clone()).map_err(|e| SourceError::CursorInvalid {
            message: format!(
                "{}: the stored {stream} cursor is not a Shopify cursor ({e}); reading everything again",
                self.instance
            ),
            restart_from: StreamCursor::default().to_value(),
        })
    }

    fn filter(c: &StreamCursor) -> Value {
        match &c.updated_at_min {
            Some(t) => Value::String(client::updated_since_filter(t)),
            None => Value::Null,
        }
    }

    /// An `after` cursor Shopify no longer accepts restarts the walk (same watermark).
    fn cursor_refused(&self, stream: &str, c: &StreamCursor, e: SourceError) -> SourceError {
        match e {
            SourceError::Api(ApiError::Payload { message, .. })
                if c.after.is_some() && message.to_ascii_lowercase().contains("cursor") =>
            {
                SourceError::CursorInvalid {
                    message: format!(
                        "{}: Shopify refused the stored {stream} page cursor ({message}); the walk restarts from the watermark",
                        self.instance
                    ),
                    restart_from: StreamCursor {
                        after: None,
                        ..c.clone()
                    }
                    .to_value(),
                }
            }
            other => other,
        }
    }

    /// What the deferred mappings need, owned (they run on another worker).
    fn owned_ctx(&self, received_at: DateTime<Utc>) -> OwnedCtx {
        OwnedCtx {
            shop: self.cfg.shop.clone(),
            source: self.source.clone(),
            received_at,
            include_test_orders: self.cfg.include_test_orders,
            normalizer: self.normalizer.clone(),
        }
    }

    fn order_counter(&self) -> OrderMapper {
        OrderMapper {
            instance: self.instance.clone(),
            skipped_total: self.skipped.clone(),
        }
    }

    /// The next page of a walk with paged queries.
    async fn fetch_paged(&mut self, stream: &str, c: StreamCursor) -> Result<Page, SourceError> {
        let page = match stream {
            CUSTOMERS => self.fetch_customers(c).await?,
            ORDERS => self.fetch_orders(c).await?,
            other => return Err(self.payload(format!("unknown stream `{other}`"))),
        };
        if page.caught_up {
            self.paged_fallback.remove(stream);
        }
        Ok(page)
    }

    fn overlap(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.cfg.overlap_secs.min(86_400) as i64)
    }

    async fn fetch_customers(&mut self, c: StreamCursor) -> Result<Page, SourceError> {
        let first = self.cfg.page_size;
        let vars = json!({ "first": first, "after": c.after, "query": Self::filter(&c) });
        let data: client::CustomersData = self
            .query(
                CUSTOMERS,
                client::OP_CUSTOMERS,
                &self.queries.customers,
                vars,
                client::customers_query_cost(first),
            )
            .await
            .map_err(|e| self.cursor_refused(CUSTOMERS, &c, e))?;
        let conn = data.customers;
        let mut page = Page {
            objects: conn.nodes.len() as u64,
            ..Page::default()
        };
        let page_max = conn
            .nodes
            .iter()
            .map(mapping::node_updated_at)
            .max()
            .flatten();
        let owned = self.owned_ctx(Utc::now());
        let nodes = conn.nodes;
        page.deferred = Some(Deferred::new(move || {
            let mut out = DeferredOutput::default();
            map_customers_into(&nodes, &owned.ctx(), &mut out);
            out
        }));
        let (next, done) = c.advance(page_max, &conn.page_info, self.overlap(), Utc::now());
        page.position = next.max_updated_at.or(page_max).or(c.max_updated_at);
        page.cursor = next.to_value();
        page.caught_up = done;
        Ok(page)
    }

    /// Completes an order whose line items or refunds did not fit in the page.
    async fn complete_order(&self, node: &mut Value) -> Result<(), SourceError> {
        let Some(gid) = node.get("id").and_then(Value::as_str).map(str::to_string) else {
            return Ok(()); // rejected by the mapping
        };
        let mut info: PageInfo = node
            .pointer("/lineItems/pageInfo")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        while info.has_next_page {
            let Some(after) = info.end_cursor.clone() else {
                break;
            };
            let vars = json!({ "id": gid, "first": client::FOLLOWUP_LINE_ITEMS, "after": after });
            let data: client::OrderLineItemsData = self
                .query(
                    ORDERS,
                    client::OP_ORDER_LINE_ITEMS,
                    &self.queries.line_items,
                    vars,
                    client::line_items_query_cost(client::FOLLOWUP_LINE_ITEMS),
                )
                .await?;
            let Some(order) = data.order else {
                break; // deleted meanwhile: keep what the page had
            };
            if let Some(Value::Array(nodes)) = node.pointer_mut("/lineItems/nodes") {
                nodes.extend(order.line_items.nodes);
            }
            info = order.line_items.page_info;
        }
        let refunds = node
            .get("refunds")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if refunds >= client::REFUNDS_PER_ORDER as usize {
            let data: client::OrderRefundsData = self
                .query(
                    ORDERS,
                    client::OP_ORDER_REFUNDS,
                    &self.queries.refunds,
                    json!({ "id": gid }),
                    client::refunds_query_cost(),
                )
                .await?;
            if let (Some(order), Some(obj)) = (data.order, node.as_object_mut()) {
                obj.insert("refunds".into(), Value::Array(order.refunds));
            }
        }
        Ok(())
    }

    async fn fetch_orders(&mut self, c: StreamCursor) -> Result<Page, SourceError> {
        let first = self.cfg.orders_page_size;
        let line_items = self.cfg.line_items_per_order;
        let vars = json!({
            "first": first,
            "after": c.after,
            "query": Self::filter(&c),
            "lineItems": line_items,
            "refunds": client::REFUNDS_PER_ORDER,
        });
        let data: client::OrdersData = self
            .query(
                ORDERS,
                client::OP_ORDERS,
                &self.queries.orders,
                vars,
                client::orders_query_cost(first, line_items),
            )
            .await
            .map_err(|e| self.cursor_refused(ORDERS, &c, e))?;
        let mut conn = data.orders;
        for node in &mut conn.nodes {
            self.complete_order(node).await?;
        }
        let mut page = Page {
            objects: conn.nodes.len() as u64,
            ..Page::default()
        };
        let page_max = conn
            .nodes
            .iter()
            .map(mapping::node_updated_at)
            .max()
            .flatten();
        let owned = self.owned_ctx(Utc::now());
        let nodes = conn.nodes;
        let orders = self.order_counter();
        page.deferred = Some(Deferred::new(move || {
            let mut out = DeferredOutput::default();
            orders.map_into(&nodes, &owned.ctx(), &mut out);
            out
        }));
        let (next, done) = c.advance(page_max, &conn.page_info, self.overlap(), Utc::now());
        page.position = next.max_updated_at.or(page_max).or(c.max_updated_at);
        page.cursor = next.to_value();
        page.caught_up = done;
        Ok(page)
    }
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "shopify"
    }

    fn streams(&self) -> Vec<String> {
        vec![CUSTOMERS.to_string(), ORDERS.to_string()]
    }

    fn initial_cursor(&self, _stream: &str, since: Option<DateTime<Utc>>) -> Value {
        StreamCursor {
            updated_at_min: since,
            ..StreamCursor::default()
        }
        .to_value()
    }

    async fn fetch(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let mut page = self.fetch_unmapped(stream, cursor).await?;
        page.map_deferred();
        Ok(page)
    }

    /// The page's objects are mapped later, by the runtime, on another worker:
    /// the next page needs only the cursor.
    async fn fetch_unmapped(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let c = self.parse_cursor(stream, cursor)?;
        if stream != CUSTOMERS && stream != ORDERS {
            return Err(self.payload(format!("unknown stream `{stream}`")));
        }
        if let Some(b) = c.bulk.clone() {
            return self.fetch_bulk(stream, c, b).await;
        }
        if self.wants_bulk(stream, &c) {
            return self.start_bulk(stream, c).await;
        }
        self.fetch_paged(stream, c).await
    }
}
