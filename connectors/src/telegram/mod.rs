//! Telegram Bot API connector: messages people send to a support bot.
//!
//! One stream, `updates`, read with `getUpdates` long polling. The cursor is the
//! next `offset` (the highest `update_id` seen + 1). Calling `getUpdates` with an
//! offset *confirms* every earlier update on Telegram's side (it is deleted there),
//! and the runtime stores a page's cursor only after Kafka acknowledged the page's
//! events; the call that confirms a page therefore always happens after its events
//! are durable. A crash replays at most the last page (same `event_id`s).
//!
//! See `docs/connectors/telegram.md`.

pub mod mapping;

#[cfg(any(test, feature = "testkit"))]
pub mod fake;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::runtime::config::{RuntimeSettings, Secret};
use crate::runtime::http::{ApiClient, ApiError, Request};
use crate::runtime::{Page, Rejected, SourceError};
use mapping::{Ctx, Mapped};

/// The one stream of this connector.
pub const STREAM: &str = "updates";

/// Update kinds Telegram may send; `allowed_updates` must name these.
const KNOWN_UPDATE_KINDS: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

/// Which messages from group chats become events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMessages {
    /// Only messages addressed to the bot: replies to the bot, `@botname`
    /// mentions, and commands (`/help`, `/help@botname`).
    #[default]
    Mentions,
    /// Every group message the bot receives (with privacy mode off, that is
    /// all of the group's conversation).
    All,
    /// No group messages; private chats only.
    None,
}

impl<'de> Deserialize<'de> for GroupMessages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "mentions" => Ok(GroupMessages::Mentions),
            "all" => Ok(GroupMessages::All),
            "none" => Ok(GroupMessages::None),
            other => Err(serde::de::Error::custom(format!(
                "group_messages: unknown value `{other}` (expected mentions, all or none)"
            ))),
        }
    }
}

/// `[connectors.<instance>]` of type `telegram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bot API base URL (a local Bot API server, or a test fake).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The bot's token from @BotFather (`123456789:AA...`), required. It is part
    /// of every request path; it never appears in errors or logs. (An `Option`
    /// only so that a missing key is reported by name.)
    #[serde(default)]
    pub bot_token: Option<Secret>,
    /// `timeout` of `getUpdates` long polling: how long Telegram holds a request
    /// open when there is nothing new. 0 = short polling.
    #[serde(default = "default_long_poll_secs")]
    pub long_poll_secs: u64,
    /// Updates per `getUpdates` call (1-100).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Update kinds to receive (`allowed_updates`); only `message` and
    /// `edited_message` are mapped, other kinds are skipped.
    #[serde(default = "default_allowed_updates")]
    pub allowed_updates: Vec<String>,
    /// Group chats: `mentions` (messages addressed to the bot), `all`, or `none`.
    #[serde(default)]
    pub group_messages: GroupMessages,
    /// Keep message text (first 4096 characters) in `properties.text`.
    #[serde(default = "default_include_text")]
    pub include_text: bool,
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}
fn default_long_poll_secs() -> u64 {
    25
}
fn default_limit() -> u32 {
    100
}
fn default_allowed_updates() -> Vec<String> {
    vec!["message".into(), "edited_message".into()]
}
fn default_include_text() -> bool {
    true
}

/// Longest long poll accepted in the config.
pub const MAX_LONG_POLL_SECS: u64 = 300;

impl Config {
    /// Checks values; errors name the field (`{prefix}.limit`), never a secret.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.api_url).map_err(|e| {
            format!(
                "{prefix}.api_url: `{}` is not a URL ({e}); the default is https://api.telegram.org",
                self.api_url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{prefix}.api_url: `{}` must be an http(s) URL with a host",
                self.api_url
            ));
        }
        if url.query().is_some() {
            return Err(format!("{prefix}.api_url must not have a query"));
        }
        let Some(token) = &self.bot_token else {
            return Err(format!(
                "{prefix}.bot_token is required: the bot's token from @BotFather, e.g. bot_token = \"${{TELEGRAM_BOT_TOKEN}}\""
            ));
        };
        if bot_id_of(token.expose()).is_none() {
            return Err(format!(
                "{prefix}.bot_token does not look like a bot token from @BotFather (`<bot id>:<secret>`, e.g. 123456789:AAH...)"
            ));
        }
        if self.long_poll_secs > MAX_LONG_POLL_SECS {
            return Err(format!(
                "{prefix}.long_poll_secs must be at most {MAX_LONG_POLL_SECS} (got {})",
                self.long_poll_secs
            ));
        }
        if !(1..=100).contains(&self.limit) {
            return Err(format!(
                "{prefix}.limit must be between 1 and 100 (got {})",
                self.limit
            ));
        }
        for k in &self.allowed_updates {
            if !KNOWN_UPDATE_KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "{prefix}.allowed_updates: unknown update kind `{k}` (known: {})",
                    KNOWN_UPDATE_KINDS.join(", ")
                ));
            }
        }
        if !self.allowed_updates.is_empty()
            && !self
                .allowed_updates
                .iter()
                .any(|k| k == "message" || k == "edited_message")
        {
            return Err(format!(
                "{prefix}.allowed_updates must include `message` or `edited_message` (the kinds this connector maps)"
            ));
        }
        Ok(())
    }

    fn base_url(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    /// The token (empty when missing; `validate` refuses that first).
    fn token(&self) -> &str {
        self.bot_token.as_ref().map_or("", Secret::expose)
    }
}

/// The bot id: the digits before `:` in a token (`123456789:AA...`).
pub fn bot_id_of(token: &str) -> Option<&str> {
    let (id, secret) = token.split_once(':')?;
    let id_ok = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    let secret_ok = !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (id_ok && secret_ok && !id.trim_start_matches('0').is_empty()).then_some(id)
}

/// Per-request timeout: longer than the long poll, so Telegram answers first.
pub fn client_timeout(cfg: &Config, settings: &RuntimeSettings) -> Duration {
    Duration::from_secs(settings.request_timeout_secs.max(cfg.long_poll_secs + 15))
}

/// The cursor of the `updates` stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Next `offset` for `getUpdates` (highest `update_id` seen + 1); `None` =
    /// Telegram's earliest unconfirmed update.
    pub offset: Option<i64>,
}

/// The `telegram` source.
pub struct Source {
    instance: String,
    cfg: Config,
    client: ApiClient,
    bot_id: String,
    /// From `getMe`, needed to recognise `@botname` mentions in groups.
    bot_username: Option<String>,
    auth_fix: String,
}

/// What to tell the user when Telegram refuses the token.
pub fn auth_fix(instance: &str) -> String {
    format!(
        "the bot token was refused: create or revoke the token with @BotFather (/mybots → API Token) and set connectors.{instance}.bot_token"
    )
}

/// Reads `parameters.retry_after` from a failed answer (Telegram's flood control).
pub fn body_retry_after(status: u16, body: &[u8]) -> Option<Duration> {
    if status != 429 {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let secs = v.get("parameters")?.get("retry_after")?;
    let secs = secs
        .as_f64()
        .or_else(|| secs.as_str().and_then(|s| s.trim().parse().ok()))?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl Source {
    pub fn new(instance: &str, cfg: Config, settings: &RuntimeSettings) -> Result<Self, ApiError> {
        let fix = auth_fix(instance);
        let token = cfg.token().to_string();
        let bot_id = bot_id_of(&token)
            .ok_or_else(|| ApiError::Payload {
                source_name: instance.to_string(),
                url: String::new(),
                message: format!(
                    "connectors.{instance}.bot_token is not a bot token (`<bot id>:<secret>`)"
                ),
            })?
            .to_string();
        let client = ApiClient::new(
            instance,
            &fix,
            settings.retry_policy(),
            client_timeout(&cfg, settings),
        )?
        .redact(&token)
        .with_body_wait(Arc::new(body_retry_after));
        Ok(Source {
            instance: instance.to_string(),
            cfg,
            client,
            bot_id,
            bot_username: None,
            auth_fix: fix,
        })
    }

    fn method_url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.cfg.base_url(), self.cfg.token())
    }

    /// One Bot API call; Telegram's answers for a bad token (404) and for a
    /// webhook in the way (409) get explicit errors.
    async fn call(&self, method: &str, req: &Request) -> Result<Value, ApiError> {
        let url = self.method_url(method);
        let resp = self
            .client
            .call(&url, req)
            .await
            .map_err(|e| self.explain(e))?;
        let body: Value = resp.json(&self.instance)?;
        if body.get("ok") != Some(&Value::Bool(true)) {
            return Err(ApiError::Payload {
                source_name: self.instance.clone(),
                url: resp.url.clone(),
                message: format!(
                    "`ok` is not true: {}",
                    body.get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("no description")
                ),
            });
        }
        Ok(body)
    }

    fn explain(&self, e: ApiError) -> ApiError {
        match e {
            // Telegram answers 404 Not Found to a token it does not know
            ApiError::Client {
                source_name,
                status: 404,
                url,
                ..
            } => ApiError::Auth {
                source_name,
                status: 404,
                url,
                fix: format!(
                    "{} (Telegram answers 404 Not Found for an unknown token; if connectors.{}.api_url is not the Bot API, fix that instead)",
                    self.auth_fix, self.instance
                ),
            },
            ApiError::Client {
                source_name,
                status: 409,
                url,
                body,
            } => ApiError::Client {
                source_name,
                status: 409,
                url,
                body: format!(
                    "{}: getUpdates cannot be used while a webhook is set for this bot or while another process polls it; delete the webhook with the Bot API method deleteWebhook (https://api.telegram.org/bot<token>/deleteWebhook) and stop other pollers of this bot",
                    telegram_description(&body)
                ),
            },
            other => other,
        }
    }

    /// `getMe`: the bot's user name (for `@mentions` in groups).
    async fn bot_username(&mut self) -> Result<Option<String>, ApiError> {
        if self.cfg.group_messages != GroupMessages::Mentions {
            return Ok(None);
        }
        if self.bot_username.is_none() {
            let body = self.call("getMe", &Request::default()).await?;
            let me = body.get("result").cloned().unwrap_or(Value::Null);
            if let Some(id) = me.get("id").and_then(Value::as_i64) {
                if id.to_string() != self.bot_id {
                    tracing::warn!(connector = %self.instance, token_bot_id = %self.bot_id, getme_id = id,
                        "getMe answered another bot id than the token's");
                }
            }
            let name = me
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ApiError::Payload {
                    source_name: self.instance.clone(),
                    url: self.client.shown(&self.method_url("getMe")),
                    message: "getMe answered without `result.username`".into(),
                })?;
            self.bot_username = Some(name);
        }
        Ok(self.bot_username.clone())
    }
}

/// `description` of a Telegram error body, or the body itself.
fn telegram_description(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("description")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string())
}

impl crate::runtime::Source for Source {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn streams(&self) -> Vec<String> {
        vec![STREAM.to_string()]
    }

    fn initial_cursor(&self, _stream: &str, since: Option<DateTime<Utc>>) -> Value {
        if since.is_some() {
            tracing::warn!(connector = %self.instance,
                "--since has no effect on telegram: the Bot API only hands out updates not yet confirmed (kept at most 24 h); starting from the earliest unconfirmed update");
        }
        json!(Cursor::default())
    }

    /// `getUpdates` with a higher offset confirms (deletes) the updates before it
    /// at Telegram: the next page is fetched only after Kafka took this one.
    fn fetch_ahead(&self) -> bool {
        false
    }

    async fn fetch(&mut self, _stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        let cur: Cursor =
            serde_json::from_value(cursor.clone()).map_err(|e| SourceError::CursorInvalid {
                message: format!("stored telegram cursor {cursor} is not {{\"offset\": n}}: {e}"),
                restart_from: json!(Cursor::default()),
            })?;
        let bot_username = self.bot_username().await?;
        let mut req = Request::default();
        if let Some(o) = cur.offset {
            req.query.push(("offset".into(), o.to_string()));
        }
        req.query.push(("limit".into(), self.cfg.limit.to_string()));
        req.query
            .push(("timeout".into(), self.cfg.long_poll_secs.to_string()));
        req.query.push((
            "allowed_updates".into(),
            serde_json::to_string(&self.cfg.allowed_updates).unwrap_or_else(|_| "[]".into()),
        ));
        let body = self.call("getUpdates", &req).await?;
        let received_at = Utc::now();
        let Some(updates) = body.get("result").and_then(Value::as_array) else {
            return Err(ApiError::Payload {
                source_name: self.instance.clone(),
                url: self.client.shown(&self.method_url("getUpdates")),
                message: "`result` is not an array of updates".into(),
            }
            .into());
        };
        let ctx = Ctx {
            bot_id: &self.bot_id,
            bot_username: bot_username.as_deref(),
            group_messages: self.cfg.group_messages,
            include_text: self.cfg.include_text,
            received_at,
        };
        let mut page = Page {
            objects: updates.len() as u64,
            caught_up: updates.is_empty(),
            cursor: cursor.clone(),
            ..Page::default()
        };
        let mut max_id: Option<i64> = None;
        let mut skipped = 0u64;
        for u in updates {
            if let Some(id) = mapping::update_id(u) {
                max_id = Some(max_id.map_or(id, |m| m.max(id)));
            }
            match mapping::map_update(u, &ctx) {
                Mapped::Event(ev) => {
                    page.position = Some(
                        page.position
                            .map_or(ev.occurred_at, |p: DateTime<Utc>| p.max(ev.occurred_at)),
                    );
                    page.events.push(*ev);
                }
                Mapped::Skipped(why) => {
                    skipped += 1;
                    metrics::counter!("socialcrm_connector_skipped_objects_total",
                        "connector" => self.instance.clone(), "reason" => why.as_str())
                    .increment(1);
                }
                Mapped::Rejected(r) => page.rejected.push(r),
            }
        }
        if skipped > 0 {
            tracing::debug!(connector = %self.instance, skipped, "updates skipped (not messages to the bot)");
        }
        match max_id {
            Some(m) => {
                page.cursor = json!(Cursor {
                    offset: Some(m + 1)
                })
            }
            None if !updates.is_empty() => {
                // without an update_id the offset cannot move past these updates
                return Err(ApiError::Payload {
                    source_name: self.instance.clone(),
                    url: self.client.shown(&self.method_url("getUpdates")),
                    message: format!(
                        "{} updates without a numeric `update_id`; cannot confirm them",
                        updates.len()
                    ),
                }
                .into());
            }
            None => {}
        }
        Ok(page)
    }
}

/// A rejected update (used by mapping).
pub(crate) fn rejected(id: Option<i64>, reason: impl Into<String>, raw: &Value) -> Rejected {
    Rejected::json(
        id.map_or_else(|| "?".to_string(), |i| format!("update:{i}")),
        reason,
        raw,
    )
}
