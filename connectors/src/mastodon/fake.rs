//! A local stand-in for a Mastodon server, serving the documented REST format:
//!
//! * `GET /api/v1/notifications` with `min_id` / `max_id` / `since_id` / `limit`
//!   (default 40, at most 80) / `types[]` / `exclude_types[]`, answered newest
//!   first as Mastodon does (with `min_id`: the `limit` notifications immediately
//!   newer than it), and a `Link` header with `rel="next"` (`max_id`) and
//!   `rel="prev"` (`min_id`) when the page is not empty;
//! * `GET /api/v1/accounts/verify_credentials` (the brand account);
//! * `GET /api/v2/instance` (`domain`) and `GET /api/v1/instance` (`uri`), public;
//! * `Authorization: Bearer <token>` checked on the account's endpoints: a wrong
//!   or missing token gets `401 {"error":"The access token is invalid"}`;
//! * `X-RateLimit-Limit` / `-Remaining` / `-Reset` (ISO 8601) on every answer, and
//!   `429 {"error":"Too many requests"}` once the window's calls are used up.
//!
//! Notifications are kept pre-serialised (accounts and the brand's statuses are
//! shared between the notifications that embed them), so pages cost little more
//! than a copy: the fake can feed benchmarks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::config::Config;
use super::mapping;
use crate::runtime::config::Secret;

/// The token [`test_config`] uses and the fake accepts by default.
pub const FAKE_TOKEN: &str = "fake-mastodon-token-5f2c9e";
/// The fake server's domain (handles `@user@social.example`).
pub const FAKE_DOMAIN: &str = "social.example";
/// The brand account's id.
pub const BRAND_ID: &str = "1";

/// A config pointing at a fake server.
pub fn test_config(base_url: &str) -> Config {
    Config {
        instance_url: base_url.to_string(),
        access_token: Secret::new(FAKE_TOKEN),
        types: super::config::default_types(),
        page_size: 40,
        domain: String::new(),
        max_text_chars: 2000,
    }
}

/// One stored notification: its pagination id, type and JSON (in pieces).
#[derive(Clone)]
struct Item {
    id: u64,
    kind: String,
    pieces: Vec<Arc<str>>,
}

impl Item {
    fn json_len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }
    fn write(&self, out: &mut String) {
        for p in &self.pieces {
            out.push_str(p);
        }
    }
}

/// What the fake server holds.
#[derive(Clone)]
pub struct FakeData {
    /// Domain of the server (`/api/v2/instance`).
    pub domain: String,
    /// The only accepted bearer token.
    pub token: String,
    /// The brand account (`verify_credentials`).
    pub brand: Value,
    /// Calls allowed per window (real Mastodon: 300 per 5 minutes); the default is
    /// high so that benchmarks are not throttled.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Largest `limit` honoured: 80 since Mastodon 4.1, 30 before.
    pub max_limit: usize,
    /// The `rel="prev"` link of a page: Mastodon's (the page's newest id), none
    /// (a proxy that strips `Link`), or one that lags behind the page.
    pub prev_link: PrevLink,
    /// Sorted by id.
    items: Vec<Item>,
}

/// What a page's `rel="prev"` link points at ([`FakeData::prev_link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrevLink {
    /// `min_id` = the page's newest id, as Mastodon answers.
    Newest,
    /// No `Link` header at all.
    Absent,
    /// `min_id` = the page's oldest id: behind what the page holds.
    Oldest,
}

impl FakeData {
    /// An empty server with the brand account only.
    pub fn empty() -> FakeData {
        FakeData {
            domain: FAKE_DOMAIN.to_string(),
            token: FAKE_TOKEN.to_string(),
            brand: brand_account(),
            rate_limit: 1_000_000,
            rate_window: Duration::from_secs(300),
            max_limit: 80,
            prev_link: PrevLink::Newest,
            items: Vec::new(),
        }
    }

    /// How many notifications the server holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Notification ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.items.iter().map(|i| i.id).collect()
    }

    /// Every notification as JSON, oldest first.
    pub fn notifications(&self) -> Vec<Value> {
        self.items
            .iter()
            .map(|i| {
                let mut s = String::with_capacity(i.json_len());
                i.write(&mut s);
                serde_json::from_str(&s).unwrap_or(Value::Null)
            })
            .collect()
    }

    /// Adds a notification as given (it may be malformed), paginated under `id`
    /// whatever its JSON says. `kind` is the type used by `types[]` filtering.
    pub fn insert_raw(&mut self, id: u64, kind: &str, notification: &Value) {
        let item = Item {
            id,
            kind: kind.to_string(),
            pieces: vec![Arc::from(notification.to_string())],
        };
        let pos = self.items.partition_point(|i| i.id < id);
        if self.items.get(pos).is_some_and(|i| i.id == id) {
            self.items[pos] = item;
        } else {
            self.items.insert(pos, item);
        }
    }

    /// Adds a well-formed notification (its `id` must be a numeric string).
    pub fn insert(&mut self, notification: &Value) {
        let id = mapping::notification_id(notification)
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let kind = notification
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.insert_raw(id, &kind, notification);
    }

    /// What a clean sync of the whole server maps to (the mapping of the
    /// connector, with the fake's brand and domain).
    pub fn expected(&self, types: &[String]) -> mapping::MappedPage {
        let handle = format!("@brand@{}", self.domain);
        let source = mapping::source_name(&self.domain);
        let ctx = mapping::Context {
            domain: &self.domain,
            source: &source,
            brand_id: BRAND_ID,
            brand_handle: &handle,
            types,
            received_at: Utc::now(),
            max_text_chars: 2000,
        };
        mapping::map_notifications(&self.notifications(), &ctx)
    }
}

/// splitmix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const FIRST: &[&str] = &[
    "Ann", "Bob", "Chen", "Dana", "Emeka", "Fatima", "Greta", "Hiro", "Ines", "Jonas", "Kofi",
    "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
    "Wen", "Yara", "Zoe",
];
const LAST: &[&str] = &[
    "Lee", "Okafor", "Schmidt", "Rossi", "Tanaka", "Novak", "Garcia", "Haddad", "Kowalski", "Berg",
    "Mensah", "Dubois", "Silva", "Ivanova", "Park",
];
const REMOTE: &[&str] = &[
    "mastodon.social",
    "fosstodon.org",
    "hachyderm.io",
    "mas.to",
    "chaos.social",
    "infosec.exchange",
];
const WORDS: &[&str] = &[
    "love", "the", "new", "release", "coffee", "shipping", "order", "support", "thanks", "great",
    "question", "about", "pricing", "when", "will", "you", "add", "dark", "mode", "bug", "fixed",
    "amazing", "team", "store", "open", "weekend", "sale", "feedback", "roadmap", "privacy",
];
const TAGS: &[&str] = &[
    "opensource",
    "rust",
    "coffee",
    "feedback",
    "launch",
    "privacy",
];
const LANGS: &[&str] = &["en", "en", "en", "de", "fr", "es", "ja"];

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Mastodon's status ids: milliseconds since the epoch << 16, plus a sequence.
fn snowflake(t: DateTime<Utc>, seq: u64) -> u64 {
    ((t.timestamp_millis().max(0) as u64) << 16) | (seq & 0xffff)
}

fn brand_account() -> Value {
    json!({
        "id": BRAND_ID,
        "username": "brand",
        "acct": "brand",
        "display_name": "Example Brand",
        "locked": false,
        "bot": false,
        "discoverable": true,
        "group": false,
        "created_at": "2022-11-01T00:00:00.000Z",
        "note": "<p>Official account of Example Brand. Support: <a href=\"https://brand.example/help\" rel=\"nofollow noopener\" target=\"_blank\"><span class=\"invisible\">https://</span><span class=\"\">brand.example/help</span><span class=\"invisible\"></span></a></p>",
        "url": format!("https://{FAKE_DOMAIN}/@brand"),
        "uri": format!("https://{FAKE_DOMAIN}/users/brand"),
        "avatar": format!("https://files.{FAKE_DOMAIN}/accounts/avatars/000/000/001/original/brand.png"),
        "avatar_static": format!("https://files.{FAKE_DOMAIN}/accounts/avatars/000/000/001/original/brand.png"),
        "header": format!("https://{FAKE_DOMAIN}/headers/original/missing.png"),
        "header_static": format!("https://{FAKE_DOMAIN}/headers/original/missing.png"),
        "followers_count": 48213,
        "following_count": 120,
        "statuses_count": 3120,
        "last_status_at": "2024-02-29",
        "emojis": [],
        "fields": [],
        "source": {"privacy": "public", "sensitive": false, "language": "en", "note": "Official account of Example Brand.", "fields": [], "follow_requests_count": 0}
    })
}

fn link_html(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    format!(
        "<a href=\"{url}\" target=\"_blank\" rel=\"nofollow noopener noreferrer me\"><span class=\"invisible\">{scheme}://</span><span class=\"\">{rest}</span><span class=\"invisible\"></span></a>"
    )
}

/// An account as seen from the fake server (acct without domain when local).
fn account(rng: &mut Rng, j: usize, twin_of: Option<&Value>, with_site: bool) -> Value {
    let remote = rng.chance(65);
    let domain = if remote {
        *rng.pick(REMOTE)
    } else {
        FAKE_DOMAIN
    };
    let (first, last) = match twin_of.and_then(|t| t["display_name"].as_str()) {
        Some(name) => {
            let (f, l) = name.split_once(' ').unwrap_or((name, ""));
            (f.to_string(), l.to_string())
        }
        None => (rng.pick(FIRST).to_string(), rng.pick(LAST).to_string()),
    };
    let username = format!("{}_{}{}", first.to_lowercase(), last.to_lowercase(), j);
    let acct = if remote {
        format!("{username}@{domain}")
    } else {
        username.clone()
    };
    // a person with two accounts claims the same website on both
    let website = match twin_of {
        Some(t) => t["fields"][0]["value"]
            .as_str()
            .and_then(|v| v.split('"').nth(1))
            .map(str::to_string),
        None if with_site || rng.chance(45) => Some(format!(
            "https://{}{}.example.net",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        None => None,
    };
    let mut fields = Vec::new();
    if let Some(w) = &website {
        fields.push(json!({
            "name": "Website",
            "value": link_html(w),
            "verified_at": if rng.chance(50) { Value::String("2023-05-02T10:00:00.000+00:00".into()) } else { Value::Null },
        }));
    }
    if rng.chance(30) {
        fields.push(json!({"name": "Pronouns", "value": *rng.pick(&["she/her", "he/him", "they/them"]), "verified_at": null}));
    }
    let tag = *rng.pick(TAGS);
    let mut note = format!(
        "<p>{} {} &amp; {}. <a href=\"https://{domain}/tags/{tag}\" class=\"mention hashtag\" rel=\"tag\">#<span>{tag}</span></a></p>",
        rng.pick(&["Maker of things,", "Developer,", "Coffee person,", "Designer,", "Writer,"]),
        rng.pick(WORDS),
        rng.pick(WORDS)
    );
    if rng.chance(30) {
        note.push_str(&format!(
            "<p>Blog: {}</p>",
            link_html(&format!("https://blog.example.org/{username}"))
        ));
    }
    let followers = {
        let x = rng.below(1000) as f64 / 1000.0;
        (x * x * x * 80_000.0) as u64 + rng.below(40)
    };
    let id = 100 + j as u64;
    json!({
        "id": id.to_string(),
        "username": username,
        "acct": acct,
        "display_name": format!("{first} {last}"),
        "locked": rng.chance(5),
        "bot": rng.chance(3),
        "discoverable": true,
        "group": false,
        "created_at": "2023-01-15T00:00:00.000Z",
        "note": note,
        "url": format!("https://{domain}/@{username}"),
        "uri": format!("https://{domain}/users/{username}"),
        "avatar": format!("https://files.{FAKE_DOMAIN}/cache/accounts/avatars/{id}/original/a.png"),
        "avatar_static": format!("https://files.{FAKE_DOMAIN}/cache/accounts/avatars/{id}/original/a.png"),
        "header": format!("https://{FAKE_DOMAIN}/headers/original/missing.png"),
        "header_static": format!("https://{FAKE_DOMAIN}/headers/original/missing.png"),
        "followers_count": followers,
        "following_count": rng.below(2000),
        "statuses_count": rng.below(20_000),
        "last_status_at": "2024-02-28",
        "emojis": [],
        "fields": fields,
    })
}

fn mention_of(acc: &Value) -> Value {
    json!({
        "id": acc["id"],
        "username": acc["username"],
        "url": acc["url"],
        "acct": acc["acct"],
    })
}

/// A status without its `account` (added when pieces are assembled).
#[allow(clippy::too_many_arguments)]
fn status_body(
    id: u64,
    created: DateTime<Utc>,
    author: &Value,
    content: String,
    mentions: Vec<Value>,
    tags: Vec<&str>,
    in_reply_to: Option<(u64, &str)>,
    visibility: &str,
    language: &str,
    counts: (u64, u64, u64),
) -> Value {
    let url = author["url"].as_str().unwrap_or("");
    json!({
        "id": id.to_string(),
        "created_at": iso(created),
        "in_reply_to_id": in_reply_to.map(|(s, _)| s.to_string()),
        "in_reply_to_account_id": in_reply_to.map(|(_, a)| a.to_string()),
        "sensitive": false,
        "spoiler_text": "",
        "visibility": visibility,
        "language": language,
        "uri": format!("{}/statuses/{id}", url.replace("/@", "/users/")),
        "url": format!("{url}/{id}"),
        "replies_count": counts.0,
        "reblogs_count": counts.1,
        "favourites_count": counts.2,
        "edited_at": null,
        "favourited": false,
        "reblogged": false,
        "muted": false,
        "bookmarked": false,
        "content": content,
        "filtered": [],
        "reblog": null,
        "application": null,
        "media_attachments": [],
        "mentions": mentions,
        "tags": tags.iter().map(|t| json!({"name": t, "url": format!("https://{FAKE_DOMAIN}/tags/{t}")})).collect::<Vec<_>>(),
        "emojis": [],
        "card": null,
        "poll": null,
    })
}

/// JSON object text without its closing brace.
fn open_object(v: &Value) -> String {
    let mut s = v.to_string();
    s.pop();
    s
}

/// The pieces of `{...status fields, "account": <account>}`.
fn status_pieces(body: &Value, account: &Arc<str>) -> Vec<Arc<str>> {
    vec![
        Arc::from(format!("{},\"account\":", open_object(body))),
        account.clone(),
        Arc::from("}"),
    ]
}

fn text(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn mention_html(acc: &Value) -> String {
    format!(
        "<span class=\"h-card\" translate=\"no\"><a href=\"{}\" class=\"u-url mention\">@<span>{}</span></a></span>",
        acc["url"].as_str().unwrap_or(""),
        acc["username"].as_str().unwrap_or("")
    )
}

/// `n` notifications of the brand account, deterministic for a `seed`: favourites
/// (~35 %), reblogs (~20 %), mentions (~20 %, half of them replies to the brand),
/// follows (~15 %) and posts of subscribed accounts (~10 %), from a pool of local
/// and remote accounts. Every tenth account has a twin on another server (same
/// person: same display name, same claimed website).
pub fn generate(n: usize, seed: u64) -> FakeData {
    let mut rng = Rng(seed ^ 0x6d61_7374_6f64_6f6e);
    let mut data = FakeData::empty();
    let brand = data.brand.clone();
    let brand_str: Arc<str> = Arc::from(brand.to_string());
    let pool = (n / 3).clamp(8, 5000);
    let mut accounts: Vec<Value> = Vec::with_capacity(pool);
    for j in 0..pool {
        let twin = if j % 10 == 1 {
            accounts.last().cloned()
        } else {
            None
        };
        accounts.push(account(&mut rng, j, twin.as_ref(), j % 10 == 0));
    }
    let account_strs: Vec<Arc<str>> = accounts.iter().map(|a| Arc::from(a.to_string())).collect();
    let base = DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    // the brand's own statuses (boosted and favourited)
    let n_brand = (n / 10).clamp(3, 500);
    let mut brand_statuses: Vec<(u64, Vec<Arc<str>>)> = Vec::with_capacity(n_brand);
    for k in 0..n_brand {
        let created = base - chrono::Duration::hours((n_brand - k) as i64 * 6);
        let id = snowflake(created, k as u64);
        let words = 6 + rng.below(20) as usize;
        let body = status_body(
            id,
            created,
            &brand,
            format!("<p>{}</p>", text(&mut rng, words)),
            vec![],
            vec![*rng.pick(TAGS)],
            None,
            "public",
            "en",
            (rng.below(30), rng.below(200), rng.below(900)),
        );
        brand_statuses.push((id, status_pieces(&body, &brand_str)));
    }
    let mut t = base;
    let mut id = 100_000u64;
    for i in 0..n {
        id += 1 + rng.below(3);
        t += chrono::Duration::milliseconds(1000 + rng.below(90_000) as i64);
        let a = rng.below(pool as u64) as usize;
        let actor = &accounts[a];
        let roll = rng.below(100);
        let kind = match roll {
            0..=34 => "favourite",
            35..=54 => "reblog",
            55..=74 => "mention",
            75..=89 => "follow",
            _ => "status",
        };
        let head = json!({
            "id": id.to_string(),
            "type": kind,
            "created_at": iso(t),
            "group_key": format!("ungrouped-{id}"),
        });
        let mut pieces: Vec<Arc<str>> = vec![
            Arc::from(format!("{},\"account\":", open_object(&head))),
            account_strs[a].clone(),
        ];
        let status: Option<Vec<Arc<str>>> = match kind {
            "favourite" | "reblog" => Some(rng.pick(&brand_statuses).1.clone()),
            "follow" => None,
            _ => {
                let created = t - chrono::Duration::milliseconds(200 + rng.below(3000) as i64);
                let sid = snowflake(created, i as u64);
                let mut mentions = Vec::new();
                let mut html = String::from("<p>");
                let mut reply = None;
                if kind == "mention" {
                    mentions.push(mention_of(&brand));
                    html.push_str(&mention_html(&brand));
                    html.push(' ');
                    if rng.chance(50) {
                        let (sid_b, _) = rng.pick(&brand_statuses);
                        reply = Some((*sid_b, BRAND_ID));
                    }
                }
                if rng.chance(25) {
                    let other = &accounts[rng.below(pool as u64) as usize];
                    if other["id"] != actor["id"] {
                        mentions.push(mention_of(other));
                        html.push_str(&mention_html(other));
                        html.push(' ');
                    }
                }
                let words = 4 + rng.below(30) as usize;
                html.push_str(&text(&mut rng, words));
                let tags = if rng.chance(30) {
                    let tg = *rng.pick(TAGS);
                    html.push_str(&format!(
                        " <a href=\"https://{FAKE_DOMAIN}/tags/{tg}\" class=\"mention hashtag\" rel=\"tag\">#<span>{tg}</span></a>"
                    ));
                    vec![tg]
                } else {
                    vec![]
                };
                html.push_str("</p>");
                let visibility = match rng.below(20) {
                    0 => "direct",
                    1 => "private",
                    2 | 3 => "unlisted",
                    _ => "public",
                };
                let lang = *rng.pick(LANGS);
                let body = status_body(
                    sid,
                    created,
                    actor,
                    html,
                    mentions,
                    tags,
                    reply,
                    visibility,
                    lang,
                    (rng.below(5), rng.below(10), rng.below(40)),
                );
                Some(status_pieces(&body, &account_strs[a]))
            }
        };
        if let Some(s) = status {
            pieces.push(Arc::from(",\"status\":"));
            pieces.extend(s);
        }
        pieces.push(Arc::from("}"));
        data.items.push(Item {
            id,
            kind: kind.to_string(),
            pieces,
        });
    }
    data
}

/// Fixed-window call counter (Mastodon's rack-attack buckets work alike).
struct Window {
    reset_at: SystemTime,
    used: u32,
}

struct FakeState {
    data: FakeData,
    window: Mutex<Window>,
}

/// The fake server's routes (wrap with `testkit::FakeServer` for faults).
pub fn router(data: FakeData) -> Router {
    let state = Arc::new(FakeState {
        data,
        window: Mutex::new(Window {
            reset_at: SystemTime::UNIX_EPOCH,
            used: 0,
        }),
    });
    Router::new()
        .route("/api/v1/notifications", get(notifications))
        .route(
            "/api/v1/accounts/verify_credentials",
            get(verify_credentials),
        )
        .route("/api/v2/instance", get(instance_v2))
        .route("/api/v1/instance", get(instance_v1))
        .fallback(|| async {
            json_response(
                StatusCode::NOT_FOUND,
                r#"{"error":"Record not found"}"#.to_string(),
            )
        })
        .with_state(state)
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Counts the call; `Err` is the 429 answer when the window is used up.
fn rate_limit(
    state: &FakeState,
    headers: &mut Vec<(&'static str, String)>,
) -> Result<(), Box<Response>> {
    let now = SystemTime::now();
    let mut w = state.window.lock().unwrap_or_else(|e| e.into_inner());
    if now >= w.reset_at {
        // the reset time is sent with millisecond precision: round up so that a
        // client waiting for it never arrives before the window really ended
        let end = now + state.data.rate_window;
        let ms = end
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 + 1)
            .unwrap_or(0);
        w.reset_at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        w.used = 0;
    }
    w.used = w.used.saturating_add(1);
    let limit = state.data.rate_limit;
    let remaining = limit.saturating_sub(w.used);
    let reset: DateTime<Utc> = w.reset_at.into();
    headers.push(("x-ratelimit-limit", limit.to_string()));
    headers.push(("x-ratelimit-remaining", remaining.to_string()));
    headers.push(("x-ratelimit-reset", iso(reset)));
    if w.used > limit {
        let mut r = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"Too many requests"}"#.to_string(),
        );
        add_headers(&mut r, headers);
        return Err(Box::new(r));
    }
    Ok(())
}

fn add_headers(r: &mut Response, headers: &[(&'static str, String)]) {
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().append(*k, v);
        }
    }
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.data.token)
}

fn unauthorized(headers: &[(&'static str, String)]) -> Response {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"The access token is invalid"}"#.to_string(),
    );
    add_headers(&mut r, headers);
    r
}

async fn verify_credentials(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let mut hs = Vec::new();
    if let Err(r) = rate_limit(&state, &mut hs) {
        return *r;
    }
    if !authorized(&state, req.headers()) {
        return unauthorized(&hs);
    }
    let mut r = json_response(StatusCode::OK, state.data.brand.to_string());
    add_headers(&mut r, &hs);
    r
}

async fn instance_v2(State(state): State<Arc<FakeState>>) -> Response {
    let mut hs = Vec::new();
    if let Err(r) = rate_limit(&state, &mut hs) {
        return *r;
    }
    let body = json!({
        "domain": state.data.domain,
        "title": "Example Social",
        "version": "4.3.2",
        "source_url": "https://github.com/mastodon/mastodon",
        "description": "A fake Mastodon server for tests",
    });
    let mut r = json_response(StatusCode::OK, body.to_string());
    add_headers(&mut r, &hs);
    r
}

async fn instance_v1(State(state): State<Arc<FakeState>>) -> Response {
    let mut hs = Vec::new();
    if let Err(r) = rate_limit(&state, &mut hs) {
        return *r;
    }
    let body = json!({
        "uri": state.data.domain,
        "title": "Example Social",
        "version": "3.5.3",
    });
    let mut r = json_response(StatusCode::OK, body.to_string());
    add_headers(&mut r, &hs);
    r
}

fn bad_request(msg: &str, headers: &[(&'static str, String)]) -> Response {
    let mut r = json_response(StatusCode::BAD_REQUEST, json!({ "error": msg }).to_string());
    add_headers(&mut r, headers);
    r
}

async fn notifications(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let mut hs = Vec::new();
    if let Err(r) = rate_limit(&state, &mut hs) {
        return *r;
    }
    if !authorized(&state, req.headers()) {
        return unauthorized(&hs);
    }
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let parsed = match reqwest::Url::parse(&format!("http://x/?{query}")) {
        Ok(u) => u,
        Err(_) => return bad_request("bad query", &hs),
    };
    let mut min_id = None;
    let mut max_id = None;
    let mut since_id = None;
    let mut limit = 40usize;
    let mut types: HashSet<String> = HashSet::new();
    let mut exclude: HashSet<String> = HashSet::new();
    for (k, v) in parsed.query_pairs() {
        let num = || v.parse::<u64>().ok();
        match k.as_ref() {
            "min_id" => match num() {
                Some(x) => min_id = Some(x),
                None => return bad_request("min_id must be an id", &hs),
            },
            "max_id" => match num() {
                Some(x) => max_id = Some(x),
                None => return bad_request("max_id must be an id", &hs),
            },
            "since_id" => match num() {
                Some(x) => since_id = Some(x),
                None => return bad_request("since_id must be an id", &hs),
            },
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .unwrap_or(40)
                    .clamp(1, state.data.max_limit.max(1));
            }
            "types[]" => {
                types.insert(v.into_owned());
            }
            "exclude_types[]" => {
                exclude.insert(v.into_owned());
            }
            _ => {}
        }
    }
    let items = &state.data.items;
    let wanted =
        |i: &&Item| (types.is_empty() || types.contains(&i.kind)) && !exclude.contains(&i.kind);
    // Mastodon's paginate_by_id: with min_id, the oldest `limit` above it, then
    // reversed; otherwise the newest `limit` below max_id (and above since_id)
    let page: Vec<&Item> = match min_id {
        Some(min) => {
            let start = items.partition_point(|i| i.id <= min);
            let mut v: Vec<&Item> = items[start..]
                .iter()
                .take_while(|i| max_id.is_none_or(|m| i.id < m))
                .filter(wanted)
                .take(limit)
                .collect();
            v.reverse();
            v
        }
        None => {
            let end = match max_id {
                Some(m) => items.partition_point(|i| i.id < m),
                None => items.len(),
            };
            items[..end]
                .iter()
                .rev()
                .take_while(|i| since_id.is_none_or(|s| i.id > s))
                .filter(wanted)
                .take(limit)
                .collect()
        }
    };
    let mut body = String::with_capacity(page.iter().map(|i| i.json_len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (k, item) in page.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        item.write(&mut body);
    }
    body.push(']');
    let mut r = json_response(StatusCode::OK, body);
    let prev_link = state.data.prev_link;
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        // like Rails' url helpers: the kept parameters, then the cursor
        let mut keep = String::new();
        for (k, v) in parsed.query_pairs() {
            if matches!(k.as_ref(), "limit" | "types[]" | "exclude_types[]") {
                let k = k.replace('[', "%5B").replace(']', "%5D");
                keep.push_str(&format!("{k}={v}&"));
            }
        }
        let base = format!("http://{host}/api/v1/notifications?{keep}");
        let prev = if prev_link == PrevLink::Oldest {
            &last.id
        } else {
            &first.id
        };
        let link = format!(
            "<{base}max_id={}>; rel=\"next\", <{base}min_id={prev}>; rel=\"prev\"",
            last.id
        );
        if prev_link != PrevLink::Absent {
            hs.push(("link", link));
        }
    }
    add_headers(&mut r, &hs);
    r
}

impl std::fmt::Debug for FakeData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeData")
            .field("domain", &self.domain)
            .field("notifications", &self.items.len())
            .finish()
    }
}

/// A notification built by hand (tests): `account` and `status` as given.
pub fn notification(
    id: u64,
    kind: &str,
    created_at: &str,
    account: &Value,
    status: Option<&Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id.to_string()));
    m.insert("type".into(), Value::String(kind.into()));
    m.insert("created_at".into(), Value::String(created_at.into()));
    m.insert("group_key".into(), Value::String(format!("ungrouped-{id}")));
    m.insert("account".into(), account.clone());
    if let Some(s) = status {
        m.insert("status".into(), s.clone());
    }
    Value::Object(m)
}
