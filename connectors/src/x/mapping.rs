//! X API v2 mention timeline answers → canonical events. Pure functions: no I/O.
//!
//! | X (`GET /2/users/:id/mentions`) | canonical |
//! |---|---|
//! | `data[].id` | `event_id` = `x:<brand id>:tweet:<id>`, `properties.tweet_id`, `properties.url` |
//! | `data[].author_id` | `identifiers` = `[x:<author_id>]` |
//! | `data[].created_at` | `occurred_at` |
//! | `data[].referenced_tweets[].type` | `type`: `replied_to` → `reply`, else `quoted` → `quote`, else `retweeted` → `reshare`, else `mention` |
//! | brand id, `in_reply_to_user_id`, authors of the referenced tweets (`includes.tweets[].author_id`) | `target` (`x:<id>`, never the actor) |
//! | `includes.users[]` of the author: `username`, `name`, `public_metrics.*` | `traits`: `x_username`, `name`, `followers_count`, `following_count`, `tweet_count`, `listed_count` |
//! | `text`, `lang`, `conversation_id`, `in_reply_to_user_id`, `referenced_tweets`, `public_metrics`, `entities.hashtags/cashtags/urls/mentions`, `edit_history_tweet_ids` (edited posts only) | `properties` |
//!
//! Posts written by the brand account itself are not events (the brand is not a
//! customer); they are counted and skipped.

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier, JsonObject, SCHEMA_VERSION};

use crate::runtime::Rejected;

/// What every event of one answer shares.
#[derive(Debug, Clone, Copy)]
pub struct MapContext<'a> {
    /// The brand's numeric user id (normalised, no leading zeros).
    pub brand_id: &'a str,
    /// `x:<brand id>`.
    pub source: &'a str,
    pub received_at: DateTime<Utc>,
    /// Posts with an id at or below this are already synced and skipped.
    pub since_id: Option<&'a str>,
}

/// `meta` of a timeline answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub newest_id: Option<String>,
    #[serde(default)]
    pub oldest_id: Option<String>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub previous_token: Option<String>,
}

/// One entry of `errors` in a 200 answer (a referenced post that was deleted, a
/// suspended author, ...): X still answers with the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialError {
    pub resource_type: String,
    pub resource_id: String,
    pub parameter: String,
    pub title: String,
    pub detail: String,
}

/// One answer, mapped.
#[derive(Debug, Default)]
pub struct MappedPage {
    pub events: Vec<CanonicalEvent>,
    pub rejected: Vec<Rejected>,
    /// Posts in `data`.
    pub objects: u64,
    /// Posts by the brand account itself (not events).
    pub skipped_own: u64,
    /// Posts at or below `since_id` (already synced; X's `since_id` is exclusive,
    /// this only guards against an inclusive answer).
    pub skipped_synced: u64,
    pub meta: Meta,
    pub errors: Vec<PartialError>,
    /// Highest post id in `data` (also of rejected posts).
    pub newest_id: Option<String>,
    /// Newest `created_at` among the mapped posts.
    pub newest_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    includes: Option<Includes<'a>>,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
struct Includes<'a> {
    #[serde(borrow, default)]
    users: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    tweets: Option<Vec<&'a RawValue>>,
}

/// A post object with the `tweet.fields` the connector asks for.
#[derive(Debug, Deserialize)]
pub struct Tweet {
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub author_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub in_reply_to_user_id: Option<String>,
    #[serde(default)]
    pub referenced_tweets: Option<Vec<Reference>>,
    #[serde(default)]
    pub public_metrics: Option<Map<String, Value>>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub entities: Option<Entities>,
    /// Sent by default: the ids of every version of an edited post, oldest first.
    #[serde(default)]
    pub edit_history_tweet_ids: Option<Vec<String>>,
}

/// `referenced_tweets[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// The parts of `entities` that are kept.
#[derive(Debug, Default, Deserialize)]
pub struct Entities {
    #[serde(default)]
    pub hashtags: Option<Vec<TagEntity>>,
    #[serde(default)]
    pub cashtags: Option<Vec<TagEntity>>,
    #[serde(default)]
    pub urls: Option<Vec<UrlEntity>>,
    #[serde(default)]
    pub mentions: Option<Vec<MentionEntity>>,
}

#[derive(Debug, Deserialize)]
pub struct TagEntity {
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UrlEntity {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub expanded_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MentionEntity {
    #[serde(default)]
    pub username: Option<String>,
}

/// A user object from `includes.users` (`user.fields=public_metrics,username`;
/// `id` and `name` are always sent).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub public_metrics: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct IncludedTweet {
    id: String,
    #[serde(default)]
    author_id: Option<String>,
}

/// What `includes` holds, by id.
#[derive(Debug, Default)]
pub struct Included {
    pub users: HashMap<String, User>,
    /// Referenced post id → its author id.
    pub tweet_authors: HashMap<String, String>,
}

/// User `public_metrics` kept as traits.
const USER_METRICS: [&str; 4] = [
    "followers_count",
    "following_count",
    "tweet_count",
    "listed_count",
];

/// True for X ids: decimal digits only (at most 20, as in a u64).
pub fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares two numeric ids by value (X ids are u64 snowflakes, sent as strings).
pub fn cmp_ids(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The larger of two optional numeric ids.
pub fn max_id(a: Option<String>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if is_numeric_id(b) => {
            if cmp_ids(b, &a) == Ordering::Greater {
                Some(b.to_string())
            } else {
                Some(a)
            }
        }
        (None, Some(b)) if is_numeric_id(b) => Some(b.to_string()),
        (a, _) => a,
    }
}

/// `created_at`: RFC 3339 as X v2 sends it (`2021-01-06T18:40:40.000Z`); the v1.1
/// form (`Wed Jan 06 18:40:40 +0000 2021`, seen in X's own reference examples) is
/// accepted too.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    DateTime::parse_from_str(s.trim(), "%a %b %d %H:%M:%S %z %Y")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads `includes` (users, referenced posts). Malformed entries are left out: a
/// missing profile only costs traits, never the event.
fn read_includes(inc: Option<Includes<'_>>) -> Included {
    let mut out = Included::default();
    let Some(inc) = inc else { return out };
    for raw in inc.users.unwrap_or_default() {
        match serde_json::from_str::<User>(raw.get()) {
            Ok(u) => {
                out.users.insert(u.id.clone(), u);
            }
            Err(e) => tracing::debug!(error = %e, "includes.users entry ignored"),
        }
    }
    for raw in inc.tweets.unwrap_or_default() {
        match serde_json::from_str::<IncludedTweet>(raw.get()) {
            Ok(IncludedTweet {
                id,
                author_id: Some(a),
            }) => {
                out.tweet_authors.insert(id, a);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "includes.tweets entry ignored"),
        }
    }
    out
}

/// The `errors` of an answer (objects X could not return), read.
fn partial_errors(errors: Option<Vec<Value>>) -> Vec<PartialError> {
    errors
        .unwrap_or_default()
        .iter()
        .map(partial_error)
        .collect()
}

fn partial_error(v: &Value) -> PartialError {
    let s = |k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let mut resource_id = s("resource_id");
    if resource_id.is_empty() {
        resource_id = s("value");
    }
    PartialError {
        resource_type: s("resource_type"),
        resource_id,
        parameter: s("parameter"),
        title: s("title"),
        detail: {
            let d = s("detail");
            if d.is_empty() {
                s("message")
            } else {
                d
            }
        },
    }
}

/// Maps one answer of the mention timeline. `Err` when the body is not the
/// documented JSON object at all; single bad posts become [`Rejected`].
pub fn map_response(body: &[u8], ctx: &MapContext<'_>) -> Result<MappedPage, String> {
    parse_response(body).map(|p| map_parsed(p, ctx))
}

/// One answer, parsed but not mapped: what the cursor needs (`meta`, the
/// newest post id, the number of posts, partial errors) and the posts.
#[derive(Debug, Default)]
pub struct ParsedPage {
    /// Posts in `data`.
    pub objects: u64,
    pub meta: Meta,
    pub errors: Vec<PartialError>,
    /// Highest post id in `data` (also of rejected posts).
    pub newest_id: Option<String>,
    /// Each post of `data`, in order: typed with its text, or rejected.
    posts: Vec<Result<(Tweet, Box<RawValue>), Rejected>>,
    included: Included,
}

/// What the next request needs from an answer, read without parsing the posts:
/// [`parse_response`]'s `objects`, `meta`, `errors` and `newest_id`, for the
/// same bodies (the shapes checked are the same, so a body this accepts
/// [`parse_response`] accepts too).
#[derive(Debug, Default, PartialEq)]
pub struct PageHead {
    /// Posts in `data`.
    pub objects: u64,
    pub meta: Meta,
    pub errors: Vec<PartialError>,
    /// Highest post id in `data` (also of posts that will be rejected).
    pub newest_id: Option<String>,
}

#[derive(Deserialize)]
struct HeadEnvelope<'a> {
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    #[allow(dead_code)] // read for its shape only
    includes: Option<HeadIncludes>,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

/// [`Includes`] with its entries skipped, not kept.
#[derive(Deserialize)]
struct HeadIncludes {
    #[serde(default)]
    #[allow(dead_code)] // read for its shape only
    users: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    #[allow(dead_code)]
    tweets: Option<Vec<serde::de::IgnoredAny>>,
}

/// A post's `id` alone (the rest of the post is skipped).
#[derive(Deserialize)]
struct PostId<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Reads what the cursor needs from an answer (see [`PageHead`]); the posts
/// are parsed later, by [`parse_response`].
pub fn parse_head(body: &[u8]) -> Result<PageHead, String> {
    let env: HeadEnvelope<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("not the documented timeline object: {e}"))?;
    let data = env.data.unwrap_or_default();
    let mut newest_id = None;
    for raw in &data {
        // as in parse_response: the id of a post, typed or rejected, when it is a string
        let id = serde_json::from_str::<PostId<'_>>(raw.get())
            .ok()
            .and_then(|p| p.id)
            .and_then(|id| serde_json::from_str::<String>(id.get()).ok());
        if let Some(id) = id {
            newest_id = max_id(newest_id, Some(&id));
        }
    }
    Ok(PageHead {
        objects: data.len() as u64,
        meta: env.meta.unwrap_or_default(),
        errors: partial_errors(env.errors),
        newest_id,
    })
}

/// The first half of [`map_response`]: parses the answer and each post; the
/// mapping is [`map_parsed`].
pub fn parse_response(body: &[u8]) -> Result<ParsedPage, String> {
    let env: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("not the documented timeline object: {e}"))?;
    let included = read_includes(env.includes);
    let data = env.data.unwrap_or_default();
    let mut page = ParsedPage {
        objects: data.len() as u64,
        meta: env.meta.unwrap_or_default(),
        errors: partial_errors(env.errors),
        posts: Vec::with_capacity(data.len()),
        included,
        ..ParsedPage::default()
    };
    for raw in data {
        match serde_json::from_str::<Tweet>(raw.get()) {
            Ok(t) => {
                page.newest_id = max_id(page.newest_id.take(), Some(&t.id));
                page.posts.push(Ok((t, raw.to_owned())));
            }
            Err(e) => {
                let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                let id = match v.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => "?".to_string(),
                };
                if let Some(i) = v.get("id").and_then(Value::as_str) {
                    page.newest_id = max_id(page.newest_id.take(), Some(i));
                }
                page.posts.push(Err(Rejected::json(
                    id,
                    format!("not the documented post object: {e}"),
                    &v,
                )));
            }
        }
    }
    Ok(page)
}

/// The second half of [`map_response`]: maps the parsed posts.
pub fn map_parsed(parsed: ParsedPage, ctx: &MapContext<'_>) -> MappedPage {
    let mut page = MappedPage {
        events: Vec::with_capacity(parsed.posts.len()),
        objects: parsed.objects,
        meta: parsed.meta,
        errors: parsed.errors,
        newest_id: parsed.newest_id,
        ..MappedPage::default()
    };
    let included = parsed.included;
    for post in parsed.posts {
        let (tweet, raw) = match post {
            Ok(t) => t,
            Err(r) => {
                page.rejected.push(r);
                continue;
            }
        };
        if let Some(since) = ctx.since_id {
            if is_numeric_id(&tweet.id) && cmp_ids(&tweet.id, since) != Ordering::Greater {
                page.skipped_synced += 1;
                continue;
            }
        }
        match map_tweet(&tweet, &included, ctx) {
            Ok(Some(ev)) => {
                page.newest_at = Some(match page.newest_at {
                    Some(t) => t.max(ev.occurred_at),
                    None => ev.occurred_at,
                });
                page.events.push(ev);
            }
            Ok(None) => page.skipped_own += 1,
            Err(reason) => {
                let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                page.rejected
                    .push(Rejected::json(tweet.id.clone(), reason, &v));
            }
        }
    }
    page
}

fn x_id(v: &str) -> Identifier {
    Identifier::new(IdType::X, v.trim_start_matches('0'))
}

/// The event type and the reference that decided it.
pub fn interaction_type(refs: &[Reference]) -> &'static str {
    let has = |k: &str| refs.iter().any(|r| r.kind == k);
    if has("replied_to") {
        "reply"
    } else if has("quoted") {
        "quote"
    } else if has("retweeted") {
        "reshare"
    } else {
        "mention"
    }
}

/// Maps one post. `Ok(None)` for the brand's own posts; `Err` with the reason for
/// a post that cannot be an event.
pub fn map_tweet(
    t: &Tweet,
    inc: &Included,
    ctx: &MapContext<'_>,
) -> Result<Option<CanonicalEvent>, String> {
    if !is_numeric_id(&t.id) {
        return Err(format!("`id` `{}` is not a numeric post id", t.id));
    }
    let author = match t.author_id.as_deref() {
        Some(a) if is_numeric_id(a) && !a.bytes().all(|b| b == b'0') => a,
        Some(a) => return Err(format!("`author_id` `{a}` is not a numeric user id")),
        None => return Err("`author_id` is missing".to_string()),
    };
    let author_norm = author.trim_start_matches('0');
    if author_norm == ctx.brand_id {
        return Ok(None);
    }
    let occurred_at = match t.created_at.as_deref() {
        Some(c) => parse_time(c).ok_or_else(|| format!("`created_at` `{c}` is not a time"))?,
        None => return Err("`created_at` is missing".to_string()),
    };
    let refs: &[Reference] = t.referenced_tweets.as_deref().unwrap_or(&[]);
    let event_type = interaction_type(refs);

    // target: the brand, whoever was replied to, the authors of quoted/reshared posts
    let mut target = vec![x_id(ctx.brand_id)];
    let mut add_target = |id: &str| {
        if !is_numeric_id(id) || id.bytes().all(|b| b == b'0') {
            return;
        }
        let ident = x_id(id);
        if ident.value != author_norm && !target.contains(&ident) {
            target.push(ident);
        }
    };
    if event_type == "reply" {
        if let Some(u) = t.in_reply_to_user_id.as_deref() {
            add_target(u);
        }
    }
    for r in refs {
        if matches!(r.kind.as_str(), "replied_to" | "quoted" | "retweeted") {
            if let Some(a) = inc.tweet_authors.get(&r.id) {
                add_target(a);
            }
        }
    }

    // traits: the author's profile as X shows it now
    let mut traits = Map::new();
    if let Some(u) = inc.users.get(author) {
        if let Some(name) = u.username.as_deref().filter(|s| !s.is_empty()) {
            traits.insert("x_username".into(), Value::String(name.to_string()));
        }
        if let Some(name) = u.name.as_deref().filter(|s| !s.is_empty()) {
            traits.insert("name".into(), Value::String(name.to_string()));
        }
        if let Some(m) = &u.public_metrics {
            for k in USER_METRICS {
                if let Some(v @ Value::Number(_)) = m.get(k) {
                    traits.insert(k.to_string(), v.clone());
                }
            }
        }
    }

    // properties: the post
    let mut p = Map::new();
    p.insert("tweet_id".into(), Value::String(t.id.clone()));
    if let Some(s) = &t.text {
        p.insert("text".into(), Value::String(s.clone()));
    }
    if let Some(s) = &t.lang {
        p.insert("lang".into(), Value::String(s.clone()));
    }
    if let Some(s) = &t.conversation_id {
        p.insert("conversation_id".into(), Value::String(s.clone()));
    }
    if let Some(s) = &t.in_reply_to_user_id {
        p.insert("in_reply_to_user_id".into(), Value::String(s.clone()));
    }
    if !refs.is_empty() {
        let list = refs
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("type".into(), Value::String(r.kind.clone()));
                o.insert("id".into(), Value::String(r.id.clone()));
                if let Some(a) = inc.tweet_authors.get(&r.id) {
                    o.insert("author_id".into(), Value::String(a.clone()));
                }
                Value::Object(o)
            })
            .collect();
        p.insert("referenced_tweets".into(), Value::Array(list));
    }
    if let Some(m) = &t.public_metrics {
        p.insert("public_metrics".into(), Value::Object(m.clone()));
    }
    // an edit is a new post with a new id: earlier versions are listed so that
    // reports can count a post once (both versions are events)
    if let Some(h) = t.edit_history_tweet_ids.as_ref().filter(|h| h.len() > 1) {
        let list = h.iter().cloned().map(Value::String).collect();
        p.insert("edit_history_tweet_ids".into(), Value::Array(list));
    }
    p.insert(
        "url".into(),
        Value::String(format!("https://x.com/i/web/status/{}", t.id)),
    );
    if let Some(e) = &t.entities {
        let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        let tags = |l: &Option<Vec<TagEntity>>| -> Vec<String> {
            l.iter()
                .flatten()
                .filter_map(|h| h.tag.clone())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let hashtags = tags(&e.hashtags);
        if !hashtags.is_empty() {
            p.insert("hashtags".into(), strings(hashtags));
        }
        let cashtags = tags(&e.cashtags);
        if !cashtags.is_empty() {
            p.insert("cashtags".into(), strings(cashtags));
        }
        let urls: Vec<String> = e
            .urls
            .iter()
            .flatten()
            .filter_map(|u| u.expanded_url.clone().or_else(|| u.url.clone()))
            .filter(|s| !s.is_empty())
            .collect();
        if !urls.is_empty() {
            p.insert("urls".into(), strings(urls));
        }
        let mentions: Vec<String> = e
            .mentions
            .iter()
            .flatten()
            .filter_map(|m| m.username.clone())
            .filter(|s| !s.is_empty())
            .collect();
        if !mentions.is_empty() {
            p.insert("mentioned_usernames".into(), strings(mentions));
        }
    }

    Ok(Some(CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id: format!("x:{}:tweet:{}", ctx.brand_id, t.id),
        source: ctx.source.to_string(),
        channel: Channel::Social,
        event_type: event_type.to_string(),
        name: None,
        occurred_at,
        received_at: ctx.received_at,
        identifiers: vec![x_id(author)],
        target,
        traits,
        properties: JsonObject::from_map(&p),
        revenue: None,
        context: JsonObject::empty(),
    }))
}
