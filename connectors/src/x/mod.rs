//! X (API v2) connector: the mentions of one brand account
//! (`GET /2/users/:id/mentions`), mapped to `mention`, `reply`, `quote` and
//! `reshare` events (docs/connectors/x.md).
//!
//! The timeline is served newest → oldest, so the cursor remembers two things:
//! `since_id` (every post up to it is synced) and, while a sync walks the pages, the
//! walk's `pagination_token` and the newest post id it started from. A walk ends
//! when X sends no `next_token`; only then does `since_id` move to the walk's newest
//! id. A crash mid-walk resumes from the stored token (or, if X refuses it, restarts
//! the walk from `since_id`: replays, never gaps).

pub mod config;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
pub mod mapping;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::config::RuntimeSettings;
use crate::runtime::http::{ApiClient, ApiError, Request};
use crate::runtime::{Deferred, DeferredOutput, Page, Rejected, SourceError};

pub use config::Config;
use mapping::{MapContext, Meta};

/// The one stream.
pub const STREAM: &str = "mentions";

/// `tweet.fields` asked for.
pub const TWEET_FIELDS: &str =
    "created_at,author_id,conversation_id,in_reply_to_user_id,referenced_tweets,public_metrics,lang,entities";
/// `expansions` asked for: the author's user object and the referenced posts.
pub const EXPANSIONS: &str = "author_id,referenced_tweets.id";
/// `user.fields` asked for (`id` and `name` come anyway).
pub const USER_FIELDS: &str = "public_metrics,username";

/// How many of the most recent mentions X serves through this endpoint; a walk
/// that reaches it may have lost older posts (see docs/connectors/x.md).
pub const TIMELINE_DEPTH: u64 = 800;

/// Oldest `start_time` X accepts (its documented minimum is 2010-11-06T00:00:00Z).
const MIN_START_TIME: &str = "2010-11-06T00:00:01Z";

/// Where the mentions stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cursor {
    /// Every post with an id up to this one is synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_id: Option<String>,
    /// `--since` lower bound (`start_time`), used until a walk found a post.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// The next page of the walk in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination_token: Option<String>,
    /// Newest post id seen by the walk in progress (becomes `since_id` at its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk_newest_id: Option<String>,
    /// Posts the walk in progress covered so far.
    #[serde(skip_serializing_if = "is_zero")]
    pub walk_objects: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Cursor {
    /// Reads a stored cursor.
    pub fn from_value(v: &Value) -> Result<Cursor, String> {
        if v.is_null() {
            return Ok(Cursor::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The same sync without the walk in progress (what a refused token restarts).
    pub fn restart(&self) -> Cursor {
        Cursor {
            since_id: self.since_id.clone(),
            start_time: self.start_time.clone(),
            ..Cursor::default()
        }
    }
}

/// The X source of one connector instance.
pub struct Source {
    instance: String,
    api: ApiClient,
    url: String,
    token: crate::runtime::config::Secret,
    brand_id: String,
    source: String,
    max_results: u32,
}

impl Source {
    pub fn new(instance: &str, cfg: Config, settings: &RuntimeSettings) -> Result<Self, ApiError> {
        let fix = format!(
            "the bearer token was refused (or its App lacks access): create a Bearer Token for an App attached to a Project with access to the X API v2 user mention timeline (developer console → Projects & Apps → Keys and tokens) and set connectors.{instance}.bearer_token"
        );
        let api = ApiClient::new(
            instance,
            &fix,
            settings.retry_policy(),
            Duration::from_secs(settings.request_timeout_secs),
        )?
        .redact(cfg.bearer_token.expose());
        let brand_id = cfg.brand_id();
        Ok(Source {
            instance: instance.to_string(),
            api,
            url: format!(
                "{}/2/users/{}/mentions",
                cfg.api_url.trim_end_matches('/'),
                brand_id
            ),
            token: cfg.bearer_token,
            source: format!("x:{brand_id}"),
            brand_id,
            max_results: cfg.max_results,
        })
    }

    fn query(&self, c: &Cursor) -> Vec<(String, String)> {
        let mut q = vec![
            ("max_results".to_string(), self.max_results.to_string()),
            ("tweet.fields".to_string(), TWEET_FIELDS.to_string()),
            ("expansions".to_string(), EXPANSIONS.to_string()),
            ("user.fields".to_string(), USER_FIELDS.to_string()),
        ];
        // since_id takes precedence over start_time at X; send only one
        if let Some(s) = &c.since_id {
            q.push(("since_id".to_string(), s.clone()));
        } else if let Some(t) = &c.start_time {
            q.push(("start_time".to_string(), t.clone()));
        }
        if let Some(t) = &c.pagination_token {
            q.push(("pagination_token".to_string(), t.clone()));
        }
        q
    }

    async fn fetch_mentions(&self, cursor: &Value) -> Result<Page, SourceError> {
        let c = Cursor::from_value(cursor).map_err(|e| SourceError::CursorInvalid {
            message: format!(
                "{}: stored cursor is not an X mentions cursor ({e}); starting over",
                self.instance
            ),
            restart_from: Cursor::default().to_value(),
        })?;
        let req = Request {
            query: self.query(&c),
            bearer: Some(self.token.expose().to_string()),
            ..Request::default()
        };
        let resp = match self.api.call(&self.url, &req).await {
            Ok(r) => r,
            Err(ApiError::Client {
                status: 400, body, ..
            }) if c.pagination_token.is_some() => {
                return Err(SourceError::CursorInvalid {
                    message: format!(
                        "{}: X refused the stored pagination token ({body}); the sync restarts from since_id {}",
                        self.instance,
                        c.since_id.as_deref().unwrap_or("(none: everything X serves)")
                    ),
                    restart_from: c.restart().to_value(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // only what the cursor needs is read here; the posts are parsed and
        // mapped by the deferred mapping, off the page chain
        let head = mapping::parse_head(&resp.body).map_err(|message| ApiError::Payload {
            source_name: self.instance.clone(),
            url: resp.url.clone(),
            message,
        })?;
        self.report_errors(&head.errors, head.objects)?;
        let mut page = self.next_page(&c, &head.meta, head.newest_id.as_deref(), head.objects);
        let (brand_id, source, instance) = (
            self.brand_id.clone(),
            self.source.clone(),
            self.instance.clone(),
        );
        let (received_at, since_id, body) = (Utc::now(), c.since_id, resp.body);
        page.deferred = Some(Deferred::new(move || {
            let ctx = MapContext {
                brand_id: &brand_id,
                source: &source,
                received_at,
                since_id: since_id.as_deref(),
            };
            // parse_head accepted the body, and parse_response checks the same shapes
            let parsed = match mapping::parse_response(&body) {
                Ok(p) => p,
                Err(reason) => {
                    return DeferredOutput {
                        rejected: vec![Rejected {
                            object_id: "?".into(),
                            reason,
                            raw: body.to_vec(),
                        }],
                        ..DeferredOutput::default()
                    }
                }
            };
            let m = mapping::map_parsed(parsed, &ctx);
            if m.skipped_own > 0 {
                tracing::debug!(connector = %instance, posts = m.skipped_own,
                    "posts by the brand account itself skipped");
            }
            DeferredOutput {
                events: m.events,
                rejected: m.rejected,
                position: m.newest_at,
            }
        }));
        Ok(page)
    }

    /// Logs partial errors; an answer that only says the brand user does not exist
    /// is an error (a wrong `user_id` must not look like "no mentions").
    fn report_errors(
        &self,
        errors: &[mapping::PartialError],
        objects: u64,
    ) -> Result<(), ApiError> {
        for e in errors {
            if objects == 0
                && e.resource_type == "user"
                && (e.parameter == "id" || e.resource_id == self.brand_id)
            {
                return Err(ApiError::Payload {
                    source_name: self.instance.clone(),
                    url: self.api.shown(&self.url),
                    message: format!(
                        "X has no usable user {} ({}: {}); check connectors.{}.user_id",
                        self.brand_id, e.title, e.detail, self.instance
                    ),
                });
            }
            tracing::warn!(connector = %self.instance, resource_type = %e.resource_type,
                resource_id = %e.resource_id, parameter = %e.parameter, title = %e.title,
                detail = %e.detail, "X answered with a partial error; the rest of the page is kept");
        }
        Ok(())
    }

    /// The page's cursor; its mapping is left to the caller.
    fn next_page(&self, c: &Cursor, meta: &Meta, newest_id: Option<&str>, objects: u64) -> Page {
        let walk_newest = mapping::max_id(
            mapping::max_id(c.walk_newest_id.clone(), meta.newest_id.as_deref()),
            newest_id,
        );
        let walk_objects = c.walk_objects + objects;
        let (cursor, caught_up) = match meta.next_token.clone() {
            Some(token) if Some(&token) != c.pagination_token.as_ref() => (
                Cursor {
                    since_id: c.since_id.clone(),
                    start_time: c.start_time.clone(),
                    pagination_token: Some(token),
                    walk_newest_id: walk_newest,
                    walk_objects,
                },
                false,
            ),
            next => {
                if next.is_some() {
                    tracing::warn!(connector = %self.instance,
                        "X sent the same next_token again; ending the walk here");
                }
                if walk_objects >= TIMELINE_DEPTH {
                    tracing::warn!(connector = %self.instance, posts = walk_objects,
                        limit = TIMELINE_DEPTH,
                        "the sync reached the depth X serves for mention timelines; older mentions since the previous sync may be missing (poll more often)");
                }
                let done = match walk_newest {
                    Some(newest) => Cursor {
                        since_id: mapping::max_id(c.since_id.clone(), Some(&newest)),
                        ..Cursor::default()
                    },
                    // nothing new: keep the bounds as they were
                    None => c.restart(),
                };
                (done, true)
            }
        };
        Page {
            cursor: cursor.to_value(),
            caught_up,
            objects,
            ..Page::default()
        }
    }
}

/// `start_time` for `--since`: second granularity, no milliseconds (X refuses
/// them), not before X's documented minimum.
pub fn start_time(since: DateTime<Utc>) -> String {
    let t = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    if t.as_str() < MIN_START_TIME {
        MIN_START_TIME.to_string()
    } else {
        t
    }
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "x"
    }
    fn streams(&self) -> Vec<String> {
        vec![STREAM.to_string()]
    }
    fn initial_cursor(&self, _stream: &str, since: Option<DateTime<Utc>>) -> Value {
        Cursor {
            start_time: since.map(start_time),
            ..Cursor::default()
        }
        .to_value()
    }
    async fn fetch(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        if stream != STREAM {
            return Err(SourceError::Api(ApiError::Payload {
                source_name: self.instance.clone(),
                url: String::new(),
                message: format!("unknown stream `{stream}` (the X connector has `{STREAM}`)"),
            }));
        }
        let mut page = self.fetch_unmapped(stream, cursor).await?;
        page.map_deferred();
        Ok(page)
    }

    /// The page's posts are parsed and mapped later, by the runtime, on another
    /// worker: the next page needs only `meta` and the posts' ids
    /// ([`mapping::parse_head`]).
    async fn fetch_unmapped(&mut self, stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        if stream != STREAM {
            return Err(SourceError::Api(ApiError::Payload {
                source_name: self.instance.clone(),
                url: String::new(),
                message: format!("unknown stream `{stream}` (the X connector has `{STREAM}`)"),
            }));
        }
        self.fetch_mentions(cursor).await
    }
}
