//! WooCommerce REST API v3 connector: customers and orders (with refunds).
//!
//! Two streams:
//!
//! * `orders`: a *watermark walk* over `date_modified_gmt`. Every call asks for
//!   `modified_after = <watermark - 1 s>`, `orderby=modified`, `order=asc`,
//!   `dates_are_gmt=true`, from the first page; objects at or before the cursor
//!   position `(date_modified_gmt, id)` are skipped. A changed order moves to the
//!   end of the list, where the walk meets it again; nothing shifts under a page
//!   number, so nothing is skipped. When more orders share one second than a
//!   page holds, the cursor also counts how far into that second it got and the
//!   next call starts there (`offset`), checking that the first object it gets is
//!   one it has seen (else it starts the second again). Orders modified in the
//!   last `settle_secs` (server time, from the `Date` header) wait for the next
//!   poll, so a save that commits late cannot fall behind the watermark.
//! * `customers`: the endpoint has no `modified_after` (it lists WordPress users
//!   with `orderby` `id`/`include`/`name`/`registered_date` only; unknown
//!   parameters are ignored). The walk goes by ascending id with `offset`,
//!   re-reading a few already seen customers at each step to prove that no one
//!   was skipped when customers were deleted meanwhile; new customers get higher
//!   ids and are met at the end. Changes to existing customers are picked up by
//!   a new pass every `customer_rescan_hours` (unchanged customers map to the
//!   same `event_id`, so a pass only adds what changed).
//!
//! See `docs/connectors/woocommerce.md`.

pub mod mapping;
pub mod typed;
pub mod window;

#[cfg(any(test, feature = "testkit"))]
pub mod fake;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::runtime::config::{RuntimeSettings, Secret};
use crate::runtime::http::{ApiClient, ApiError, ApiResponse, Request};
use crate::runtime::{Deferred, DeferredOutput, Page, Rejected, SourceError};
use mapping::{Ctx, OrderMapped};

/// Stream of WordPress users with the customer role.
pub const CUSTOMERS: &str = "customers";
/// Stream of orders (and their refunds).
pub const ORDERS: &str = "orders";

/// Objects re-read at each step of an offset walk, to check the boundary.
pub const OVERLAP: u64 = 5;

/// `[connectors.<instance>]` of type `woocommerce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The shop's WordPress address, e.g. `https://shop.example.com` (a site in
    /// a sub-directory: `https://example.com/shop`). HTTPS is required: the
    /// REST API takes key and secret as HTTP Basic auth over HTTPS only.
    pub site_url: String,
    /// REST API consumer key (`ck_...`), Read permission. Required.
    #[serde(default)]
    pub consumer_key: Option<Secret>,
    /// REST API consumer secret (`cs_...`). Required.
    #[serde(default)]
    pub consumer_secret: Option<Secret>,
    /// Objects per request (`per_page`, 1-100).
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// Role of the users pulled as customers (`customer`, `subscriber`, ... or
    /// `all` for every user).
    #[serde(default = "default_customer_role")]
    pub customer_role: String,
    /// Hours between two full passes over the customers (to see changes to
    /// existing customers; the customers endpoint cannot filter by change time).
    #[serde(default = "default_customer_rescan_hours")]
    pub customer_rescan_hours: u64,
    /// Orders modified less than this long ago (shop server time) wait for the
    /// next poll, so that saves still committing are not passed by the watermark.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// Send key and secret as `consumer_key`/`consumer_secret` query parameters
    /// instead of the `Authorization` header (for servers that drop that header).
    #[serde(default)]
    pub query_string_auth: bool,
    /// Requests of one walk step sent at once (1-16) while `X-WP-Total` says
    /// more pages follow: consecutive windows of the list, each overlapping
    /// the one before by a few objects to prove nothing moved between them.
    /// 1 = one request at a time.
    #[serde(default = "default_concurrent_pages")]
    pub concurrent_pages: u32,
}

fn default_per_page() -> u32 {
    100
}
fn default_customer_role() -> String {
    "customer".into()
}
fn default_customer_rescan_hours() -> u64 {
    24
}
fn default_settle_secs() -> u64 {
    30
}
pub fn default_concurrent_pages() -> u32 {
    4
}

/// Highest `concurrent_pages` accepted.
pub const MAX_CONCURRENT_PAGES: u32 = 16;

impl Config {
    /// Checks values; errors name the field (`{prefix}.per_page`), never a secret.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.site_url).map_err(|e| {
            format!(
                "{prefix}.site_url: `{}` is not a URL ({e}); write the shop's address, e.g. https://shop.example.com",
                self.site_url
            )
        })?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("{prefix}.site_url: `{}` has no host", self.site_url))?;
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "{prefix}.site_url must start with https:// (WooCommerce accepts the consumer key and secret as Basic auth over HTTPS only; plain HTTP would need OAuth 1.0a signatures)"
                ))
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{prefix}.site_url must not have a query or fragment"
            ));
        }
        if self.site().is_none() {
            return Err(format!(
                "{prefix}.site_url: `{host}` is not a host name usable in `woocommerce:` identifiers"
            ));
        }
        for (name, v) in [
            ("consumer_key", &self.consumer_key),
            ("consumer_secret", &self.consumer_secret),
        ] {
            if v.is_none() {
                return Err(format!(
                    "{prefix}.{name} is required: create a REST API key with Read permission (WooCommerce → Settings → Advanced → REST API), e.g. {name} = \"${{WOO_{}}}\"",
                    name.to_ascii_uppercase()
                ));
            }
        }
        if !(1..=100).contains(&self.per_page) {
            return Err(format!(
                "{prefix}.per_page must be between 1 and 100 (got {})",
                self.per_page
            ));
        }
        let role_ok = !self.customer_role.is_empty()
            && self
                .customer_role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !role_ok {
            return Err(format!(
                "{prefix}.customer_role: `{}` is not a WordPress role name (e.g. customer, subscriber, all)",
                self.customer_role
            ));
        }
        if self.customer_rescan_hours == 0 {
            return Err(format!("{prefix}.customer_rescan_hours must be at least 1"));
        }
        if !(1..=MAX_CONCURRENT_PAGES).contains(&self.concurrent_pages) {
            return Err(format!(
                "{prefix}.concurrent_pages must be between 1 and {MAX_CONCURRENT_PAGES} (got {})",
                self.concurrent_pages
            ));
        }
        if self.settle_secs > 3600 {
            return Err(format!(
                "{prefix}.settle_secs must be at most 3600 (got {})",
                self.settle_secs
            ));
        }
        Ok(())
    }

    /// The shop's host, lower case: the `<site>` of `woocommerce:<site>/<id>`.
    pub fn site(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.site_url).ok()?;
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        (host.contains('.') && host.split('.').all(label_ok)).then_some(host)
    }

    /// `<site_url>/wp-json/wc/v3`.
    fn api_base(&self) -> String {
        format!("{}/wp-json/wc/v3", self.site_url.trim_end_matches('/'))
    }

    fn key(&self) -> &str {
        self.consumer_key.as_ref().map_or("", Secret::expose)
    }

    fn secret(&self) -> &str {
        self.consumer_secret.as_ref().map_or("", Secret::expose)
    }
}

/// Cursor of the `orders` stream: the position of the last order consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersCursor {
    /// `date_modified_gmt` of the last order consumed; `None` = from the start.
    pub modified: Option<DateTime<Utc>>,
    /// Its id: orders modified in the same second with an id up to this one
    /// were consumed.
    pub id: u64,
    /// How many orders of the list from that second on were consumed (used to
    /// jump into a second shared by more orders than one page holds).
    pub skip: u64,
}

/// Cursor of the `customers` stream: one pass over the customers by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomersCursor {
    /// When this pass began.
    pub pass_started: DateTime<Utc>,
    /// Highest customer id consumed in this pass.
    pub last_id: u64,
    /// Customers of the list consumed so far (the next `offset`).
    pub offset: u64,
    /// Only customers modified at or after this time are mapped (`--since`).
    pub since: Option<DateTime<Utc>>,
    /// The pass reached the end of the list.
    pub done: bool,
}

impl CustomersCursor {
    fn new_pass(now: DateTime<Utc>, since: Option<DateTime<Utc>>) -> Self {
        CustomersCursor {
            pass_started: now,
            last_id: 0,
            offset: 0,
            since,
            done: false,
        }
    }
}

/// What to tell the user when the shop refuses the key.
pub fn auth_fix(instance: &str) -> String {
    format!(
        "the consumer key/secret were refused: create a REST API key with Read permission (WooCommerce → Settings → Advanced → REST API) and set connectors.{instance}.consumer_key / consumer_secret (if the key is right, the web server may drop the Authorization header: set connectors.{instance}.query_string_auth = true)"
    )
}

/// One listed page: the objects and the headers that matter.
struct Listed<T> {
    items: Vec<T>,
    /// `X-WP-Total`.
    total: Option<u64>,
    /// The shop's clock (`Date` header), else ours.
    server_now: DateTime<Utc>,
}

/// One step of a walk: the list from an offset, read by one or more requests
/// (see [`window`]).
struct Step {
    items: Vec<Box<RawValue>>,
    /// `X-WP-Total` of the first request.
    total: Option<u64>,
    /// The shop's clock at the first request.
    server_now: DateTime<Utc>,
    /// The step reached the end of the list.
    reached_end: bool,
}

/// The `woocommerce` source.
pub struct Source {
    instance: String,
    cfg: Config,
    client: ApiClient,
    site: String,
    /// Orders consumed by this process (progress totals).
    orders_done: u64,
    /// Objects of each list left after the last step (from `X-WP-Total`), while
    /// a walk is under way: how many requests the next step sends.
    orders_left: Option<u64>,
    customers_left: Option<u64>,
}

impl Source {
    pub fn new(instance: &str, cfg: Config, settings: &RuntimeSettings) -> Result<Self, ApiError> {
        let site = cfg.site().ok_or_else(|| ApiError::Payload {
            source_name: instance.to_string(),
            url: String::new(),
            message: format!("connectors.{instance}.site_url has no usable host name"),
        })?;
        let client = ApiClient::new(
            instance,
            &auth_fix(instance),
            settings.retry_policy(),
            std::time::Duration::from_secs(settings.request_timeout_secs),
        )?
        .redact(cfg.key())
        .redact(cfg.secret());
        Ok(Source {
            instance: instance.to_string(),
            cfg,
            client,
            site,
            orders_done: 0,
            orders_left: None,
            customers_left: None,
        })
    }

    /// One walk step: the list `path` with `query` from `offset` (`page=1` when
    /// 0), read by `n` requests at once and joined (see [`window`]). A failing
    /// request other than the first ends the step before its window.
    async fn step(
        &self,
        path: &str,
        query: Vec<(String, String)>,
        offset: u64,
        n: usize,
    ) -> Result<Step, ApiError> {
        let per_page = u64::from(self.cfg.per_page);
        let calls = window::offsets(offset, per_page, n).into_iter().map(|o| {
            let mut q = query.clone();
            if o > 0 {
                q.push(("offset".into(), o.to_string()));
            } else {
                q.push(("page".into(), "1".into()));
            }
            self.list::<Box<RawValue>>(path, q)
        });
        let mut answers = futures::future::join_all(calls).await.into_iter();
        let first = match answers.next() {
            Some(r) => r?,
            None => return Err(self.payload(path, "no request was sent".into())),
        };
        let (total, server_now) = (first.total, first.server_now);
        let mut windows = vec![first.items];
        for (i, answer) in answers.enumerate() {
            match answer {
                Ok(l) => windows.push(l.items),
                Err(e) => {
                    if e.is_auth() {
                        return Err(e);
                    }
                    tracing::debug!(connector = %self.instance, window = i + 1, error = %e,
                        "a window of the step failed; the step ends before it");
                    break;
                }
            }
        }
        let joined = window::join(windows, per_page as usize);
        if joined.windows < n {
            tracing::debug!(connector = %self.instance, path, windows = joined.windows, sent = n,
                "the list moved between the step's requests; the rest is read by the next step");
        }
        Ok(Step {
            items: joined.items,
            total,
            server_now,
            reached_end: joined.reached_end,
        })
    }

    fn payload(&self, path: &str, message: String) -> ApiError {
        ApiError::Payload {
            source_name: self.instance.clone(),
            url: self
                .client
                .shown(&format!("{}/{path}", self.cfg.api_base())),
            message,
        }
    }

    /// GET `<api>/<path>` with `query`; the list and its headers.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        mut query: Vec<(String, String)>,
    ) -> Result<Listed<T>, ApiError> {
        let url = format!("{}/{path}", self.cfg.api_base());
        let mut req = Request::default();
        if self.cfg.query_string_auth {
            query.push(("consumer_key".into(), self.cfg.key().into()));
            query.push(("consumer_secret".into(), self.cfg.secret().into()));
        } else {
            req.basic_auth = Some((self.cfg.key().into(), self.cfg.secret().into()));
        }
        req.query = query;
        let resp = self
            .client
            .call(&url, &req)
            .await
            .map_err(|e| self.explain(e))?;
        let items: Vec<T> = resp.json(&self.instance).map_err(|e| match e {
            ApiError::Payload {
                source_name, url, ..
            } => ApiError::Payload {
                source_name,
                url,
                message: format!("expected a JSON array of {path}"),
            },
            other => other,
        })?;
        Ok(Listed {
            items,
            total: header_u64(&resp, "x-wp-total"),
            server_now: resp
                .header("date")
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .map(DateTime::<Utc>::from)
                .unwrap_or_else(Utc::now),
        })
    }

    fn explain(&self, e: ApiError) -> ApiError {
        match e {
            ApiError::Client {
                source_name,
                status: 404,
                url,
                body,
            } => ApiError::Client {
                source_name,
                status: 404,
                url,
                body: format!(
                    "{body} — is connectors.{}.site_url the WordPress address, with WooCommerce 3.5 or later active and pretty permalinks on (Settings → Permalinks, anything but Plain)?",
                    self.instance
                ),
            },
            other => other,
        }
    }

    async fn fetch_orders(&mut self, cursor: &Value) -> Result<Page, SourceError> {
        let c: OrdersCursor =
            serde_json::from_value(cursor.clone()).map_err(|e| SourceError::CursorInvalid {
                message: format!("stored orders cursor {cursor} is unreadable ({e})"),
                restart_from: json!(OrdersCursor::default()),
            })?;
        let pos = c.modified.map(|t| (t, c.id));
        let per_page = u64::from(self.cfg.per_page);
        let mut offset = c.skip.saturating_sub(OVERLAP);
        let n = window::requests(self.cfg.concurrent_pages, per_page, self.orders_left);
        let listed = loop {
            let mut q = vec![
                ("orderby".to_string(), "modified".to_string()),
                ("order".into(), "asc".into()),
                ("dates_are_gmt".into(), "true".into()),
                ("per_page".into(), per_page.to_string()),
            ];
            if let Some(t) = c.modified {
                q.push((
                    "modified_after".into(),
                    wc_time(t - ChronoDuration::seconds(1)),
                ));
            }
            let step = self.step(ORDERS, q, offset, n).await?;
            let first = step
                .items
                .first()
                .and_then(|raw| mapping::slim(raw, mapping::ORDER_KEY_FIELDS))
                .and_then(|o| mapping::order_key(&o));
            if offset > 0 && !matches!((first, pos), (Some(f), Some(p)) if f <= p) {
                // orders of that second moved away meanwhile: start the second again
                tracing::debug!(connector = %self.instance, offset,
                    "orders shifted under the offset; re-reading the second from its start");
                offset = 0;
                continue;
            }
            break step;
        };
        // the walk reads only the keys here; the deferred mapping builds the
        // fields it maps (a rejected order carries its whole text)
        let items: Vec<Value> = listed
            .items
            .iter()
            .map(|raw| mapping::slim(raw, mapping::ORDER_KEY_FIELDS).unwrap_or(Value::Null))
            .collect();
        let cutoff = listed.server_now - ChronoDuration::seconds(self.cfg.settle_secs as i64);
        // what the deferred mapping does with each listed order, in page order
        let mut todo: Vec<(usize, Todo)> = Vec::with_capacity(items.len());
        let mut page = Page {
            total: listed.total,
            ..Page::default()
        };
        let mut new_pos = pos;
        let mut consumed_upto: Option<usize> = None;
        let mut held = false;
        let mut out_of_order = false;
        let mut seen_in_page = 0u64;
        for (i, o) in items.iter().enumerate() {
            if let (Some(t), Some(k)) = (c.modified, mapping::order_key(o)) {
                if k.0 < t - ChronoDuration::seconds(1) {
                    return Err(ApiError::Payload {
                        source_name: self.instance.clone(),
                        url: self.client.shown(&format!("{}/orders", self.cfg.api_base())),
                        message: format!(
                            "the shop ignored `modified_after` (it sent order {} modified {}, before {}): WooCommerce 5.8 or later is needed, or a plugin changes the orders query",
                            k.1,
                            k.0.to_rfc3339(),
                            t.to_rfc3339()
                        ),
                    }
                    .into());
                }
            }
            let Some(key) = mapping::order_key(o) else {
                todo.push((i, Todo::Reject));
                continue;
            };
            if pos.is_some_and(|p| key <= p) {
                seen_in_page += 1;
                consumed_upto = Some(i);
                continue;
            }
            if key.0 > cutoff {
                held = true;
                break;
            }
            if new_pos.is_some_and(|p| key < p) {
                out_of_order = true;
            }
            page.objects += 1;
            todo.push((i, Todo::Map));
            new_pos = Some(new_pos.map_or(key, |p| p.max(key)));
            consumed_upto = Some(i);
        }
        if out_of_order {
            tracing::warn!(connector = %self.instance,
                "orders did not come sorted by date_modified_gmt; a plugin may change the orders query, which can make the walk miss changes");
        }
        let skip = match (new_pos, consumed_upto) {
            (Some(np), Some(last)) if Some(np.0) == c.modified => offset + last as u64 + 1,
            (Some(np), Some(last)) => items[..=last]
                .iter()
                .filter_map(mapping::order_key)
                .filter(|k| k.0 == np.0 && *k <= np)
                .count() as u64,
            (_, None) => c.skip,
            (None, Some(_)) => 0,
        };
        page.caught_up = held || listed.reached_end;
        self.orders_left = match listed.total {
            Some(t) if !page.caught_up => Some(t.saturating_sub(offset + items.len() as u64)),
            _ => None,
        };
        self.orders_done += page.objects;
        page.total = listed
            .total
            .map(|t| self.orders_done + t.saturating_sub(offset + seen_in_page + page.objects));
        page.position = new_pos.map(|p| p.0);
        page.cursor = json!(OrdersCursor {
            modified: new_pos.map(|p| p.0),
            id: new_pos.map_or(0, |p| p.1),
            skip,
        });
        let (site, received_at, instance) = (self.site.clone(), Utc::now(), self.instance.clone());
        let raws = listed.items;
        page.deferred = Some(Deferred::new(move || {
            let ctx = Ctx {
                site: &site,
                received_at,
            };
            let mut out = DeferredOutput::default();
            for (i, what) in todo {
                let Some(raw) = raws.get(i) else { continue };
                // typed first; the slim tree when the typed reading declines
                let typed = match what {
                    Todo::Map => typed::map_order(raw.get(), &ctx),
                    Todo::Reject => None,
                };
                if let Some(mapped) = typed {
                    record(mapped, &mut out, &raws, i, &instance);
                    continue;
                }
                let o = &mapping::slim(raw, mapping::ORDER_FIELDS).unwrap_or(Value::Null);
                match what {
                    Todo::Reject => out.rejected.push(whole_object(
                        &raws,
                        i,
                        mapping::rejected_order(
                            o,
                            "order without a numeric `id` or a readable `date_modified_gmt`",
                        ),
                    )),
                    Todo::Map => record(mapping::map_order(o, &ctx), &mut out, &raws, i, &instance),
                }
            }
            out
        }));
        Ok(page)
    }

    async fn fetch_customers(&mut self, cursor: &Value) -> Result<Page, SourceError> {
        let now = Utc::now();
        let mut c: CustomersCursor =
            serde_json::from_value(cursor.clone()).map_err(|e| SourceError::CursorInvalid {
                message: format!("stored customers cursor {cursor} is unreadable ({e})"),
                restart_from: json!(CustomersCursor::new_pass(now, None)),
            })?;
        if c.done {
            let due = c.pass_started
                + ChronoDuration::hours(self.cfg.customer_rescan_hours.min(1_000_000) as i64);
            if now < due {
                return Ok(Page {
                    cursor: cursor.clone(),
                    caught_up: true,
                    ..Page::default()
                });
            }
            tracing::info!(connector = %self.instance, "starting a new pass over the customers");
            c = CustomersCursor::new_pass(now, None);
        }
        let per_page = u64::from(self.cfg.per_page);
        let mut offset = c.offset.saturating_sub(OVERLAP);
        let n = window::requests(self.cfg.concurrent_pages, per_page, self.customers_left);
        let listed = loop {
            let q = vec![
                ("orderby".to_string(), "id".to_string()),
                ("order".into(), "asc".into()),
                ("per_page".into(), per_page.to_string()),
                ("role".into(), self.cfg.customer_role.clone()),
            ];
            let step = self.step(CUSTOMERS, q, offset, n).await?;
            let first = step
                .items
                .first()
                .and_then(|raw| mapping::slim(raw, mapping::CUSTOMER_KEY_FIELDS))
                .and_then(|o| mapping::customer_id(&o));
            if offset > 0 && first.is_none_or(|f| f > c.last_id) {
                // customers before this window were deleted: step back
                tracing::debug!(connector = %self.instance, offset,
                    "customers shifted under the offset; stepping back");
                offset = offset.saturating_sub(per_page);
                continue;
            }
            break step;
        };
        let mut page = Page {
            total: listed.total,
            ..Page::default()
        };
        let mut last_id = c.last_id;
        // the walk reads only the keys here; the deferred mapping builds the
        // fields it maps (a rejected customer carries its whole text)
        let items: Vec<Value> = listed
            .items
            .iter()
            .map(|raw| mapping::slim(raw, mapping::CUSTOMER_KEY_FIELDS).unwrap_or(Value::Null))
            .collect();
        // what the deferred mapping does with each listed customer, in page order
        let mut todo: Vec<(usize, Todo)> = Vec::with_capacity(items.len());
        for (i, o) in items.iter().enumerate() {
            let Some(id) = mapping::customer_id(o) else {
                todo.push((i, Todo::Reject));
                continue;
            };
            if id <= c.last_id {
                continue;
            }
            last_id = last_id.max(id);
            page.objects += 1;
            if let Some(since) = c.since {
                let modified = mapping::customer_modified(o);
                if modified.is_some_and(|m| m < since) {
                    continue;
                }
            }
            todo.push((i, Todo::Map));
        }
        let done = listed.reached_end;
        page.caught_up = done;
        self.customers_left = match listed.total {
            Some(t) if !done => Some(t.saturating_sub(offset + listed.items.len() as u64)),
            _ => None,
        };
        page.cursor = json!(CustomersCursor {
            pass_started: c.pass_started,
            last_id,
            offset: offset + listed.items.len() as u64,
            since: c.since,
            done,
        });
        let (site, received_at) = (self.site.clone(), Utc::now());
        let raws = listed.items;
        page.deferred = Some(Deferred::new(move || {
            let ctx = Ctx {
                site: &site,
                received_at,
            };
            let mut out = DeferredOutput::default();
            for (i, what) in todo {
                let Some(raw) = raws.get(i) else { continue };
                let o = &mapping::slim(raw, mapping::CUSTOMER_FIELDS).unwrap_or(Value::Null);
                match what {
                    Todo::Reject => out.rejected.push(whole_object(
                        &raws,
                        i,
                        mapping::rejected_customer(o, "customer without a numeric `id`"),
                    )),
                    Todo::Map => match mapping::map_customer(o, &ctx) {
                        Ok(ev) => {
                            out.position = out.position.max(Some(ev.occurred_at));
                            out.events.push(ev);
                        }
                        Err(r) => out.rejected.push(whole_object(&raws, i, r)),
                    },
                }
            }
            out
        }));
        Ok(page)
    }
}

/// What a deferred mapping does with one listed object.
#[derive(Debug, Clone, Copy)]
enum Todo {
    /// Maps it.
    Map,
    /// Rejects it: it has no usable key (id, modification time).
    Reject,
}

/// Adds what mapping listed order `i` gave to the page's output.
fn record(
    mapped: OrderMapped,
    out: &mut DeferredOutput,
    raws: &[Box<RawValue>],
    i: usize,
    instance: &str,
) {
    match mapped {
        OrderMapped::Events(evs) => out.events.extend(evs),
        OrderMapped::Skipped(why) => {
            metrics::counter!("socialcrm_connector_skipped_objects_total",
                "connector" => instance.to_string(), "reason" => why)
            .increment(1);
        }
        OrderMapped::Rejected(r) => out.rejected.push(whole_object(raws, i, r)),
    }
}

/// A rejection of listed object `i` (mapped from its slim form) carrying the
/// whole object, as the shop sent it.
fn whole_object(items: &[Box<RawValue>], i: usize, mut r: Rejected) -> Rejected {
    if let Some(v) = items
        .get(i)
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
    {
        r.raw = serde_json::to_vec(&v).unwrap_or_default();
    }
    r
}

fn header_u64(resp: &ApiResponse, name: &str) -> Option<u64> {
    resp.header(name).and_then(|v| v.trim().parse().ok())
}

/// A time as WooCommerce takes it with `dates_are_gmt=true`: `2026-03-01T10:00:00`.
pub fn wc_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "woocommerce"
    }

    fn streams(&self) -> Vec<String> {
        vec![CUSTOMERS.to_string(), ORDERS.to_string()]
    }

    fn initial_cursor(&self, stream: &str, since: Option<DateTime<Utc>>) -> Value {
        match stream {
            CUSTOMERS => json!(CustomersCursor::new_pass(Utc::now(), since)),
            _ => json!(OrdersCursor {
                modified: since,
                id: 0,
                skip: 0
            }),
        }
    }

    async fn fetch(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let mut page = self.fetch_unmapped(stream, cursor).await?;
        page.map_deferred();
        Ok(page)
    }

    /// The page's objects are mapped later, by the runtime, on another worker:
    /// the next page needs only their ids and times.
    async fn fetch_unmapped(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        match stream {
            CUSTOMERS => self.fetch_customers(cursor).await,
            _ => self.fetch_orders(cursor).await,
        }
    }
}
