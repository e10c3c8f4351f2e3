//! A local stand-in for the X API v2 user mention timeline, for tests and
//! benchmarks (feature `testkit`).
//!
//! `GET /2/users/:id/mentions` as X documents it: Bearer auth (401 with X's problem
//! body otherwise), `max_results` 5–100 (default 10), `since_id`/`until_id`
//! (exclusive), `start_time`/`end_time` (inclusive, second granularity),
//! `pagination_token` (opaque `next_token`s; an unknown one is a 400 "Invalid
//! Request"), unknown query parameters refused with a 400, answers newest → oldest
//! with `data`, `includes.users` (expansion `author_id`), `includes.tweets`
//! (expansion `referenced_tweets.id`), `meta.{result_count,newest_id,oldest_id,next_token}`
//! and partial `errors` for referenced posts that no longer exist. Every answer has
//! `x-rate-limit-limit/remaining/reset` (epoch seconds); past the limit it answers
//! 429. An unknown user id gets X's 200 "Not Found Error" answer.
//!
//! Not modelled: field selection (`tweet.fields`/`user.fields` are accepted, every
//! field is always sent), the 800-post depth unless [`FakeData::timeline_depth`] is
//! set, and the Project-level post cap.
//!
//! Posts are serialised once when added, so pages are cheap to build (benchmarks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::mapping::{self, MapContext, MappedPage};
use super::Config;
use crate::runtime::config::Secret;

/// The bearer token the fake accepts by default.
pub const TOKEN: &str = "fake-x-bearer-token-AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0";
/// The brand account of generated data (`@XDevelopers`' documented id).
pub const BRAND_ID: &str = "2244994945";
/// The brand's handle in generated data.
pub const BRAND_USERNAME: &str = "acme_brand";

/// Query parameters the mentions endpoint knows.
const KNOWN_PARAMS: &[&str] = &[
    "since_id",
    "until_id",
    "start_time",
    "end_time",
    "max_results",
    "pagination_token",
    "exclude",
    "expansions",
    "tweet.fields",
    "user.fields",
    "media.fields",
    "place.fields",
    "poll.fields",
];

/// Calls allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone)]
struct FakePost {
    /// Sort key (the post id, or the position given to a malformed object).
    id: u64,
    created_at: Option<DateTime<Utc>>,
    author_id: Option<String>,
    refs: Vec<String>,
    json: String,
}

/// What the fake serves.
#[derive(Debug, Clone)]
pub struct FakeData {
    pub brand_id: String,
    pub bearer_token: String,
    /// Default: generous (benchmarks walk thousands of pages); tests set small ones.
    pub rate_limit: RateLimit,
    /// Only the most recent `timeline_depth` posts are reachable (X: 800).
    pub timeline_depth: usize,
    /// Newest first.
    posts: Vec<FakePost>,
    users: HashMap<String, String>,
    referenced: HashMap<String, (String, String)>,
    next_id: u64,
    rng: u64,
}

/// Shared, mutable data (add posts while the server runs).
pub type Shared = Arc<RwLock<FakeData>>;

/// splitmix64: deterministic and good enough for test data.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(rng: &mut u64, list: &'a [&'a str]) -> &'a str {
    list[(next_rand(rng) % list.len() as u64) as usize]
}

const FIRST: &[&str] = &[
    "Ann", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Lea",
    "Mia", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yuki",
];
const LAST: &[&str] = &[
    "Lee", "Martin", "Okafor", "Schmidt", "Rossi", "Garcia", "Nowak", "Silva", "Kim", "Dubois",
    "Novak", "Haddad", "Berg", "Costa",
];
const TAGS: &[&str] = &[
    "support", "love", "fail", "newdrop", "sale", "unboxing", "help", "review",
];
const LANGS: &[&str] = &["en", "en", "en", "de", "fr", "es", "ja"];
const PHRASES: &[&str] = &[
    "love the new release",
    "my order has not arrived yet",
    "any discount codes this week?",
    "the app keeps crashing on login",
    "best customer service ever",
    "is this available in Europe?",
    "just unboxed mine",
    "who else is waiting for the restock",
];

/// First generated post id (a 2025-era snowflake) and the step between posts.
const BASE_POST_ID: u64 = 1_900_000_000_000_000_000;
const POST_ID_STEP: u64 = 377_487_360;
/// Referenced (older) posts live below this.
const BASE_REF_ID: u64 = 1_800_000_000_000_000_000;

impl FakeData {
    /// No posts; the brand account and its user object only.
    pub fn new(brand_id: &str, bearer_token: &str) -> FakeData {
        let mut d = FakeData {
            brand_id: brand_id.to_string(),
            bearer_token: bearer_token.to_string(),
            rate_limit: RateLimit {
                limit: 1_000_000,
                window_secs: 900,
            },
            timeline_depth: usize::MAX,
            posts: Vec::new(),
            users: HashMap::new(),
            referenced: HashMap::new(),
            next_id: BASE_POST_ID,
            rng: 0,
        };
        d.add_user(json!({
            "id": brand_id, "username": BRAND_USERNAME, "name": "Acme",
            "public_metrics": {"followers_count": 120_000, "following_count": 310,
                "tweet_count": 9_800, "listed_count": 410, "like_count": 2_000}
        }));
        d
    }

    /// Adds (or replaces) a user object of `includes.users`.
    pub fn add_user(&mut self, user: Value) {
        if let Some(id) = user.get("id").and_then(Value::as_str) {
            self.users.insert(id.to_string(), user.to_string());
        }
    }

    /// Adds a post that others reference (served in `includes.tweets`).
    pub fn add_referenced(&mut self, tweet: Value) {
        let id = tweet.get("id").and_then(Value::as_str).map(str::to_string);
        let author = tweet
            .get("author_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(id) = id {
            self.referenced.insert(id, (author, tweet.to_string()));
        }
    }

    /// Adds a mention (a documented post object with a numeric string `id`).
    pub fn add_post(&mut self, post: Value) {
        let id = post
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let created_at = post
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(mapping::parse_time);
        let author_id = post
            .get("author_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let refs = post
            .get("referenced_tweets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        self.next_id = self.next_id.max(id.saturating_add(POST_ID_STEP));
        self.insert(FakePost {
            id,
            created_at,
            author_id,
            refs,
            json: post.to_string(),
        });
    }

    /// Adds any JSON as a post, served where a post with id `sort_id` would be
    /// (malformed objects: wrong types, missing fields, not an object).
    pub fn add_malformed(&mut self, sort_id: u64, raw: Value) {
        let created_at = raw
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(mapping::parse_time);
        self.insert(FakePost {
            id: sort_id,
            created_at,
            author_id: None,
            refs: Vec::new(),
            json: raw.to_string(),
        });
    }

    fn insert(&mut self, p: FakePost) {
        let pos = self.posts.partition_point(|q| q.id > p.id);
        if self.posts.get(pos).is_some_and(|q| q.id == p.id) {
            self.posts[pos] = p;
        } else {
            self.posts.insert(pos, p);
        }
    }

    /// Ids of every served post, newest first.
    pub fn post_ids(&self) -> Vec<String> {
        self.posts.iter().map(|p| p.id.to_string()).collect()
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    /// Adds `n` generated mentions newer than every post so far.
    pub fn push_generated(&mut self, n: usize) {
        let user_count = self
            .users
            .keys()
            .filter(|k| **k != self.brand_id)
            .count()
            .max(1);
        let mut rng = self.rng;
        for _ in 0..n {
            self.generate_post(&mut rng, user_count);
        }
        self.rng = rng;
    }

    fn user_id(k: usize) -> String {
        (1_000_000_000_000u64 + k as u64 * 7_919).to_string()
    }

    fn generate_users(&mut self, rng: &mut u64, count: usize) {
        for k in 0..count {
            let first = pick(rng, FIRST);
            let last = pick(rng, LAST);
            let followers = next_rand(rng) % 5_000 + if k % 37 == 0 { 250_000 } else { 0 };
            self.add_user(json!({
                "id": Self::user_id(k),
                "username": format!("{}_{}{}", first.to_lowercase(), last.to_lowercase(), k),
                "name": format!("{first} {last}"),
                "public_metrics": {
                    "followers_count": followers,
                    "following_count": next_rand(rng) % 2_000,
                    "tweet_count": next_rand(rng) % 40_000,
                    "listed_count": next_rand(rng) % 50,
                    "like_count": next_rand(rng) % 90_000
                }
            }));
        }
    }

    fn generate_post(&mut self, rng: &mut u64, user_count: usize) {
        let id = self.next_id;
        self.next_id += POST_ID_STEP;
        // one post every 90 s from 2025-06-01; ids and times grow together
        let seq = (id - BASE_POST_ID) / POST_ID_STEP;
        let created =
            DateTime::<Utc>::from_timestamp(1_748_736_000 + seq as i64 * 90, 0).unwrap_or_default();
        // a few very active people: the first users author most posts
        let r = next_rand(rng);
        let k = if r.is_multiple_of(4) {
            (r >> 8) as usize % user_count.min(5)
        } else {
            (r >> 8) as usize % user_count
        };
        let author = Self::user_id(k);
        let roll = next_rand(rng) % 100;
        let phrase = pick(rng, PHRASES);
        let tag = pick(rng, TAGS);
        let mut post = json!({
            "id": id.to_string(),
            "author_id": author,
            "created_at": created.format("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "conversation_id": id.to_string(),
            "lang": pick(rng, LANGS),
            "edit_history_tweet_ids": [id.to_string()],
            "public_metrics": {
                "retweet_count": next_rand(rng) % 20, "reply_count": next_rand(rng) % 10,
                "like_count": next_rand(rng) % 200, "quote_count": next_rand(rng) % 5,
                "bookmark_count": next_rand(rng) % 5, "impression_count": next_rand(rng) % 10_000
            },
        });
        let mut entities = json!({
            "mentions": [{"start": 0, "end": 11, "username": BRAND_USERNAME, "id": self.brand_id}],
            "hashtags": [{"start": 40, "end": 41 + tag.len(), "tag": tag}],
        });
        if next_rand(rng).is_multiple_of(5) {
            entities["urls"] = json!([{"start": 60, "end": 83, "url": "https://t.co/AbCdEf1234",
                "expanded_url": format!("https://shop.example/p/{}", id % 997),
                "display_url": format!("shop.example/p/{}", id % 997)}]);
        }
        // a referenced post: the brand's (half of the time) or another person's
        let ref_id = (BASE_REF_ID + seq).to_string();
        let ref_author = if next_rand(rng).is_multiple_of(2) {
            self.brand_id.clone()
        } else {
            Self::user_id((next_rand(rng) as usize) % user_count)
        };
        // one referenced post in 20 was deleted: X answers with a partial error
        let deleted = next_rand(rng).is_multiple_of(20);
        let reference = |d: &mut FakeData, kind: &str| {
            if !deleted {
                d.add_referenced(json!({"id": ref_id, "author_id": ref_author,
                    "text": "an earlier post", "created_at": "2025-05-01T10:00:00.000Z"}));
            }
            json!([{"type": kind, "id": ref_id}])
        };
        let text = match roll {
            0..=44 => format!("@{BRAND_USERNAME} {phrase} #{tag}"),
            45..=69 => {
                post["referenced_tweets"] = reference(self, "replied_to");
                post["in_reply_to_user_id"] = Value::String(ref_author.clone());
                post["conversation_id"] = Value::String(ref_id.clone());
                format!("@{BRAND_USERNAME} {phrase} #{tag}")
            }
            70..=84 => {
                post["referenced_tweets"] = reference(self, "quoted");
                format!("@{BRAND_USERNAME} {phrase} #{tag} https://t.co/q{id}")
            }
            85..=96 => {
                post["referenced_tweets"] = reference(self, "retweeted");
                format!("RT @someone: @{BRAND_USERNAME} {phrase} #{tag}")
            }
            _ => {
                // the brand mentioning itself (a thread reply): not an event
                post["author_id"] = Value::String(self.brand_id.clone());
                format!("Thanks! DM @{BRAND_USERNAME} with your order number #{tag}")
            }
        };
        post["text"] = Value::String(text);
        post["entities"] = entities;
        self.add_post(post);
    }

    /// The most recent `limit` posts after the filters, starting at `from` (a sort
    /// key: posts with an id at or below it).
    fn select(&self, f: &Filter) -> (Vec<&FakePost>, Option<u64>) {
        let reachable = &self.posts[..self.posts.len().min(self.timeline_depth)];
        let start = match f.from {
            Some(from) => reachable.partition_point(|p| p.id > from),
            None => 0,
        };
        let mut out = Vec::with_capacity(f.limit);
        let mut next = None;
        for p in &reachable[start..] {
            if f.since_id.is_some_and(|s| p.id <= s) {
                break;
            }
            if f.until_id.is_some_and(|u| p.id >= u) {
                continue;
            }
            if let (Some(st), Some(c)) = (f.start_time, p.created_at) {
                if c < st {
                    continue;
                }
            }
            if let (Some(et), Some(c)) = (f.end_time, p.created_at) {
                if c > et {
                    continue;
                }
            }
            if out.len() == f.limit {
                next = Some(p.id);
                break;
            }
            out.push(p);
        }
        (out, next)
    }

    /// The JSON answer for `posts` (with their includes and partial errors).
    fn body(&self, posts: &[&FakePost], next: Option<u64>) -> String {
        if posts.is_empty() {
            return "{\"meta\":{\"result_count\":0}}".to_string();
        }
        let mut s =
            String::with_capacity(posts.iter().map(|p| p.json.len() + 1).sum::<usize>() * 2);
        s.push_str("{\"data\":[");
        for (i, p) in posts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&p.json);
        }
        s.push_str("],\"includes\":{\"users\":[");
        let mut seen = HashSet::new();
        let mut first = true;
        for p in posts {
            if let Some(a) = &p.author_id {
                if seen.insert(a.as_str()) {
                    if let Some(u) = self.users.get(a) {
                        if !first {
                            s.push(',');
                        }
                        first = false;
                        s.push_str(u);
                    }
                }
            }
        }
        s.push_str("],\"tweets\":[");
        let mut first = true;
        let mut missing = Vec::new();
        let mut seen_refs = HashSet::new();
        for p in posts {
            for r in &p.refs {
                if !seen_refs.insert(r.as_str()) {
                    continue;
                }
                match self.referenced.get(r) {
                    Some((_, t)) => {
                        if !first {
                            s.push(',');
                        }
                        first = false;
                        s.push_str(t);
                    }
                    None => missing.push(r.as_str()),
                }
            }
        }
        s.push_str("]},");
        if !missing.is_empty() {
            let errors: Vec<Value> = missing
                .iter()
                .map(|id| {
                    json!({"value": id, "detail": format!("Could not find tweet with referenced_tweets.id: [{id}]."),
                        "title": "Not Found Error", "resource_type": "tweet",
                        "parameter": "referenced_tweets.id", "resource_id": id,
                        "type": "https://api.twitter.com/2/problems/resource-not-found"})
                })
                .collect();
            s.push_str("\"errors\":");
            s.push_str(&Value::Array(errors).to_string());
            s.push(',');
        }
        let ids: Vec<u64> = posts.iter().map(|p| p.id).collect();
        let mut meta = json!({
            "result_count": posts.len(),
            "newest_id": ids.iter().max().map(u64::to_string),
            "oldest_id": ids.iter().min().map(u64::to_string),
        });
        if let Some(n) = next {
            meta["next_token"] = Value::String(encode_token(n));
        }
        s.push_str("\"meta\":");
        s.push_str(&meta.to_string());
        s.push('}');
        s
    }

    /// One answer holding every post (all pages at once): what a clean sync maps.
    pub fn full_response(&self) -> Vec<u8> {
        let all: Vec<&FakePost> = self.posts.iter().collect();
        self.body(&all, None).into_bytes()
    }

    /// What one clean sync of all this data maps to (`received_at` = `now`).
    pub fn expected(&self, now: DateTime<Utc>) -> MappedPage {
        let source = format!("x:{}", self.brand_id);
        let ctx = MapContext {
            brand_id: &self.brand_id,
            source: &source,
            received_at: now,
            since_id: None,
        };
        mapping::map_response(&self.full_response(), &ctx).unwrap_or_default()
    }
}

/// `n` mentions of the brand, deterministic for a `seed`: mentions, replies (to the
/// brand and to others), quotes, reposts, a few posts by the brand itself, a few
/// referenced posts that were deleted (partial errors), a handful of very active
/// people and a few influencers. (X gives no email or phone, so no two people here
/// share one; the same person recurs under one numeric id.)
pub fn generate(n: usize, seed: u64) -> FakeData {
    let mut d = FakeData::new(BRAND_ID, TOKEN);
    let mut rng = seed ^ 0x5EED_0000_0000_0000;
    let user_count = (n / 3).clamp(3, 20_000);
    d.generate_users(&mut rng, user_count);
    for _ in 0..n {
        d.generate_post(&mut rng, user_count);
    }
    d.rng = rng;
    d
}

/// An opaque-looking `next_token` for the post with sort key `id`.
fn encode_token(id: u64) -> String {
    format!("7140dibdnow9c7btw{:016x}", id ^ 0x5DEE_CE66_D1CE_4E5B)
}

fn decode_token(t: &str) -> Option<u64> {
    let hex = t.strip_prefix("7140dibdnow9c7btw")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .map(|v| v ^ 0x5DEE_CE66_D1CE_4E5B)
}

struct Filter {
    since_id: Option<u64>,
    until_id: Option<u64>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    from: Option<u64>,
    limit: usize,
}

#[derive(Default)]
struct Window {
    reset_epoch: u64,
    used: u32,
}

#[derive(Clone)]
struct AppState {
    data: Shared,
    window: Arc<Mutex<Window>>,
}

fn problem(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(param: &str, value: &str, message: String) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        json!({"errors": [{"parameters": {param: [value]}, "message": message}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request"}),
    )
}

fn parse_time_param(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn mentions(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let data = match st.data.read() {
        Ok(d) => d,
        Err(e) => e.into_inner(),
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", data.bearer_token) {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}),
        );
    }
    // the rate-limit window (per app, per endpoint)
    let (remaining, reset) = {
        let mut w = st.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = epoch_now();
        if now >= w.reset_epoch {
            w.reset_epoch = now + data.rate_limit.window_secs;
            w.used = 0;
        }
        w.used += 1;
        (data.rate_limit.limit as i64 - w.used as i64, w.reset_epoch)
    };
    let with_limits = |mut r: Response| {
        let h = r.headers_mut();
        for (k, v) in [
            ("x-rate-limit-limit", data.rate_limit.limit.to_string()),
            ("x-rate-limit-remaining", remaining.max(0).to_string()),
            ("x-rate-limit-reset", reset.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        r
    };
    if remaining < 0 {
        return with_limits(problem(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
        ));
    }
    if !mapping::is_numeric_id(&id) {
        return with_limits(invalid(
            "id",
            &id,
            format!("The `id` query parameter value [{id}] does not match ^[0-9]{{1,19}}$"),
        ));
    }
    let mut f = Filter {
        since_id: None,
        until_id: None,
        start_time: None,
        end_time: None,
        from: None,
        limit: 10,
    };
    for (k, v) in &q {
        if !KNOWN_PARAMS.contains(&k.as_str()) {
            return with_limits(invalid(
                k,
                v,
                format!(
                    "The query parameter [{k}] is not one of [{}]",
                    KNOWN_PARAMS.join(",")
                ),
            ));
        }
        let bad = |what: &str| {
            with_limits(invalid(
                k,
                v,
                format!("The `{k}` query parameter value [{v}] is not {what}"),
            ))
        };
        match k.as_str() {
            "max_results" => match v.parse::<usize>() {
                Ok(n) if (5..=100).contains(&n) => f.limit = n,
                _ => return bad("between 5 and 100"),
            },
            "since_id" => match v.parse::<u64>() {
                Ok(n) => f.since_id = Some(n),
                Err(_) => return bad("a valid Post id"),
            },
            "until_id" => match v.parse::<u64>() {
                Ok(n) => f.until_id = Some(n),
                Err(_) => return bad("a valid Post id"),
            },
            "start_time" => match parse_time_param(v) {
                Some(t) => f.start_time = Some(t),
                None => return bad("a valid RFC 3339 time"),
            },
            "end_time" => match parse_time_param(v) {
                Some(t) => f.end_time = Some(t),
                None => return bad("a valid RFC 3339 time"),
            },
            "pagination_token" => match decode_token(v) {
                Some(n) => f.from = Some(n),
                None => return bad("a valid token"),
            },
            _ => {}
        }
    }
    if id != data.brand_id {
        return with_limits(problem(
            StatusCode::OK,
            json!({"errors": [{"value": id, "detail": format!("Could not find user with id: [{id}]."),
                "title": "Not Found Error", "resource_type": "user", "parameter": "id",
                "resource_id": id, "type": "https://api.twitter.com/2/problems/resource-not-found"}]}),
        ));
    }
    let (posts, next) = data.select(&f);
    let body = data.body(&posts, next);
    with_limits(
        (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// The fake X API serving `data`.
pub fn router(data: FakeData) -> Router {
    router_shared(Arc::new(RwLock::new(data)))
}

/// The fake X API serving shared data (add posts while it runs).
pub fn router_shared(data: Shared) -> Router {
    let st = AppState {
        data,
        window: Arc::new(Mutex::new(Window::default())),
    };
    Router::new()
        .route("/2/users/{id}/mentions", get(mentions))
        .with_state(st)
}

/// A connector config pointing at a fake server at `base_url` (brand
/// [`BRAND_ID`], token [`TOKEN`]).
pub fn test_config(base_url: &str) -> Config {
    Config {
        api_url: base_url.to_string(),
        bearer_token: Secret::new(TOKEN),
        user_id: BRAND_ID.to_string(),
        max_results: 100,
    }
}

/// `created_at` of generated post number `seq` (for `--since` tests).
pub fn generated_time(seq: u64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_748_736_000, 0).unwrap_or_default()
        + Duration::seconds(seq as i64 * 90)
}
