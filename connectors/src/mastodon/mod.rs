//! Mastodon connector: the notifications of one brand account on any Mastodon
//! server (REST API), mapped to canonical social events (docs/connectors/mastodon.md).
//!
//! One stream, `notifications`: `GET /api/v1/notifications?min_id=<cursor>`.
//! With `min_id`, Mastodon answers the `limit` notifications immediately newer
//! than the cursor (newest first in the array); the cursor becomes the highest id
//! of the page (the `min_id` of the `Link: rel="prev"` URL), so the walk moves
//! forward without gaps until a page comes back empty. The first run starts at
//! `min_id=0`: everything the server still has.
//!
//! `--since DATE`: notification ids are *not* Mastodon snowflake ids (statuses'
//! are; notifications use a plain database sequence), so a date cannot be turned
//! into an id. The first fetch finds the start by bisection on `max_id` with
//! `limit=1` (ids grow with `created_at`): about log2(newest id) small calls; the
//! walk then skips anything older than the date.

pub mod config;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
pub mod mapping;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::runtime::config::RuntimeSettings;
use crate::runtime::http::{link_rel, ApiClient, ApiError, ApiResponse, Request};
use crate::runtime::{Deferred, DeferredOutput, Page, SourceError};

pub use config::Config;

/// The only stream.
pub const STREAM: &str = "notifications";

/// The stored position of the `notifications` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Highest notification id synced; the next request is `min_id=<this>`.
    /// Absent while the start of a `--since` backfill is still to be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_id: Option<String>,
    /// `--since`: notifications created before this time are skipped (until the
    /// walk caught up once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

impl Cursor {
    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The brand account and the server's domain, learned at the first fetch.
#[derive(Debug, Clone)]
struct Brand {
    id: String,
    handle: String,
    domain: String,
    source: String,
}

/// A running Mastodon connector instance.
pub struct Source {
    instance: String,
    cfg: Config,
    base: String,
    client: ApiClient,
    brand: Option<Brand>,
    types_query: Vec<(String, String)>,
}

impl Source {
    pub fn new(instance: &str, cfg: Config, settings: &RuntimeSettings) -> Result<Self, ApiError> {
        let base = cfg.base_url();
        let auth_fix = format!(
            "on {base}, create an access token for the brand account (Preferences → Development → New application, \
             scopes read:notifications read:statuses read:accounts, or read) and set connectors.{instance}.access_token \
             to it (e.g. \"${{MASTODON_TOKEN}}\"); HTTP 403 means the token lacks one of these scopes"
        );
        let client = ApiClient::new(
            instance,
            &auth_fix,
            settings.retry_policy(),
            Duration::from_secs(settings.request_timeout_secs),
        )?
        .redact(cfg.access_token.expose());
        let types_query = cfg
            .types
            .iter()
            .map(|t| ("types[]".to_string(), t.clone()))
            .collect();
        Ok(Source {
            instance: instance.to_string(),
            base,
            client,
            brand: None,
            types_query,
            cfg,
        })
    }

    fn request(&self, query: Vec<(String, String)>) -> Request {
        Request {
            bearer: Some(self.cfg.access_token.expose().to_string()),
            query,
            ..Request::default()
        }
    }

    fn payload_error(&self, url: &str, message: impl Into<String>) -> ApiError {
        ApiError::Payload {
            source_name: self.instance.clone(),
            url: self.client.shown(url),
            message: message.into(),
        }
    }

    /// `GET` a path of the server, as JSON.
    async fn get_json(
        &self,
        path: &str,
        query: Vec<(String, String)>,
    ) -> Result<(Value, ApiResponse), ApiError> {
        let url = format!("{}{path}", self.base);
        let resp = self.client.call(&url, &self.request(query)).await?;
        let v: Value = resp.json(&self.instance)?;
        Ok((v, resp))
    }

    /// Learns the brand account (`verify_credentials`) and the server's domain.
    async fn ensure_brand(&mut self) -> Result<Brand, SourceError> {
        if let Some(b) = &self.brand {
            return Ok(b.clone());
        }
        let path = "/api/v1/accounts/verify_credentials";
        let (acc, _) = self.get_json(path, Vec::new()).await?;
        let url = format!("{}{path}", self.base);
        let id = mapping::notification_id(&acc)
            .ok_or_else(|| self.payload_error(&url, "the account has no `id`"))?;
        let acct = acc
            .get("acct")
            .and_then(Value::as_str)
            .ok_or_else(|| self.payload_error(&url, "the account has no `acct`"))?
            .to_string();
        let domain = if self.cfg.domain.is_empty() {
            self.server_domain().await?
        } else {
            config::check_domain(&self.cfg.domain)
                .map_err(|e| self.payload_error(&url, format!("domain: {e}")))?
        };
        let handle = mapping::handle(&acct, &domain).map_err(|e| {
            self.payload_error(
                &url,
                format!("the brand account `{acct}` has no usable handle: {e}"),
            )
        })?;
        tracing::info!(connector = %self.instance, brand = %handle, brand_id = %id, domain = %domain,
            "mastodon brand account");
        let brand = Brand {
            id,
            handle,
            source: mapping::source_name(&domain),
            domain,
        };
        self.brand = Some(brand.clone());
        Ok(brand)
    }

    /// The server's domain: `GET /api/v2/instance` → `domain` (Mastodon ≥ 4.0),
    /// else `GET /api/v1/instance` → `uri`.
    async fn server_domain(&self) -> Result<String, SourceError> {
        let (value, path, key) = match self.get_json("/api/v2/instance", Vec::new()).await {
            Ok((v, _)) => (v, "/api/v2/instance", "domain"),
            Err(e) if e.status() == Some(404) => {
                let (v, _) = self.get_json("/api/v1/instance", Vec::new()).await?;
                (v, "/api/v1/instance", "uri")
            }
            Err(e) => return Err(e.into()),
        };
        let url = format!("{}{path}", self.base);
        let raw = value.get(key).and_then(Value::as_str).unwrap_or("");
        let raw = raw
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        config::check_domain(raw).map_err(|e| {
            self.payload_error(
                &url,
                format!(
                    "`{key}` is not a domain ({e}); set connectors.{}.domain",
                    self.instance
                ),
            )
            .into()
        })
    }

    /// `GET /api/v1/notifications` with the configured types.
    async fn notifications(
        &self,
        mut query: Vec<(String, String)>,
    ) -> Result<(Vec<Value>, ApiResponse), ApiError> {
        query.extend(self.types_query.iter().cloned());
        let url = format!("{}/api/v1/notifications", self.base);
        let resp = self.client.call(&url, &self.request(query)).await?;
        let items: Vec<Value> = resp.json(&self.instance)?;
        Ok((items, resp))
    }

    /// The newest notification with an id at most `at_most` (or the newest of
    /// all): its id and time.
    async fn probe(
        &self,
        at_most: Option<u64>,
    ) -> Result<Option<(String, DateTime<Utc>)>, SourceError> {
        let mut q = vec![("limit".to_string(), "1".to_string())];
        if let Some(m) = at_most {
            q.push(("max_id".to_string(), m.saturating_add(1).to_string()));
        }
        let (items, resp) = self.notifications(q).await?;
        let Some(n) = items.first() else {
            return Ok(None);
        };
        let id = mapping::notification_id(n);
        let at = n
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        match (id, at) {
            (Some(id), Some(at)) => Ok(Some((id, at))),
            _ => Err(self
                .payload_error(
                    &resp.url,
                    "a notification without a readable `id` and `created_at`; cannot find the --since start",
                )
                .into()),
        }
    }

    /// Finds the `min_id` where a `--since` backfill starts: the largest value
    /// such that every notification with an id up to it is older than `since`.
    async fn seek(&self, since: DateTime<Utc>) -> Result<Page, SourceError> {
        let start = |min_id: String| Cursor {
            min_id: Some(min_id),
            since: Some(since),
        };
        let newest = self.probe(None).await?;
        let cursor = match newest {
            None => start("0".into()),
            Some((id, at)) if at < since => start(id),
            Some((id, _)) => match id.parse::<u64>() {
                Err(_) => {
                    tracing::warn!(connector = %self.instance, id = %id,
                        "notification ids are not numbers; the --since backfill reads from the beginning and skips older notifications");
                    start("0".into())
                }
                Ok(newest_id) => {
                    // invariant: ids <= lo are older than `since`; ids >= hi are not
                    let (mut lo, mut hi) = (0u64, newest_id);
                    let mut probes = 1u32;
                    while hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        probes += 1;
                        match self.probe(Some(mid)).await? {
                            None => lo = mid,
                            Some((_, at)) if at < since => lo = mid,
                            Some((id, _)) => {
                                hi = match id.parse::<u64>() {
                                    Ok(v) if v > lo && v <= mid => v,
                                    // a server not honouring max_id: stop narrowing
                                    _ => lo + 1,
                                }
                            }
                        }
                    }
                    tracing::info!(connector = %self.instance, since = %since, min_id = lo, probes,
                        "--since backfill starts after notification {lo}");
                    start(lo.to_string())
                }
            },
        };
        Ok(Page {
            cursor: cursor.to_value(),
            caught_up: false,
            ..Page::default()
        })
    }

    /// One page forward from `min_id`.
    async fn forward(
        &self,
        brand: &Brand,
        min_id: String,
        since: Option<DateTime<Utc>>,
    ) -> Result<Page, SourceError> {
        let limit = self.cfg.page_size;
        let mut query = vec![
            ("min_id".to_string(), min_id.clone()),
            ("limit".to_string(), limit.to_string()),
        ];
        query.extend(self.types_query.iter().cloned());
        let url = format!("{}/api/v1/notifications", self.base);
        let resp = self.client.call(&url, &self.request(query)).await?;
        // the page is split into its notifications here, without copying them;
        // each is parsed once, into typed structs, by the deferred mapping (see
        // mapping::PageItem), off this task's path from one page to the next
        let raws: Vec<&RawValue> = resp.json_ref(&self.instance)?;
        let base = resp.body.as_ptr() as usize;
        let spans: Vec<std::ops::Range<usize>> = raws
            .iter()
            .map(|r| {
                let start = r.get().as_ptr() as usize - base;
                start..start + r.get().len()
            })
            .collect();
        // the next cursor: the highest id of the page, as the `prev` link says.
        // Mastodon answers newest first, so when the link moves the cursor, the
        // ids of the page's two ends are read to check it; without such a link,
        // every id of the page is
        let from_link = link_rel(&resp.headers, "prev").and_then(|u| min_id_param(&u));
        let link_advances = from_link
            .as_ref()
            .is_some_and(|l| id_cmp(l, &min_id) == Ordering::Greater);
        let ends;
        let read: &[&RawValue] = match (link_advances, raws.first(), raws.last()) {
            (true, Some(&first), Some(&last)) => {
                ends = [first, last];
                &ends
            }
            _ => &raws,
        };
        let from_page = read
            .iter()
            .filter_map(|r| mapping::raw_notification_id(r))
            .max_by(|a, b| id_cmp(a, b));
        let next = [Some(min_id.clone()), from_link, from_page]
            .into_iter()
            .flatten()
            .max_by(|a, b| id_cmp(a, b))
            .unwrap_or_else(|| min_id.clone());
        if !raws.is_empty() && next == min_id {
            return Err(self
                .payload_error(
                    &resp.url,
                    format!(
                        "a page of {} notifications without usable ids and no Link header; the cursor cannot advance past {min_id}",
                        raws.len()
                    ),
                )
                .into());
        }
        // only an empty page proves the end: servers before 4.1 cap `limit` at 30,
        // others at other sizes, so a short page may just be the server's maximum
        let caught_up = raws.is_empty();
        let objects = raws.len() as u64;
        let body = resp.body;
        let brand = brand.clone();
        let types = self.cfg.types.clone();
        let max_text_chars = self.cfg.max_text_chars;
        let instance = self.instance.clone();
        let received_at = Utc::now();
        let map = move || {
            // each span is an element of the page as it was parsed, so UTF-8;
            // checked again per span (fast for ASCII), not copied
            let mut items: Vec<mapping::PageItem> = spans
                .into_iter()
                .map(|r| {
                    let text = body.get(r).and_then(|b| std::str::from_utf8(b).ok());
                    mapping::PageItem::parse_str(text.unwrap_or("null"))
                })
                .collect();
            // Mastodon answers newest first; events go out oldest first
            items.sort_by(|a, b| match (&a.id, &b.id) {
                (Some(x), Some(y)) => id_cmp(x, y),
                (x, y) => x.is_some().cmp(&y.is_some()),
            });
            let ctx = mapping::Context {
                domain: &brand.domain,
                source: &brand.source,
                brand_id: &brand.id,
                brand_handle: &brand.handle,
                types: &types,
                received_at,
                max_text_chars,
            };
            let mut mapped = mapping::map_items(&items, &ctx);
            if let Some(s) = since {
                mapped.events.retain(|e| e.occurred_at >= s);
            }
            if mapped.skipped > 0 {
                tracing::debug!(connector = %instance, skipped = mapped.skipped,
                    "notifications of types not asked for skipped");
            }
            let position = mapped.events.iter().map(|e| e.occurred_at).max();
            DeferredOutput {
                events: mapped.events,
                rejected: mapped.rejected,
                position,
            }
        };
        Ok(Page {
            cursor: Cursor {
                min_id: Some(next),
                since: if caught_up { None } else { since },
            }
            .to_value(),
            caught_up,
            objects,
            deferred: Some(Deferred::new(map)),
            ..Page::default()
        })
    }
}

/// The `min_id` query parameter of a URL.
fn min_id_param(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| k == "min_id")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Orders notification ids: numerically when both are numbers (Mastodon), as
/// text otherwise (servers with other id schemes).
pub fn id_cmp(a: &str, b: &str) -> Ordering {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "mastodon"
    }

    fn streams(&self) -> Vec<String> {
        vec![STREAM.to_string()]
    }

    fn initial_cursor(&self, _stream: &str, since: Option<DateTime<Utc>>) -> Value {
        match since {
            None => Cursor {
                min_id: Some("0".into()),
                since: None,
            },
            Some(s) => Cursor {
                min_id: None,
                since: Some(s),
            },
        }
        .to_value()
    }

    async fn fetch(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let mut page = self.fetch_unmapped(stream, cursor).await?;
        page.map_deferred();
        Ok(page)
    }

    /// The page's notifications are mapped later, by the runtime, on another
    /// worker: the next page needs only their ids.
    async fn fetch_unmapped(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let restart = self.initial_cursor(stream, None);
        let cur: Cursor =
            serde_json::from_value(cursor.clone()).map_err(|e| SourceError::CursorInvalid {
                message: format!("stored cursor {cursor} is not a Mastodon cursor: {e}"),
                restart_from: restart.clone(),
            })?;
        if cur.min_id.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(SourceError::CursorInvalid {
                message: "stored cursor has an empty min_id".into(),
                restart_from: restart,
            });
        }
        let brand = self.ensure_brand().await?;
        match (cur.min_id, cur.since) {
            (Some(min_id), since) => self.forward(&brand, min_id, since).await,
            (None, Some(since)) => self.seek(since).await,
            (None, None) => self.forward(&brand, "0".into(), None).await,
        }
    }
}
