//! Mastodon notification → canonical event. Pure functions: no I/O.
//!
//! | Mastodon | canonical |
//! |---|---|
//! | notification `id` | `event_id` = `mastodon:<domain>:notification:<id>` |
//! | `type` `mention` | `mention`, or `reply` when `status.in_reply_to_account_id` is the brand account |
//! | `type` `reblog` / `favourite` / `follow` / `status` | `reshare` / `like` / `follow` / `post` |
//! | `created_at` | `occurred_at` |
//! | `account.acct` (+ the server's domain for local accounts) | identifier `mastodon:@user@domain` |
//! | `account.display_name`, counts, `bot`, `url`, `avatar`, `note`, `fields` | traits |
//! | brand account (reblog, favourite, follow); `status.mentions[].acct` (mention, reply, post) | `target` |
//! | `status.*` (id, url, text, language, visibility, counts, tags, ...) | `properties` |
//!
//! A URL in a bio or profile field is only a *claimed* link: it is kept as the
//! `links` trait (and `verified_links` when Mastodon verified the `rel="me"`
//! back-link), never as an identifier.

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, JsonObject, Normalizer, SCHEMA_VERSION,
};

use crate::runtime::Rejected;
use crate::typed::Str;

/// Longest bio kept in the `bio` trait (characters).
pub const MAX_BIO_CHARS: usize = 500;
/// Most links kept per profile.
pub const MAX_LINKS: usize = 20;
/// Most hashtags kept per status.
pub const MAX_TAGS: usize = 30;
/// Canonical events carry at most 64 targets.
pub const MAX_TARGETS: usize = 64;

/// What the mapping needs to know about the brand account and the server.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The server's domain (`mastodon.social`): local handles, event ids, source.
    pub domain: &'a str,
    /// `mastodon:<domain>`.
    pub source: &'a str,
    /// The brand account's id on its server.
    pub brand_id: &'a str,
    /// The brand's handle, `@brand@mastodon.social`.
    pub brand_handle: &'a str,
    /// Notification types asked for; others are skipped.
    pub types: &'a [String],
    pub received_at: DateTime<Utc>,
    /// Longest `properties.text`.
    pub max_text_chars: usize,
}

/// The outcome for one notification that is not malformed.
#[derive(Debug)]
pub enum Mapped {
    Event(Box<CanonicalEvent>),
    /// A well-formed notification of a type that was not asked for (servers older
    /// than 3.5 ignore `types[]`), with its type.
    Skipped(String),
}

/// A page of notifications, mapped.
#[derive(Debug, Default)]
pub struct MappedPage {
    pub events: Vec<CanonicalEvent>,
    pub rejected: Vec<Rejected>,
    pub skipped: usize,
}

/// `mastodon:<domain>:notification:<id>`.
pub fn event_id(domain: &str, notification_id: &str) -> String {
    format!("mastodon:{domain}:notification:{notification_id}")
}

/// `mastodon:<domain>`.
pub fn source_name(domain: &str) -> String {
    format!("mastodon:{domain}")
}

/// `@user@domain` from an `acct` (`user` for local accounts, `user@domain` for
/// remote ones), normalised; an error when it is not a valid handle.
pub fn handle(acct: &str, local_domain: &str) -> Result<String, String> {
    let a = acct.trim().trim_start_matches('@');
    let full = if a.contains('@') {
        format!("@{a}")
    } else {
        format!("@{a}@{local_domain}")
    };
    Normalizer::default()
        .normalize_value(IdType::Mastodon, &full)
        .map_err(|e| e.to_string())
}

/// Maps every notification of a page; malformed ones become [`Rejected`].
pub fn map_notifications(items: &[Value], ctx: &Context<'_>) -> MappedPage {
    let mut page = MappedPage {
        events: Vec::with_capacity(items.len()),
        ..MappedPage::default()
    };
    for item in items {
        match map_notification(item, ctx) {
            Ok(Mapped::Event(ev)) => page.events.push(*ev),
            Ok(Mapped::Skipped(_)) => page.skipped += 1,
            Err(r) => page.rejected.push(r),
        }
    }
    page
}

/// The notification's id as text (Mastodon sends a string; a number is accepted).
pub fn notification_id(n: &Value) -> Option<String> {
    id_of(n.get("id"))
}

fn id_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn time_of(m: &Map<String, Value>, key: &str) -> Result<DateTime<Utc>, String> {
    let s = str_of(m, key).ok_or_else(|| format!("`{key}` is missing or not a string"))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{key}` `{s}` is not an ISO 8601 date-time ({e})"))
}

/// Maps one notification.
pub fn map_notification(n: &Value, ctx: &Context<'_>) -> Result<Mapped, Rejected> {
    let id = notification_id(n);
    let reject =
        |reason: String| Rejected::json(id.clone().unwrap_or_else(|| "?".into()), reason, n);
    let Some(m) = n.as_object() else {
        return Err(reject("notification is not a JSON object".into()));
    };
    let Some(nid) = id.clone() else {
        return Err(reject("`id` is missing or not a string".into()));
    };
    let kind =
        str_of(m, "type").ok_or_else(|| reject("`type` is missing or not a string".into()))?;
    if !ctx.types.iter().any(|t| t == kind) {
        return Ok(Mapped::Skipped(kind.to_string()));
    }
    let occurred_at = time_of(m, "created_at").map_err(&reject)?;
    let account = match m.get("account") {
        Some(Value::Object(a)) => a,
        _ => return Err(reject("`account` is missing or not an object".into())),
    };
    let acct = str_of(account, "acct")
        .ok_or_else(|| reject("`account.acct` is missing or not a string".into()))?;
    let actor = handle(acct, ctx.domain).map_err(|e| {
        reject(format!(
            "`account.acct` `{acct}` is not a usable handle: {e}"
        ))
    })?;
    let status = match m.get("status") {
        Some(Value::Object(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(_) => return Err(reject("`status` is not an object".into())),
    };
    let needs_status = kind != "follow";
    let status = match (needs_status, status) {
        (true, None) => {
            return Err(reject(format!(
                "`status` is required in a `{kind}` notification"
            )))
        }
        (_, s) => s,
    };
    if let Some(s) = status {
        if id_of(s.get("id")).is_none() {
            return Err(reject("`status.id` is missing or not a string".into()));
        }
    }

    let brand = Identifier::new(IdType::Mastodon, ctx.brand_handle);
    let mentions: Vec<String> = status
        .map(|s| mention_handles(s, ctx.domain))
        .unwrap_or_default();
    let is_reply_to_brand = status
        .and_then(|s| id_of(s.get("in_reply_to_account_id")))
        .is_some_and(|a| a == ctx.brand_id);
    let (event_type, mut target): (&str, Vec<Identifier>) = match kind {
        "mention" => {
            let t = if is_reply_to_brand {
                "reply"
            } else {
                "mention"
            };
            let mut target: Vec<Identifier> = mentions
                .iter()
                .map(|h| Identifier::new(IdType::Mastodon, h.clone()))
                .collect();
            // the notification exists because the brand was mentioned (or replied to)
            if !target.contains(&brand) {
                target.insert(0, brand.clone());
            }
            (t, target)
        }
        "status" => (
            "post",
            mentions
                .iter()
                .map(|h| Identifier::new(IdType::Mastodon, h.clone()))
                .collect(),
        ),
        "reblog" => ("reshare", vec![brand.clone()]),
        "favourite" => ("like", vec![brand.clone()]),
        "follow" => ("follow", vec![brand.clone()]),
        other => return Ok(Mapped::Skipped(other.to_string())),
    };
    // the actor interacting with themselves is no edge of the graph
    target.retain(|t| t.value != actor);
    target.truncate(MAX_TARGETS);

    let mut properties = Map::new();
    properties.insert("notification_id".into(), Value::String(nid.clone()));
    properties.insert("notification_type".into(), Value::String(kind.to_string()));
    if let Some(aid) = id_of(account.get("id")) {
        properties.insert("account_id".into(), Value::String(aid));
    }
    if let Some(s) = status {
        status_properties(s, &mentions, ctx, &mut properties);
    }

    let ev = CanonicalEvent {
        claimed: claimed_emails(&fields_of(account)),
        schema_version: SCHEMA_VERSION,
        event_id: event_id(ctx.domain, &nid),
        source: ctx.source.to_string(),
        channel: Channel::Social,
        event_type: event_type.to_string(),
        name: None,
        occurred_at,
        received_at: ctx.received_at,
        identifiers: vec![Identifier::new(IdType::Mastodon, actor.clone())],
        target,
        traits: account_traits(account, &actor),
        properties: JsonObject::from_map(&properties),
        revenue: None,
        context: JsonObject::empty(),
    };
    Ok(Mapped::Event(Box::new(ev)))
}

/// Handles of `status.mentions[].acct` that are valid, in order, without repeats.
fn mention_handles(s: &Map<String, Value>, domain: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(Value::Array(ms)) = s.get("mentions") {
        for m in ms {
            if let Some(acct) = m.get("acct").and_then(Value::as_str) {
                if let Ok(h) = handle(acct, domain) {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
        }
    }
    out
}

fn status_properties(
    s: &Map<String, Value>,
    mentions: &[String],
    ctx: &Context<'_>,
    p: &mut Map<String, Value>,
) {
    if let Some(id) = id_of(s.get("id")) {
        p.insert("status_id".into(), Value::String(id));
    }
    if let Some(url) = str_of(s, "url").or_else(|| str_of(s, "uri")) {
        p.insert("status_url".into(), Value::String(url.to_string()));
    }
    if let Some(t) = str_of(s, "created_at") {
        p.insert("status_created_at".into(), Value::String(t.to_string()));
    }
    if let Some(html) = str_of(s, "content") {
        let (text, truncated) = html_to_text(html, ctx.max_text_chars);
        if !text.is_empty() {
            p.insert("text".into(), Value::String(text));
        }
        if truncated {
            p.insert("text_truncated".into(), Value::Bool(true));
        }
    }
    if let Some(sp) = str_of(s, "spoiler_text").filter(|x| !x.is_empty()) {
        let (text, _) = html_to_text(sp, ctx.max_text_chars);
        p.insert("spoiler_text".into(), Value::String(text));
    }
    for key in ["language", "visibility"] {
        if let Some(v) = str_of(s, key) {
            p.insert(key.into(), Value::String(v.to_string()));
        }
    }
    if let Some(b) = s.get("sensitive").and_then(Value::as_bool) {
        p.insert("sensitive".into(), Value::Bool(b));
    }
    for key in ["in_reply_to_id", "in_reply_to_account_id"] {
        if let Some(v) = id_of(s.get(key)) {
            p.insert(key.into(), Value::String(v));
        }
    }
    for key in ["replies_count", "reblogs_count", "favourites_count"] {
        if let Some(n) = s.get(key).and_then(Value::as_u64) {
            p.insert(key.into(), Value::from(n));
        }
    }
    if let Some(Value::Array(media)) = s.get("media_attachments") {
        if !media.is_empty() {
            p.insert("media_count".into(), Value::from(media.len()));
        }
    }
    if let Some(Value::Array(tags)) = s.get("tags") {
        let names: Vec<Value> = tags
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .map(|n| Value::String(n.to_lowercase()))
            .take(MAX_TAGS)
            .collect();
        if !names.is_empty() {
            p.insert("tags".into(), Value::Array(names));
        }
    }
    if !mentions.is_empty() {
        p.insert(
            "mentions".into(),
            Value::Array(
                mentions
                    .iter()
                    .take(MAX_TARGETS)
                    .map(|h| Value::String(h.clone()))
                    .collect(),
            ),
        );
    }
}

/// Profile facts of the acting account.
fn account_traits(a: &Map<String, Value>, handle: &str) -> Map<String, Value> {
    let mut t = Map::new();
    if let Some(name) = str_of(a, "display_name")
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        t.insert("name".into(), Value::String(name.to_string()));
    }
    t.insert("mastodon_handle".into(), Value::String(handle.to_string()));
    if let Some(url) = str_of(a, "url") {
        t.insert("mastodon_url".into(), Value::String(url.to_string()));
    }
    for key in ["followers_count", "following_count", "statuses_count"] {
        if let Some(n) = a.get(key).and_then(Value::as_u64) {
            t.insert(key.into(), Value::from(n));
        }
    }
    if let Some(b) = a.get("bot").and_then(Value::as_bool) {
        t.insert("bot".into(), Value::Bool(b));
    }
    if let Some(av) = str_of(a, "avatar").filter(|u| !u.ends_with("/missing.png")) {
        t.insert("avatar_url".into(), Value::String(av.to_string()));
    }
    let note = str_of(a, "note").unwrap_or("");
    let (bio, _) = html_to_text(note, MAX_BIO_CHARS);
    if !bio.is_empty() {
        t.insert("bio".into(), Value::String(bio));
    }
    insert_links(&mut t, &fields_of(a), note);
    t
}

/// A profile field's value and whether the server verified its link.
pub(super) type Field<'a> = (&'a str, bool);

fn fields_of(a: &Map<String, Value>) -> Vec<Field<'_>> {
    match a.get("fields") {
        Some(Value::Array(fs)) => fs
            .iter()
            .filter_map(|f| {
                let value = f.get("value").and_then(Value::as_str)?;
                Some((value, f.get("verified_at").is_some_and(|v| v.is_string())))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn typed_fields<'a>(a: &'a TAccount<'_>) -> Vec<Field<'a>> {
    a.fields
        .iter()
        .flatten()
        .filter_map(|f| Some((f.value.as_deref()?, f.verified_at.is_some())))
        .collect()
}

/// `links` (the fields' and the bio's links) and `verified_links` traits.
fn insert_links(t: &mut Map<String, Value>, fields: &[Field<'_>], note: &str) {
    let mut links: Vec<String> = Vec::new();
    let mut verified: Vec<String> = Vec::new();
    for (value, is_verified) in fields {
        for l in field_links(value) {
            if *is_verified && !verified.contains(&l) {
                verified.push(l.clone());
            }
            if !links.contains(&l) {
                links.push(l);
            }
        }
    }
    for l in html_links(note) {
        if !links.contains(&l) {
            links.push(l);
        }
    }
    links.truncate(MAX_LINKS);
    verified.truncate(MAX_LINKS);
    if !links.is_empty() {
        t.insert(
            "links".into(),
            Value::Array(links.into_iter().map(Value::String).collect()),
        );
    }
    if !verified.is_empty() {
        t.insert(
            "verified_links".into(),
            Value::Array(verified.into_iter().map(Value::String).collect()),
        );
    }
}

/// Email addresses written in the account's profile fields (`Email | ann@shop.io`,
/// or a `mailto:` link): the person claims them, Mastodon does not verify them,
/// so they travel as `claimed` identifiers (docs/identity.md, trust levels).
pub(super) fn claimed_emails(fields: &[Field<'_>]) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = Vec::new();
    for (v, _) in fields {
        let (text, _) = html_to_text(v, 2048);
        // `mailto:` hrefs (html_links keeps web links only)
        let hrefs = v.split("mailto:").skip(1).filter_map(|rest| {
            rest.split(|c: char| {
                c == '"' || c == '\'' || c == '<' || c == '>' || c == '?' || c.is_whitespace()
            })
            .next()
            .map(str::to_string)
        });
        let tokens = text
            .split(|c: char| c.is_whitespace() || "<>\"'(),;".contains(c))
            .map(str::to_string)
            .chain(hrefs);
        for t in tokens {
            let t = t.strip_prefix("mailto:").unwrap_or(&t);
            let t = t.trim_end_matches(['.', ':']);
            let Some((local, domain)) = t.split_once('@') else {
                continue;
            };
            // `@user@instance` is a handle, not an address
            if local.is_empty() || !domain.contains('.') || domain.contains('@') || t.contains('/')
            {
                continue;
            }
            let id = Identifier::new(IdType::Email, t);
            if !out.contains(&id) && out.len() < 4 {
                out.push(id);
            }
        }
    }
    out
}

/// Links of a profile field: its `<a href>`s, or the value itself when it is a
/// bare URL (servers that send plain text).
fn field_links(value: &str) -> Vec<String> {
    let links = html_links(value);
    if !links.is_empty() || value.contains('<') {
        return links;
    }
    let (text, _) = html_to_text(value, 2048);
    if is_web_url(&text) && !text.contains(char::is_whitespace) {
        vec![text]
    } else {
        Vec::new()
    }
}

fn is_web_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    (l.starts_with("https://") || l.starts_with("http://")) && s.len() > 8 && s.len() <= 2048
}

/// `href`s of the `<a>` tags of Mastodon's sanitised HTML that point to web
/// pages, leaving out mentions and hashtags (links to profiles and tag pages).
pub fn html_links(html: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        let tag = &after[..end];
        rest = &after[end + 1..];
        let is_a = matches!(tag.as_bytes(), [b'a' | b'A', b' ' | b'\n' | b'\t', ..]);
        if !is_a {
            continue;
        }
        let class = attr(tag, "class").unwrap_or_default();
        if class
            .split_whitespace()
            .any(|c| c == "mention" || c == "hashtag")
        {
            continue;
        }
        if let Some(href) = attr(tag, "href") {
            let href = decode_entities(&href);
            if is_web_url(&href) && !out.contains(&href) {
                out.push(href);
            }
        }
    }
    out
}

/// The value of `name="..."` (or `'...'`) inside a tag's text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let bytes = tag.as_bytes();
    let mut i = 0;
    while let Some(pos) = tag[i..].find(name) {
        let at = i + pos;
        i = at + name.len();
        let before_ok = at == 0 || bytes[at - 1].is_ascii_whitespace();
        let rest = tag[i..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let quote = rest.chars().next()?;
        if quote == '"' || quote == '\'' {
            let inner = &rest[1..];
            let close = inner.find(quote)?;
            return Some(inner[..close].to_string());
        }
        let endv = rest.find(char::is_whitespace).unwrap_or(rest.len());
        return Some(rest[..endv].to_string());
    }
    None
}

/// Mastodon's sanitised HTML (`<p>`, `<br>`, `<span>`, `<a>`) as plain text: tags
/// removed, paragraphs and line breaks kept as newlines, entities decoded, at most
/// `max_chars` characters. Returns the text and whether it was cut.
pub fn html_to_text(html: &str, max_chars: usize) -> (String, bool) {
    let mut out = String::with_capacity(
        html.len()
            .min(max_chars.saturating_mul(4).saturating_add(16)),
    );
    let mut rest = html;
    while !rest.is_empty() {
        let next = rest.find(['<', '&']).unwrap_or(rest.len());
        out.push_str(&rest[..next]);
        rest = &rest[next..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => {
                    // tag names in any case, read in place (no copy per tag)
                    let tag = rest[1..end].trim();
                    let name = tag
                        .trim_start_matches('/')
                        .split(|c: char| c.is_whitespace() || c == '/')
                        .next()
                        .unwrap_or("");
                    if name.eq_ignore_ascii_case("br") {
                        out.push('\n');
                    } else if name.eq_ignore_ascii_case("p") && tag.starts_with('/') {
                        out.push_str("\n\n");
                    }
                    rest = &rest[end + 1..];
                }
                None => {
                    // a lone `<`: text
                    out.push('<');
                    rest = &rest[1..];
                }
            }
        } else if rest.starts_with('&') {
            let end = rest[1..]
                .char_indices()
                .take(12)
                .find(|(_, c)| *c == ';')
                .map(|(i, _)| i + 1);
            match end.and_then(|e| entity(&rest[1..e]).map(|c| (e, c))) {
                Some((e, c)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    // tidy whitespace: trim lines' ends, at most one empty line in a row
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
    }
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => {
            text.truncate(i);
            (text, true)
        }
        None => (text, false),
    }
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    html_to_text(s, usize::MAX).0
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            char::from_u32(code).filter(|c| !c.is_control() || *c == '\n')
        }
    }
}

// ---------------------------------------------------------------------------
// Fast path: typed parsing.
//
// A page is read as raw JSON texts, each notification then parsed into the typed
// structs below (no `Value` tree). The typed structs are strict: anything they
// cannot represent exactly as the `Value` path would read it (a number where a
// string is expected, a non-object in a list, a duplicate key, ...) fails the
// typed parse, and such a notification goes through [`map_notification`] on its
// `Value`, so the outcome (event, skip or rejection with its reason) is the same.
// Rejections always come from [`map_notification`].
// ---------------------------------------------------------------------------

/// A notification id as [`notification_id`] reads it: a non-blank string
/// (trimmed) or an unsigned integer; `None` for a blank string. Other JSON fails.
#[derive(Debug, Default)]
struct TId(Option<String>);

impl<'de> Deserialize<'de> for TId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an unsigned integer id")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TId, E> {
                let t = s.trim();
                Ok(TId((!t.is_empty()).then(|| t.to_string())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TId, E> {
                Ok(TId(Some(n.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object (never an array, which derived structs would also accept) read
/// as `T`.
#[derive(Debug)]
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Debug, Deserialize)]
struct TNotification<'a> {
    #[serde(default)]
    id: Option<TId>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    created_at: Option<Str<'a>>,
    #[serde(default, borrow)]
    account: Option<Obj<TAccount<'a>>>,
    #[serde(default, borrow)]
    status: Option<Obj<TStatus<'a>>>,
}

impl TNotification<'_> {
    fn id(&self) -> Option<String> {
        self.id.as_ref().and_then(|i| i.0.clone())
    }
}

#[derive(Debug, Deserialize)]
struct TAccount<'a> {
    #[serde(default)]
    id: Option<TId>,
    #[serde(default, borrow)]
    acct: Option<Str<'a>>,
    #[serde(default, borrow)]
    display_name: Option<Str<'a>>,
    #[serde(default, borrow)]
    url: Option<Str<'a>>,
    #[serde(default)]
    followers_count: Option<u64>,
    #[serde(default)]
    following_count: Option<u64>,
    #[serde(default)]
    statuses_count: Option<u64>,
    #[serde(default)]
    bot: Option<bool>,
    #[serde(default, borrow)]
    avatar: Option<Str<'a>>,
    #[serde(default, borrow)]
    note: Option<Str<'a>>,
    #[serde(default, borrow)]
    fields: Option<Vec<Obj<TField<'a>>>>,
}

#[derive(Debug, Deserialize)]
struct TField<'a> {
    #[serde(default, borrow)]
    value: Option<Str<'a>>,
    #[serde(default, borrow)]
    verified_at: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
struct TStatus<'a> {
    #[serde(default)]
    id: Option<TId>,
    #[serde(default, borrow)]
    url: Option<Str<'a>>,
    #[serde(default, borrow)]
    uri: Option<Str<'a>>,
    #[serde(default, borrow)]
    created_at: Option<Str<'a>>,
    #[serde(default, borrow)]
    content: Option<Str<'a>>,
    #[serde(default, borrow)]
    spoiler_text: Option<Str<'a>>,
    #[serde(default, borrow)]
    language: Option<Str<'a>>,
    #[serde(default, borrow)]
    visibility: Option<Str<'a>>,
    #[serde(default)]
    sensitive: Option<bool>,
    #[serde(default)]
    in_reply_to_id: Option<TId>,
    #[serde(default)]
    in_reply_to_account_id: Option<TId>,
    #[serde(default)]
    replies_count: Option<u64>,
    #[serde(default)]
    reblogs_count: Option<u64>,
    #[serde(default)]
    favourites_count: Option<u64>,
    #[serde(default)]
    media_attachments: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    tags: Option<Vec<Obj<TTag<'a>>>>,
    #[serde(default, borrow)]
    mentions: Option<Vec<Obj<TMention<'a>>>>,
}

#[derive(Debug, Deserialize)]
struct TTag<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
struct TMention<'a> {
    #[serde(default, borrow)]
    acct: Option<Str<'a>>,
}

fn tid(v: &Option<TId>) -> Option<String> {
    v.as_ref().and_then(|i| i.0.clone())
}

/// One notification of a page, parsed once: its id (as [`notification_id`]
/// reads it) for ordering and the cursor, and its typed form when it has one.
/// Borrows from the page's text: its strings without escapes are not copied.
#[derive(Debug)]
pub struct PageItem<'a> {
    pub id: Option<String>,
    /// The notification's JSON text (for the `Value` mapping when the typed one
    /// declines).
    raw: &'a str,
    typed: Option<Box<Obj<TNotification<'a>>>>,
}

impl<'a> PageItem<'a> {
    /// Parses one notification of a page.
    pub fn parse(raw: &'a RawValue) -> PageItem<'a> {
        Self::parse_str(raw.get())
    }

    /// Whether the typed structs read it (tests).
    #[cfg(test)]
    pub(super) fn is_typed(&self) -> bool {
        self.typed.is_some()
    }

    /// [`PageItem::parse`] of a notification's JSON text (one element of a page's
    /// array, as the page was read).
    pub fn parse_str(raw: &'a str) -> PageItem<'a> {
        match serde_json::from_str::<Obj<TNotification<'a>>>(raw) {
            Ok(t) => PageItem {
                id: t.id(),
                raw,
                typed: Some(Box::new(t)),
            },
            Err(_) => PageItem {
                id: notification_id(&text_value(raw)),
                raw,
                typed: None,
            },
        }
    }
}

/// The id of one notification of a page as [`PageItem::parse`] reads it, without
/// building the rest (the cursor needs only the ids; the mapping runs later).
pub fn raw_notification_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<TId>,
    }
    match serde_json::from_str::<Obj<IdOnly>>(raw.get()) {
        Ok(t) => t.0.id.and_then(|i| i.0),
        Err(_) => notification_id(&text_value(raw.get())),
    }
}

fn text_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

/// [`map_notifications`] for parsed page items: the same outcomes.
pub fn map_items(items: &[PageItem], ctx: &Context<'_>) -> MappedPage {
    let mut page = MappedPage {
        events: Vec::with_capacity(items.len()),
        ..MappedPage::default()
    };
    let brand = Identifier::new(IdType::Mastodon, ctx.brand_handle);
    for item in items {
        let fast = item
            .typed
            .as_deref()
            .and_then(|t| map_typed(t, ctx, &brand));
        let outcome = match fast {
            Some(m) => Ok(m),
            None => map_notification(&text_value(item.raw), ctx),
        };
        match outcome {
            Ok(Mapped::Event(ev)) => page.events.push(*ev),
            Ok(Mapped::Skipped(_)) => page.skipped += 1,
            Err(r) => page.rejected.push(r),
        }
    }
    page
}

/// [`map_notification`] on the typed form; `None` when the notification is to be
/// rejected (the `Value` path then says why).
fn map_typed(n: &TNotification, ctx: &Context<'_>, brand: &Identifier) -> Option<Mapped> {
    let nid = n.id()?;
    let kind = n.kind.as_deref()?;
    if !ctx.types.iter().any(|t| t == kind) {
        return Some(Mapped::Skipped(kind.to_string()));
    }
    let occurred_at = DateTime::parse_from_rfc3339(n.created_at.as_deref()?)
        .ok()?
        .with_timezone(&Utc);
    let account = n.account.as_deref()?;
    let actor = handle(account.acct.as_deref()?, ctx.domain).ok()?;
    let status = n.status.as_deref();
    if kind != "follow" && status.is_none() {
        return None;
    }
    if let Some(s) = status {
        tid(&s.id)?;
    }
    let mentions: Vec<String> = status
        .map(|s| typed_mention_handles(s, ctx.domain))
        .unwrap_or_default();
    let is_reply_to_brand = status
        .and_then(|s| s.in_reply_to_account_id.as_ref())
        .and_then(|i| i.0.as_deref())
        .is_some_and(|a| a == ctx.brand_id);
    let mention_targets = || -> Vec<Identifier> {
        mentions
            .iter()
            .map(|h| Identifier::new(IdType::Mastodon, h.clone()))
            .collect()
    };
    let (event_type, mut target): (&str, Vec<Identifier>) = match kind {
        "mention" => {
            let t = if is_reply_to_brand {
                "reply"
            } else {
                "mention"
            };
            let mut target = mention_targets();
            if !target.contains(brand) {
                target.insert(0, brand.clone());
            }
            (t, target)
        }
        "status" => ("post", mention_targets()),
        "reblog" => ("reshare", vec![brand.clone()]),
        "favourite" => ("like", vec![brand.clone()]),
        "follow" => ("follow", vec![brand.clone()]),
        other => return Some(Mapped::Skipped(other.to_string())),
    };
    target.retain(|t| t.value != actor);
    target.truncate(MAX_TARGETS);

    let mut properties = Map::new();
    properties.insert("notification_id".into(), Value::String(nid.clone()));
    properties.insert("notification_type".into(), Value::String(kind.to_string()));
    if let Some(aid) = tid(&account.id) {
        properties.insert("account_id".into(), Value::String(aid));
    }
    if let Some(s) = status {
        typed_status_properties(s, mentions, ctx, &mut properties);
    }
    let traits = typed_account_traits(account, &actor);
    Some(Mapped::Event(Box::new(CanonicalEvent {
        claimed: claimed_emails(&typed_fields(account)),
        schema_version: SCHEMA_VERSION,
        event_id: event_id(ctx.domain, &nid),
        source: ctx.source.to_string(),
        channel: Channel::Social,
        event_type: event_type.to_string(),
        name: None,
        occurred_at,
        received_at: ctx.received_at,
        identifiers: vec![Identifier::new(IdType::Mastodon, actor)],
        target,
        traits,
        properties: JsonObject::from_map(&properties),
        revenue: None,
        context: JsonObject::empty(),
    })))
}

fn typed_mention_handles(s: &TStatus, domain: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in s.mentions.iter().flatten() {
        if let Some(acct) = m.acct.as_deref() {
            if let Ok(h) = handle(acct, domain) {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
    }
    out
}

fn typed_status_properties(
    s: &TStatus,
    mentions: Vec<String>,
    ctx: &Context<'_>,
    p: &mut Map<String, Value>,
) {
    let text = |v: &Option<Str<'_>>| v.as_deref().map(|x| Value::String(x.to_string()));
    if let Some(id) = tid(&s.id) {
        p.insert("status_id".into(), Value::String(id));
    }
    if let Some(url) = s.url.as_deref().or(s.uri.as_deref()) {
        p.insert("status_url".into(), Value::String(url.to_string()));
    }
    if let Some(t) = text(&s.created_at) {
        p.insert("status_created_at".into(), t);
    }
    if let Some(html) = s.content.as_deref() {
        let (text, truncated) = html_to_text(html, ctx.max_text_chars);
        if !text.is_empty() {
            p.insert("text".into(), Value::String(text));
        }
        if truncated {
            p.insert("text_truncated".into(), Value::Bool(true));
        }
    }
    if let Some(sp) = s.spoiler_text.as_deref().filter(|x| !x.is_empty()) {
        let (text, _) = html_to_text(sp, ctx.max_text_chars);
        p.insert("spoiler_text".into(), Value::String(text));
    }
    if let Some(v) = text(&s.language) {
        p.insert("language".into(), v);
    }
    if let Some(v) = text(&s.visibility) {
        p.insert("visibility".into(), v);
    }
    if let Some(b) = s.sensitive {
        p.insert("sensitive".into(), Value::Bool(b));
    }
    if let Some(v) = tid(&s.in_reply_to_id) {
        p.insert("in_reply_to_id".into(), Value::String(v));
    }
    if let Some(v) = tid(&s.in_reply_to_account_id) {
        p.insert("in_reply_to_account_id".into(), Value::String(v));
    }
    for (key, n) in [
        ("replies_count", s.replies_count),
        ("reblogs_count", s.reblogs_count),
        ("favourites_count", s.favourites_count),
    ] {
        if let Some(n) = n {
            p.insert(key.into(), Value::from(n));
        }
    }
    if let Some(media) = &s.media_attachments {
        if !media.is_empty() {
            p.insert("media_count".into(), Value::from(media.len()));
        }
    }
    if let Some(tags) = &s.tags {
        let names: Vec<Value> = tags
            .iter()
            .filter_map(|t| t.name.as_deref())
            .map(|n| Value::String(n.to_lowercase()))
            .take(MAX_TAGS)
            .collect();
        if !names.is_empty() {
            p.insert("tags".into(), Value::Array(names));
        }
    }
    if !mentions.is_empty() {
        p.insert(
            "mentions".into(),
            Value::Array(
                mentions
                    .into_iter()
                    .take(MAX_TARGETS)
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
}

fn typed_account_traits(a: &TAccount, handle: &str) -> Map<String, Value> {
    let mut t = Map::new();
    if let Some(name) = a
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        t.insert("name".into(), Value::String(name.to_string()));
    }
    t.insert("mastodon_handle".into(), Value::String(handle.to_string()));
    if let Some(url) = a.url.as_deref() {
        t.insert("mastodon_url".into(), Value::String(url.to_string()));
    }
    for (key, n) in [
        ("followers_count", a.followers_count),
        ("following_count", a.following_count),
        ("statuses_count", a.statuses_count),
    ] {
        if let Some(n) = n {
            t.insert(key.into(), Value::from(n));
        }
    }
    if let Some(b) = a.bot {
        t.insert("bot".into(), Value::Bool(b));
    }
    if let Some(av) = a.avatar.as_deref().filter(|u| !u.ends_with("/missing.png")) {
        t.insert("avatar_url".into(), Value::String(av.to_string()));
    }
    let note = a.note.as_deref().unwrap_or("");
    let (bio, _) = html_to_text(note, MAX_BIO_CHARS);
    if !bio.is_empty() {
        t.insert("bio".into(), Value::String(bio));
    }
    insert_links(&mut t, &typed_fields(a), note);
    t
}
