//! Telegram `Update` → canonical event. Pure functions: no I/O.
//!
//! | Telegram | canonical |
//! |---|---|
//! | `message` (private chat; group message addressed to the bot) | `type` `message`, `channel` `support` |
//! | `edited_message` | `type` `message`, `name` `edited` |
//! | `chat.id` + `message_id` (+ `edit_date` for edits) | `event_id` `telegram:<bot id>:message:<chat id>:<message id>` / `telegram:<bot id>:edit:<chat id>:<message id>:<edit date>` |
//! | `from.id` | identifier `telegram:<id>` |
//! | `contact.phone_number` when `contact.user_id == from.id` | identifier `phone` (E.164), trait `phone` |
//! | `from.first_name`, `last_name`, `username`, `language_code`, `is_premium` | traits `first_name`, `last_name`, `name`, `telegram_username`, `language_code`, `telegram_is_premium` |
//! | `date` / `edit_date` (epoch seconds) | `occurred_at` |
//! | `reply_to_message.from.id`, `text_mention` users (groups) | `target` `telegram:<id>` |
//! | `update_id`, `message_id`, `chat`, `text`/`caption`, media kind, reply, command | `properties` |
//!
//! Skipped (counted, not rejected): other update kinds, messages from bots,
//! messages without a sender user (channel posts, anonymous group admins), group
//! messages not addressed to the bot (per `group_messages`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, JsonObject, Normalizer, SCHEMA_VERSION,
};

use super::{rejected, GroupMessages};
use crate::runtime::Rejected;

/// Longest text kept in `properties.text` (Telegram's own limit for a message).
pub const MAX_TEXT_CHARS: usize = 4096;

/// Media kinds, checked in this order; the first present names `properties.media`.
const MEDIA_KINDS: &[&str] = &[
    "photo",
    "video",
    "animation",
    "document",
    "audio",
    "voice",
    "video_note",
    "sticker",
    "contact",
    "location",
    "venue",
    "poll",
    "dice",
    "story",
    "game",
    "invoice",
];

/// What the mapping needs besides the update.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Digits before `:` in the token.
    pub bot_id: &'a str,
    /// The bot's `@username` (without `@`), from `getMe`; needed for mentions.
    pub bot_username: Option<&'a str>,
    pub group_messages: GroupMessages,
    pub include_text: bool,
    pub received_at: DateTime<Utc>,
}

/// Why an update produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not `message` / `edited_message` (callback queries, polls, ...).
    OtherKind,
    /// Sent by a bot (`from.is_bot`).
    FromBot,
    /// No `from` user: channel posts, anonymous group admins.
    NoSender,
    /// A group message not addressed to the bot (or groups are off).
    GroupNotAddressed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::OtherKind => "other_update_kind",
            Skip::FromBot => "from_bot",
            Skip::NoSender => "no_sender",
            Skip::GroupNotAddressed => "group_not_addressed",
        }
    }
}

/// The result of mapping one update.
#[derive(Debug)]
pub enum Mapped {
    Event(Box<CanonicalEvent>),
    Skipped(Skip),
    Rejected(Rejected),
}

/// `update_id`, when it is an integer.
pub fn update_id(update: &Value) -> Option<i64> {
    update.get("update_id").and_then(Value::as_i64)
}

/// Maps one update. Never panics; malformed updates become [`Mapped::Rejected`].
pub fn map_update(update: &Value, ctx: &Ctx<'_>) -> Mapped {
    let uid = update_id(update);
    let Some(obj) = update.as_object() else {
        return Mapped::Rejected(rejected(uid, "update is not a JSON object", update));
    };
    if uid.is_none() {
        return Mapped::Rejected(rejected(
            None,
            "`update_id` is missing or not an integer",
            update,
        ));
    }
    let (msg, edited) = match (obj.get("message"), obj.get("edited_message")) {
        (Some(m), _) => (m, false),
        (None, Some(m)) => (m, true),
        (None, None) => return Mapped::Skipped(Skip::OtherKind),
    };
    match map_message(msg, edited, uid, ctx) {
        Ok(m) => m,
        Err(reason) => Mapped::Rejected(rejected(uid, reason, update)),
    }
}

fn int(m: &Map<String, Value>, key: &str, what: &str) -> Result<i64, String> {
    match m.get(key) {
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("`{what}.{key}` is not an integer")),
        None => Err(format!("`{what}.{key}` is missing")),
    }
}

fn opt_str<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("`{what}.{key}` is not a string")),
    }
}

fn epoch(secs: i64, what: &str) -> Result<DateTime<Utc>, String> {
    if secs <= 0 {
        return Err(format!("`{what}` {secs} is not a time"));
    }
    DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("`{what}` {secs} is out of range"))
}

fn map_message(
    msg: &Value,
    edited: bool,
    uid: Option<i64>,
    ctx: &Ctx<'_>,
) -> Result<Mapped, String> {
    let what = if edited { "edited_message" } else { "message" };
    let m = msg
        .as_object()
        .ok_or_else(|| format!("`{what}` is not an object"))?;
    let message_id = int(m, "message_id", what)?;
    let chat = match m.get("chat") {
        Some(Value::Object(c)) => c,
        _ => return Err(format!("`{what}.chat` is missing or not an object")),
    };
    let chat_id = int(chat, "id", &format!("{what}.chat"))?;
    let chat_type = opt_str(chat, "type", &format!("{what}.chat"))?
        .ok_or_else(|| format!("`{what}.chat.type` is missing"))?;
    let date = epoch(int(m, "date", what)?, &format!("{what}.date"))?;
    let edit_date = match m.get("edit_date") {
        None | Some(Value::Null) => None,
        Some(v) => Some(epoch(
            v.as_i64()
                .ok_or_else(|| format!("`{what}.edit_date` is not an integer"))?,
            &format!("{what}.edit_date"),
        )?),
    };
    if edited && edit_date.is_none() {
        return Err("`edited_message.edit_date` is missing".into());
    }
    let from = match m.get("from") {
        None | Some(Value::Null) => return Ok(Mapped::Skipped(Skip::NoSender)),
        Some(Value::Object(f)) => f,
        Some(_) => return Err(format!("`{what}.from` is not an object")),
    };
    let from_id = int(from, "id", &format!("{what}.from"))?;
    if from_id <= 0 {
        return Err(format!("`{what}.from.id` {from_id} is not a user id"));
    }
    match from.get("is_bot") {
        Some(Value::Bool(true)) => return Ok(Mapped::Skipped(Skip::FromBot)),
        None | Some(Value::Bool(false)) => {}
        Some(_) => return Err(format!("`{what}.from.is_bot` is not a boolean")),
    }
    if chat_type == "channel" {
        return Ok(Mapped::Skipped(Skip::NoSender));
    }
    let is_group = chat_type == "group" || chat_type == "supergroup";
    let text = opt_str(m, "text", what)?.or(opt_str(m, "caption", what)?);
    let entities = match (m.get("entities"), m.get("caption_entities")) {
        (Some(Value::Array(e)), _) | (None, Some(Value::Array(e))) => e.as_slice(),
        _ => &[],
    };
    if is_group {
        let keep = match ctx.group_messages {
            GroupMessages::All => true,
            GroupMessages::None => false,
            GroupMessages::Mentions => addressed_to_bot(m, text, entities, ctx),
        };
        if !keep {
            return Ok(Mapped::Skipped(Skip::GroupNotAddressed));
        }
    }

    let bot = ctx.bot_id;
    let from_id_s = from_id.to_string();
    let mut identifiers = vec![Identifier::new(IdType::Telegram, from_id_s.clone())];
    let mut traits = Map::new();
    let first = opt_str(from, "first_name", "from")?;
    let last = opt_str(from, "last_name", "from")?;
    if let Some(f) = first.filter(|s| !s.trim().is_empty()) {
        traits.insert("first_name".into(), Value::String(f.to_string()));
    }
    if let Some(l) = last.filter(|s| !s.trim().is_empty()) {
        traits.insert("last_name".into(), Value::String(l.to_string()));
    }
    let name: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !name.is_empty() {
        traits.insert("name".into(), Value::String(name.join(" ")));
    }
    if let Some(u) = opt_str(from, "username", "from")?.filter(|s| !s.is_empty()) {
        traits.insert("telegram_username".into(), Value::String(u.to_string()));
    }
    if let Some(l) = opt_str(from, "language_code", "from")?.filter(|s| !s.is_empty()) {
        traits.insert("language_code".into(), Value::String(l.to_string()));
    }
    if let Some(Value::Bool(p)) = from.get("is_premium") {
        traits.insert("telegram_is_premium".into(), Value::Bool(*p));
    }

    let mut props = Map::new();
    if let Some(u) = uid {
        props.insert("update_id".into(), u.into());
    }
    props.insert("message_id".into(), message_id.into());
    props.insert("chat_id".into(), chat_id.into());
    props.insert("chat_type".into(), Value::String(chat_type.to_string()));
    if is_group {
        if let Some(t) = opt_str(chat, "title", "chat")? {
            props.insert("chat_title".into(), Value::String(t.to_string()));
        }
    }
    if let Some(t) = m.get("message_thread_id").and_then(Value::as_i64) {
        props.insert("message_thread_id".into(), t.into());
    }
    if let Some(t) = text {
        if ctx.include_text {
            let (kept, truncated) = bounded(t, MAX_TEXT_CHARS);
            props.insert("text".into(), Value::String(kept));
            if truncated {
                props.insert("text_truncated".into(), Value::Bool(true));
            }
        }
        if let Some(cmd) = leading_command(t, entities) {
            props.insert("command".into(), Value::String(cmd));
        }
    }
    if let Some(kind) = MEDIA_KINDS.iter().find(|k| m.contains_key(**k)) {
        props.insert("media".into(), Value::String((*kind).to_string()));
    }
    let mut target: Vec<Identifier> = Vec::new();
    if let Some(Value::Object(reply)) = m.get("reply_to_message") {
        if let Some(rid) = reply.get("message_id").and_then(Value::as_i64) {
            props.insert("reply_to_message_id".into(), rid.into());
        }
        if is_group {
            if let Some(Value::Object(rf)) = reply.get("from") {
                push_target(&mut target, rf, from_id);
            }
        }
    }
    if is_group {
        let mut mentioned = Vec::new();
        for e in entities {
            match e.get("type").and_then(Value::as_str) {
                Some("text_mention") => {
                    if let Some(Value::Object(u)) = e.get("user") {
                        push_target(&mut target, u, from_id);
                    }
                }
                Some("mention") => {
                    if let Some(s) = text.and_then(|t| entity_text(t, e)) {
                        let handle = s.trim_start_matches('@');
                        let is_bot = ctx
                            .bot_username
                            .is_some_and(|b| b.eq_ignore_ascii_case(handle));
                        if !is_bot && !handle.is_empty() {
                            mentioned.push(Value::String(handle.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        if !mentioned.is_empty() {
            props.insert("mentioned_usernames".into(), Value::Array(mentioned));
        }
    }
    if let Some(Value::Object(c)) = m.get("contact") {
        let owner = c.get("user_id").and_then(Value::as_i64);
        let own = owner == Some(from_id);
        let mut cp = Map::new();
        cp.insert("own".into(), Value::Bool(own));
        if own {
            // the sender shared their own number: it is theirs
            match opt_str(c, "phone_number", "contact")?.and_then(contact_phone) {
                Some(p) => {
                    identifiers.push(Identifier::new(IdType::Phone, p.clone()));
                    traits.insert("phone".into(), Value::String(p));
                }
                None => {
                    cp.insert("phone_valid".into(), Value::Bool(false));
                }
            }
        } else if let Some(o) = owner {
            // someone else's card: never linked to the sender, number not kept
            cp.insert("user_id".into(), o.into());
        }
        props.insert("contact".into(), Value::Object(cp));
    }

    let (event_id, name, occurred_at) = match (edited, edit_date) {
        (true, Some(ed)) => {
            props.insert("original_date".into(), Value::String(date.to_rfc3339()));
            (
                format!(
                    "telegram:{bot}:edit:{chat_id}:{message_id}:{}",
                    ed.timestamp()
                ),
                Some("edited".to_string()),
                ed,
            )
        }
        _ => (
            format!("telegram:{bot}:message:{chat_id}:{message_id}"),
            None,
            date,
        ),
    };
    Ok(Mapped::Event(Box::new(CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id,
        source: format!("telegram:{bot}"),
        channel: Channel::Support,
        event_type: "message".into(),
        name,
        occurred_at,
        received_at: ctx.received_at,
        identifiers,
        target,
        traits,
        properties: JsonObject::from_map(&props),
        revenue: None,
        context: JsonObject::empty(),
    })))
}

/// A user (reply author, text mention) as a target, unless a bot or the sender.
fn push_target(target: &mut Vec<Identifier>, user: &Map<String, Value>, from_id: i64) {
    let Some(id) = user.get("id").and_then(Value::as_i64) else {
        return;
    };
    if id <= 0 || id == from_id || user.get("is_bot") == Some(&Value::Bool(true)) {
        return;
    }
    let t = Identifier::new(IdType::Telegram, id.to_string());
    if !target.contains(&t) {
        target.push(t);
    }
}

/// A phone number from a shared contact, as E.164. Telegram sends the digits
/// with the country code, sometimes without the leading `+`.
pub fn contact_phone(raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    let with_plus = if t.starts_with('+') {
        t.to_string()
    } else {
        format!("+{t}")
    };
    Normalizer::default()
        .normalize_value(IdType::Phone, &with_plus)
        .ok()
}

/// True when a group message is addressed to the bot: a reply to the bot, an
/// `@botname` mention, a mention of the bot by id, or a command for it.
fn addressed_to_bot(
    m: &Map<String, Value>,
    text: Option<&str>,
    entities: &[Value],
    ctx: &Ctx<'_>,
) -> bool {
    let bot_id: Option<i64> = ctx.bot_id.parse().ok();
    if let Some(Value::Object(reply)) = m.get("reply_to_message") {
        let reply_from = reply
            .get("from")
            .and_then(|f| f.get("id"))
            .and_then(Value::as_i64);
        if reply_from.is_some() && reply_from == bot_id {
            return true;
        }
    }
    let Some(text) = text else { return false };
    for e in entities {
        match e.get("type").and_then(Value::as_str) {
            Some("mention") => {
                let (Some(s), Some(b)) = (entity_text(text, e), ctx.bot_username) else {
                    continue;
                };
                if s.trim_start_matches('@').eq_ignore_ascii_case(b) {
                    return true;
                }
            }
            Some("text_mention") => {
                let uid = e
                    .get("user")
                    .and_then(|u| u.get("id"))
                    .and_then(Value::as_i64);
                if uid.is_some() && uid == bot_id {
                    return true;
                }
            }
            Some("bot_command") => {
                let Some(s) = entity_text(text, e) else {
                    continue;
                };
                match s.split_once('@') {
                    None => return true,
                    Some((_, to)) => {
                        if ctx.bot_username.is_some_and(|b| b.eq_ignore_ascii_case(to)) {
                            return true;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// The text an entity covers. Telegram counts `offset`/`length` in UTF-16 code units.
fn entity_text(text: &str, entity: &Value) -> Option<String> {
    let offset = usize::try_from(entity.get("offset")?.as_u64()?).ok()?;
    let length = usize::try_from(entity.get("length")?.as_u64()?).ok()?;
    let end = offset.checked_add(length)?;
    let units: Vec<u16> = text.encode_utf16().collect();
    units.get(offset..end).map(String::from_utf16_lossy)
}

/// `/start` when the message begins with a bot command (`/start@botname` too).
fn leading_command(text: &str, entities: &[Value]) -> Option<String> {
    let e = entities.iter().find(|e| {
        e.get("type").and_then(Value::as_str) == Some("bot_command")
            && e.get("offset").and_then(Value::as_u64) == Some(0)
    })?;
    let s = entity_text(text, e)?;
    let cmd = s.split('@').next().unwrap_or(&s);
    (!cmd.is_empty()).then(|| cmd.to_string())
}

/// The first `max` characters of `s`, and whether it was cut.
fn bounded(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_string(), true),
        None => (s.to_string(), false),
    }
}
