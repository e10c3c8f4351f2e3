//! A local stand-in for the Telegram Bot API (tests, benchmarks): `getMe` and
//! `getUpdates` as documented at <https://core.telegram.org/bots/api>.
//!
//! * paths `/bot<token>/<method>` (method names case-insensitive); a token that
//!   is not `<digits>:<secret>` answers 404 `Not Found`, a wrong one 401
//!   `Unauthorized`, both in Telegram's error shape
//!   `{"ok":false,"error_code":..,"description":..}`;
//! * `getUpdates` with `offset` (confirms, i.e. deletes, every earlier update),
//!   `limit` (1-100) and `timeout` (long poll: an empty answer waits that long);
//! * a webhook flag that makes `getUpdates` answer 409 Conflict;
//! * updates kept as pre-serialised JSON text, answers built by concatenation.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};

use super::mapping::{map_update, Ctx, Mapped};
use super::{Config, GroupMessages};
use crate::runtime::config::Secret;

/// Token of the fake bot.
pub const FAKE_TOKEN: &str = "7100200300:AAFakeTokenForTests_only-0123456789abcdef";
/// The fake bot's id (digits of [`FAKE_TOKEN`]).
pub const FAKE_BOT_ID: i64 = 7_100_200_300;
/// The fake bot's user name.
pub const FAKE_BOT_USERNAME: &str = "acme_support_bot";
/// The group chat the fake bot is a member of.
pub const FAKE_GROUP_ID: i64 = -1_001_234_567_890;

/// The fake's updates.
#[derive(Debug, Clone)]
pub struct FakeData {
    pub token: String,
    pub bot_id: i64,
    pub bot_username: String,
    /// `(update_id, update JSON)`, ascending `update_id`.
    pub updates: Vec<(i64, String)>,
    /// When set, `getUpdates` answers 409 (a webhook is active).
    pub webhook_set: bool,
}

/// A person writing to the bot.
#[derive(Debug, Clone)]
pub struct FakePerson {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub language_code: String,
    pub is_premium: bool,
    /// As Telegram sends it in a shared contact (digits, sometimes no `+`).
    pub phone_number: String,
}

impl FakePerson {
    pub fn user_json(&self) -> Value {
        let mut u = json!({"id": self.id, "is_bot": false, "first_name": self.first_name,
            "language_code": self.language_code});
        if let Some(l) = &self.last_name {
            u["last_name"] = json!(l);
        }
        if let Some(n) = &self.username {
            u["username"] = json!(n);
        }
        if self.is_premium {
            u["is_premium"] = json!(true);
        }
        u
    }
}

/// Deterministic generator (xorshift64*), no external crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Anna", "Boris", "Chloé", "Dmitri", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kateryna", "Liam", "Mei", "Nikolai", "Olga", "Pablo", "Quinn", "Rania", "Sven", "Tomás",
];
const LAST: &[&str] = &[
    "Ivanova", "Müller", "Okafor", "Rossi", "Kowalski", "Nguyen", "Haddad", "Silva", "Tanaka",
    "Dubois",
];
const LANGS: &[&str] = &["en", "de", "ru", "uk", "es", "fr", "pt-br", "tr"];
const TEXTS: &[&str] = &[
    "Hi, where is my order #10231?",
    "The parcel arrived damaged 😞 what should I do?",
    "Can I change the delivery address?",
    "Do you ship to Lviv?",
    "Спасибо, всё пришло!",
    "Wie kann ich zurückgeben?",
    "My promo code SPRING10 does not work",
    "Is the blue hoodie back in stock? 🙏",
];

/// Wall-clock base of generated updates: 2026-01-01T00:00:00Z.
const BASE_DATE: i64 = 1_767_225_600;

impl FakeData {
    /// An empty bot (no updates).
    pub fn empty() -> FakeData {
        FakeData {
            token: FAKE_TOKEN.into(),
            bot_id: FAKE_BOT_ID,
            bot_username: FAKE_BOT_USERNAME.into(),
            updates: Vec::new(),
            webhook_set: false,
        }
    }

    /// People used by [`generate`](Self::generate) (`n / 5`, at least 3);
    /// every 17th person shares a phone number with the next one (a household).
    pub fn people(n: usize, seed: u64) -> Vec<FakePerson> {
        let mut rng = Rng::new(seed.wrapping_add(17));
        let count = (n / 5).max(3);
        (0..count)
            .map(|k| {
                let phone_k = if k % 17 == 1 { k - 1 } else { k };
                let digits = format!("1415555{:04}", 100 + (phone_k % 100));
                let phone_number = if k % 3 == 0 {
                    format!("+{digits}")
                } else {
                    digits
                };
                let first = rng.pick(FIRST).to_string();
                FakePerson {
                    id: 100_000_000 + k as i64 * 7919,
                    last_name: (rng.below(3) > 0).then(|| rng.pick(LAST).to_string()),
                    username: (rng.below(4) > 0)
                        .then(|| format!("{}_{k}", first.to_lowercase().replace('é', "e"))),
                    first_name: first,
                    language_code: rng.pick(LANGS).to_string(),
                    is_premium: rng.below(5) == 0,
                    phone_number,
                }
            })
            .collect()
    }

    /// `n` realistic updates, deterministic for `seed`: private messages (some
    /// commands, photos, stickers), edits, shared contacts (own and someone
    /// else's), group messages addressed to the bot or not, messages from bots,
    /// callback queries.
    pub fn generate(n: usize, seed: u64) -> FakeData {
        let mut d = FakeData::empty();
        let people = Self::people(n, seed);
        let mut rng = Rng::new(seed);
        // spread over at most ~300 days, so dates stay in the past
        let step = (300 * 86_400 / n.max(1) as i64).clamp(1, 97);
        let mut next_msg_id: std::collections::HashMap<i64, i64> = Default::default();
        let mut group_msg_id = 5000i64;
        let bot = json!({"id": d.bot_id, "is_bot": true, "first_name": "ACME Support",
            "username": d.bot_username});
        let group = json!({"id": FAKE_GROUP_ID, "title": "ACME Customers", "type": "supergroup"});
        for i in 0..n {
            let uid = 734_000_000 + i as i64;
            let date = BASE_DATE + i as i64 * step;
            // the first two updates: a household sharing one number shares it
            let p = if i < 2 && people.len() > 1 {
                people[i].clone()
            } else {
                rng.pick(&people).clone()
            };
            let chat = json!({"id": p.id, "type": "private", "first_name": p.first_name});
            let mut msg_id = || {
                let e = next_msg_id.entry(p.id).or_insert(0);
                *e += 1;
                *e
            };
            let roll = if i < 2 { 63 } else { rng.below(100) };
            let update = match roll {
                0..=54 => {
                    let (text, entities) = if rng.below(10) == 0 {
                        (
                            "/start".to_string(),
                            json!([{"type": "bot_command", "offset": 0, "length": 6}]),
                        )
                    } else {
                        (rng.pick(TEXTS).to_string(), json!([]))
                    };
                    let mut m = json!({"message_id": msg_id(), "from": p.user_json(), "chat": chat,
                        "date": date, "text": text});
                    if entities.as_array().is_some_and(|a| !a.is_empty()) {
                        m["entities"] = entities;
                    }
                    json!({"update_id": uid, "message": m})
                }
                55..=62 => {
                    let id = next_msg_id.get(&p.id).copied().unwrap_or(0).max(1);
                    next_msg_id.entry(p.id).or_insert(1);
                    json!({"update_id": uid, "edited_message": {"message_id": id, "from": p.user_json(),
                        "chat": chat, "date": date - 60, "edit_date": date,
                        "text": format!("{} (edited)", rng.pick(TEXTS))}})
                }
                63..=67 => {
                    let mut c = json!({"phone_number": p.phone_number, "first_name": p.first_name,
                        "user_id": p.id});
                    if let Some(l) = &p.last_name {
                        c["last_name"] = json!(l);
                    }
                    json!({"update_id": uid, "message": {"message_id": msg_id(), "from": p.user_json(),
                        "chat": chat, "date": date, "contact": c}})
                }
                68..=69 => {
                    let other = rng.pick(&people).clone();
                    let mut c =
                        json!({"phone_number": "4930901820", "first_name": other.first_name});
                    if other.id != p.id {
                        c["user_id"] = json!(other.id);
                    } else {
                        c["phone_number"] = json!("+4930901820");
                    }
                    json!({"update_id": uid, "message": {"message_id": msg_id(), "from": p.user_json(),
                        "chat": chat, "date": date, "contact": c}})
                }
                70..=79 => {
                    group_msg_id += 1;
                    let mention = format!("@{}", d.bot_username);
                    let mut m = json!({"message_id": group_msg_id, "from": p.user_json(), "chat": group,
                        "date": date});
                    match rng.below(3) {
                        0 => {
                            // emoji before the mention: offsets count UTF-16 units
                            let text = format!("🙂 {mention} {}", rng.pick(TEXTS));
                            m["text"] = json!(text);
                            m["entities"] = json!([{"type": "mention", "offset": 3,
                                "length": mention.encode_utf16().count()}]);
                        }
                        1 => {
                            m["text"] = json!(rng.pick(TEXTS));
                            m["reply_to_message"] = json!({"message_id": group_msg_id - 1,
                                "from": bot, "chat": group, "date": date - 100, "text": "How can I help?"});
                        }
                        _ => {
                            let cmd = format!("/help@{}", d.bot_username);
                            m["text"] = json!(cmd);
                            m["entities"] = json!([{"type": "bot_command", "offset": 0,
                                "length": cmd.encode_utf16().count()}]);
                        }
                    }
                    json!({"update_id": uid, "message": m})
                }
                80..=84 => {
                    group_msg_id += 1;
                    let other = rng.pick(&people).clone();
                    json!({"update_id": uid, "message": {"message_id": group_msg_id, "from": p.user_json(),
                        "chat": group, "date": date, "text": "same here, waiting since Monday",
                        "reply_to_message": {"message_id": group_msg_id - 1, "from": other.user_json(),
                            "chat": group, "date": date - 50, "text": "anyone got their parcel?"}}})
                }
                85..=89 => {
                    json!({"update_id": uid, "message": {"message_id": msg_id(), "from": p.user_json(),
                    "chat": chat, "date": date, "caption": "this is what arrived",
                    "photo": [{"file_id": format!("AgAC{uid}"), "file_unique_id": format!("AQAD{uid}"),
                        "width": 90, "height": 67, "file_size": 1234}]}})
                }
                90..=92 => {
                    group_msg_id += 1;
                    json!({"update_id": uid, "message": {"message_id": group_msg_id,
                        "from": {"id": 5_000_000_001i64, "is_bot": true, "first_name": "Other Bot",
                            "username": "other_bot"},
                        "chat": group, "date": date, "text": format!("@{} ping", d.bot_username),
                        "entities": [{"type": "mention", "offset": 0,
                            "length": d.bot_username.len() + 1}]}})
                }
                93..=96 => json!({"update_id": uid, "callback_query": {"id": format!("{uid}42"),
                    "from": p.user_json(), "chat_instance": "-5324", "data": "rate:5"}}),
                _ => {
                    json!({"update_id": uid, "message": {"message_id": msg_id(), "from": p.user_json(),
                    "chat": chat, "date": date,
                    "sticker": {"file_id": "CAACAgIAAxk", "file_unique_id": "AgADxk", "type": "regular",
                        "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "👍"}}})
                }
            };
            d.push(update);
        }
        d
    }

    /// The next free `update_id`.
    pub fn next_update_id(&self) -> i64 {
        self.updates.last().map_or(734_000_000, |(id, _)| id + 1)
    }

    /// Appends an update as given (its `update_id`, or the next free one when it
    /// has none that is an integer; it is then sorted last).
    pub fn push(&mut self, update: Value) {
        let id = update
            .get("update_id")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| self.next_update_id());
        self.updates.push((id, update.to_string()));
        self.updates.sort_by_key(|(id, _)| *id);
    }

    /// Appends `k` malformed updates (non-numeric sender, bad date, missing chat,
    /// message not an object), with fresh `update_id`s.
    pub fn add_malformed(&mut self, k: usize) {
        for i in 0..k {
            let uid = self.next_update_id();
            let bad = match i % 4 {
                0 => {
                    json!({"update_id": uid, "message": {"message_id": 1, "from": {"id": "abc", "is_bot": false, "first_name": "X"},
                    "chat": {"id": 1, "type": "private"}, "date": BASE_DATE}})
                }
                1 => {
                    json!({"update_id": uid, "message": {"message_id": 2, "from": {"id": 42, "is_bot": false, "first_name": "Y"},
                    "chat": {"id": 42, "type": "private"}, "date": "yesterday", "text": "hi"}})
                }
                2 => {
                    json!({"update_id": uid, "message": {"message_id": 3, "from": {"id": 43, "is_bot": false, "first_name": "Z"},
                    "date": BASE_DATE, "text": "no chat"}})
                }
                _ => json!({"update_id": uid, "edited_message": "not an object"}),
            };
            self.updates.push((uid, bad.to_string()));
        }
    }

    /// The updates as JSON values.
    pub fn values(&self) -> Vec<Value> {
        self.updates
            .iter()
            .filter_map(|(_, s)| serde_json::from_str(s).ok())
            .collect()
    }

    /// The `event_id`s one clean run produces with the default config.
    pub fn expected_event_ids(&self) -> BTreeSet<String> {
        let bot_id = self.bot_id.to_string();
        let ctx = Ctx {
            bot_id: &bot_id,
            bot_username: Some(&self.bot_username),
            group_messages: GroupMessages::Mentions,
            include_text: true,
            received_at: Utc::now(),
        };
        self.values()
            .iter()
            .filter_map(|u| match map_update(u, &ctx) {
                Mapped::Event(e) => Some(e.event_id),
                _ => None,
            })
            .collect()
    }
}

/// The config of a `telegram` instance pointing at a fake on `base_url`
/// (short polling, so tests do not wait).
pub fn test_config(base_url: &str) -> Config {
    Config {
        api_url: base_url.to_string(),
        bot_token: Some(Secret::new(FAKE_TOKEN)),
        long_poll_secs: 0,
        limit: 100,
        allowed_updates: vec!["message".into(), "edited_message".into()],
        group_messages: GroupMessages::Mentions,
        include_text: true,
    }
}

struct FakeState {
    data: FakeData,
    /// Updates below this id are confirmed (deleted).
    confirmed_below: Mutex<i64>,
}

/// The fake Bot API.
pub fn router(data: FakeData) -> Router {
    let st = Arc::new(FakeState {
        data,
        confirmed_below: Mutex::new(i64::MIN),
    });
    Router::new().fallback(handle).with_state(st)
}

fn answer(status: u16, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(code: u16, description: &str) -> Response {
    answer(
        code,
        json!({"ok": false, "error_code": code, "description": description}).to_string(),
    )
}

async fn handle(State(st): State<Arc<FakeState>>, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/bot") else {
        return error(404, "Not Found");
    };
    let Some((token, method)) = rest.split_once('/') else {
        return error(404, "Not Found");
    };
    if super::bot_id_of(token).is_none() {
        return error(404, "Not Found");
    }
    if token != st.data.token {
        return error(401, "Unauthorized");
    }
    let params: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://fake/?{}", q.unwrap_or_default()))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match method.to_ascii_lowercase().as_str() {
        "getme" => answer(
            200,
            json!({"ok": true, "result": {"id": st.data.bot_id, "is_bot": true,
                "first_name": "ACME Support", "username": st.data.bot_username,
                "can_join_groups": true, "can_read_all_group_messages": false,
                "supports_inline_queries": false}})
            .to_string(),
        ),
        "getupdates" => {
            if st.data.webhook_set {
                return error(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first");
            }
            let parse = |k: &str| -> Result<Option<i64>, String> {
                match param(k) {
                    None | Some("") => Ok(None),
                    Some(v) => v
                        .parse::<i64>()
                        .map(Some)
                        .map_err(|_| format!("Bad Request: invalid {k} specified")),
                }
            };
            let (offset, limit, timeout) = match (parse("offset"), parse("limit"), parse("timeout"))
            {
                (Ok(o), Ok(l), Ok(t)) => (
                    o,
                    l.unwrap_or(100).clamp(1, 100) as usize,
                    t.unwrap_or(0).clamp(0, 50) as u64,
                ),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return error(400, &e),
            };
            if let Some(a) = param("allowed_updates") {
                if serde_json::from_str::<Vec<String>>(a).is_err() {
                    return error(400, "Bad Request: can't parse allowed updates");
                }
            }
            let ups = &st.data.updates;
            let start = {
                let mut floor = st.confirmed_below.lock().unwrap_or_else(|e| e.into_inner());
                match offset {
                    Some(o) if o < 0 => {
                        let keep = usize::try_from(o.unsigned_abs()).unwrap_or(usize::MAX);
                        let first = ups.len().saturating_sub(keep);
                        if let Some((id, _)) = ups.get(first) {
                            *floor = (*floor).max(*id);
                        }
                    }
                    Some(o) => *floor = (*floor).max(o),
                    None => {}
                }
                let f = *floor;
                ups.partition_point(|(id, _)| *id < f)
            };
            let batch = &ups[start..(start + limit).min(ups.len())];
            if batch.is_empty() && timeout > 0 {
                tokio::time::sleep(Duration::from_secs(timeout)).await;
            }
            let mut body =
                String::with_capacity(16 + batch.iter().map(|(_, s)| s.len() + 1).sum::<usize>());
            body.push_str("{\"ok\":true,\"result\":[");
            for (i, (_, s)) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(s);
            }
            body.push_str("]}");
            answer(200, body)
        }
        _ => error(404, "Not Found"),
    }
}
