//! The HTTP side of every pull connector: one `reqwest` client, every failure
//! classified (retryable or permanent, with the wait the provider asked for), and
//! requests retried through the one retry module (`socialcrm_schemas::retry`).
//!
//! Waits honoured: `Retry-After` (seconds or HTTP date), `X-RateLimit-Reset`
//! (epoch seconds, or an RFC 3339 time as Mastodon sends it) and X's
//! `x-rate-limit-reset`. When a successful answer says no calls are left
//! (`X-RateLimit-Remaining: 0`), the next call waits for the reset first.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use socialcrm_schemas::retry::{retry, RetryPolicy, Retryable};
use tokio::sync::Mutex;

/// Longest provider-imposed wait honoured for a single call; longer ones count as
/// this (the retry policy's total cap still applies).
const MAX_SINGLE_WAIT: Duration = Duration::from_secs(3600);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the token is wrong, expired or lacks a permission. Permanent.
    #[error("{source_name}: the API refused the credentials (HTTP {status}) for {url}: {fix}")]
    Auth {
        source_name: String,
        status: u16,
        url: String,
        fix: String,
    },
    /// 429 or a provider throttle; retried after `wait`.
    #[error("{source_name}: rate limited (HTTP {status}) on {url}{}", wait_text(.wait))]
    RateLimited {
        source_name: String,
        status: u16,
        url: String,
        wait: Option<Duration>,
    },
    /// 5xx or 408; retried.
    #[error("{source_name}: server error HTTP {status} on {url}{}", wait_text(.wait))]
    Server {
        source_name: String,
        status: u16,
        url: String,
        wait: Option<Duration>,
    },
    /// Any other 4xx: the request is wrong; not retried.
    #[error("{source_name}: HTTP {status} on {url}: {body}")]
    Client {
        source_name: String,
        status: u16,
        url: String,
        body: String,
    },
    /// Connection refused, reset, timed out; retried.
    #[error("{source_name}: cannot reach {url}: {message}")]
    Network {
        source_name: String,
        url: String,
        message: String,
    },
    /// The answer is not what the API documents (not JSON, wrong shape). Not retried.
    #[error("{source_name}: unexpected answer from {url}: {message}")]
    Payload {
        source_name: String,
        url: String,
        message: String,
    },
}

fn wait_text(wait: &Option<Duration>) -> String {
    match wait {
        Some(w) => format!(" (provider asked to wait {} s)", w.as_secs_f64().ceil()),
        None => String::new(),
    }
}

impl ApiError {
    /// True for errors that stop the connector (bad credentials).
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Auth { .. })
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Auth { status, .. }
            | ApiError::RateLimited { status, .. }
            | ApiError::Server { status, .. }
            | ApiError::Client { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. } | ApiError::Server { .. } | ApiError::Network { .. }
        )
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { wait, .. } | ApiError::Server { wait, .. } => *wait,
            _ => None,
        }
    }
}

/// An answered call: status 2xx, headers and body.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub url: String,
}

impl ApiResponse {
    /// Parses the body as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, source_name: &str) -> Result<T, ApiError> {
        self.json_ref(source_name)
    }

    /// [`ApiResponse::json`] into a `T` that borrows from the body (e.g. a
    /// page split into `&RawValue`s without copying them).
    pub fn json_ref<'a, T: serde::Deserialize<'a>>(
        &'a self,
        source_name: &str,
    ) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Payload {
            source_name: source_name.to_string(),
            url: self.url.clone(),
            message: format!("body is not the documented JSON: {e}"),
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a caller adds to a request.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub method: Option<Method>,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
    pub bearer: Option<String>,
    pub json_body: Option<serde_json::Value>,
}

/// Looks at a 2xx answer and may turn it into an error: APIs that report
/// throttling or failures in the body of a 200 (Shopify's GraphQL `THROTTLED`).
pub type Inspector = Arc<dyn Fn(&ApiResponse) -> Option<ApiError> + Send + Sync>;

/// Finds the wait a provider put in the body of a failed answer (Telegram's
/// `parameters.retry_after`), for status and body.
pub type BodyWait = Arc<dyn Fn(u16, &[u8]) -> Option<Duration> + Send + Sync>;

/// The HTTP client of one connector instance.
pub struct ApiClient {
    http: reqwest::Client,
    /// Connector instance name, used in errors and metrics.
    source_name: String,
    /// What to tell the user when the credentials are refused.
    auth_fix: String,
    policy: RetryPolicy,
    /// When the provider said no calls are left: do not call before this time.
    not_before: Mutex<Option<tokio::time::Instant>>,
    /// Secrets that may appear in URLs (Telegram puts the token in the path);
    /// replaced by `***` in every error and log.
    redact: Vec<String>,
    inspector: Option<Inspector>,
    body_wait: Option<BodyWait>,
}

impl ApiClient {
    /// `timeout` bounds one call (long polls pass a longer one per request).
    pub fn new(
        source_name: &str,
        auth_fix: &str,
        policy: RetryPolicy,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        Self::build(
            source_name,
            auth_fix,
            policy,
            reqwest::Client::builder().timeout(timeout),
        )
    }

    /// A client for large downloads read as a stream ([`open`](Self::open)): no
    /// bound on the whole call, only on each wait for more bytes (`read_timeout`).
    pub fn streaming(
        source_name: &str,
        auth_fix: &str,
        policy: RetryPolicy,
        read_timeout: Duration,
    ) -> Result<Self, ApiError> {
        Self::build(
            source_name,
            auth_fix,
            policy,
            reqwest::Client::builder().read_timeout(read_timeout),
        )
    }

    fn build(
        source_name: &str,
        auth_fix: &str,
        policy: RetryPolicy,
        builder: reqwest::ClientBuilder,
    ) -> Result<Self, ApiError> {
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("socialcrm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Network {
                source_name: source_name.to_string(),
                url: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(ApiClient {
            http,
            source_name: source_name.to_string(),
            auth_fix: auth_fix.to_string(),
            policy,
            not_before: Mutex::new(None),
            redact: Vec::new(),
            inspector: None,
            body_wait: None,
        })
    }

    /// Never show `secret` in errors or logs (for tokens inside URLs).
    pub fn redact(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.redact.push(secret.to_string());
        }
        self
    }

    /// Inspect 2xx answers (see [`Inspector`]).
    pub fn with_inspector(mut self, f: Inspector) -> Self {
        self.inspector = Some(f);
        self
    }

    /// Read waits from failed answers' bodies (see [`BodyWait`]).
    pub fn with_body_wait(mut self, f: BodyWait) -> Self {
        self.body_wait = Some(f);
        self
    }

    /// `url` as it may be shown: no query, no secrets.
    pub fn shown(&self, url: &str) -> String {
        let mut s = strip_query(url);
        for r in &self.redact {
            s = s.replace(r.as_str(), "***");
        }
        s
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Calls `url` until it answers 2xx, retrying what is retryable under the
    /// policy. Every attempt counts in `socialcrm_connector_api_calls_total`.
    pub async fn call(&self, url: &str, req: &Request) -> Result<ApiResponse, ApiError> {
        let what = format!("{} api call", self.source_name);
        retry(&self.policy, &what, || self.call_once(url, req)).await
    }

    /// Calls `url` until it answers 2xx (retried like [`call`](Self::call)) and
    /// returns the answer with its body unread, for the caller to stream
    /// ([`reqwest::Response::chunk`]). Failed answers are classified as by `call`;
    /// the inspector does not apply.
    pub async fn open(&self, url: &str, req: &Request) -> Result<reqwest::Response, ApiError> {
        let what = format!("{} download", self.source_name);
        retry(&self.policy, &what, || async {
            let resp = self.send(url, req).await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            // not a success: `answer` reads the (error) body and classifies it
            self.answer(resp).await.and_then(|ok| {
                Err(ApiError::Payload {
                    source_name: self.source_name.clone(),
                    url: ok.url,
                    message: format!("unexpected status {}", ok.status),
                })
            })
        })
        .await
    }

    /// One attempt, no retry.
    pub async fn call_once(&self, url: &str, req: &Request) -> Result<ApiResponse, ApiError> {
        let resp = self.send(url, req).await?;
        let result = self.answer(resp).await;
        if let (Ok(resp), Some(inspect)) = (&result, &self.inspector) {
            if let Some(e) = inspect(resp) {
                return Err(e);
            }
        }
        result
    }

    /// Sends one request (after any quota wait); the body is not read.
    async fn send(&self, url: &str, req: &Request) -> Result<reqwest::Response, ApiError> {
        self.wait_for_quota().await;
        let method = req.method.clone().unwrap_or(Method::GET);
        let mut rb = self.http.request(method, url);
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some((u, p)) = &req.basic_auth {
            rb = rb.basic_auth(u, Some(p));
        }
        if let Some(t) = &req.bearer {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = &req.json_body {
            rb = rb.json(b);
        }
        let resp = rb.send().await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("socialcrm_connector_api_calls_total",
                    "connector" => self.source_name.clone(), "status" => "error")
                .increment(1);
                let mut message = error_chain(&e);
                for r in &self.redact {
                    message = message.replace(r.as_str(), "***");
                }
                return Err(ApiError::Network {
                    source_name: self.source_name.clone(),
                    url: self.shown(url),
                    message,
                });
            }
        };
        metrics::counter!("socialcrm_connector_api_calls_total",
            "connector" => self.source_name.clone(), "status" => resp.status().as_u16().to_string())
        .increment(1);
        Ok(resp)
    }

    /// Reads an answer's body and classifies it (success or a typed error).
    async fn answer(&self, resp: reqwest::Response) -> Result<ApiResponse, ApiError> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let final_url = self.shown(resp.url().as_str());
        self.note_quota(&headers).await;
        let body = resp.bytes().await.map_err(|e| ApiError::Network {
            source_name: self.source_name.clone(),
            url: final_url.clone(),
            message: format!("reading the body: {}", error_chain(&e)),
        })?;
        let body_wait = match (&self.body_wait, status.is_success()) {
            (Some(f), false) => f(status.as_u16(), &body),
            _ => None,
        };
        let mut result = classify(
            &self.source_name,
            &self.auth_fix,
            status,
            headers,
            body,
            final_url,
        );
        if let Err(ApiError::RateLimited { wait, .. } | ApiError::Server { wait, .. }) = &mut result
        {
            if wait.is_none() {
                *wait = body_wait.map(|w| w.min(MAX_SINGLE_WAIT));
            }
        }
        result
    }

    async fn wait_for_quota(&self) {
        let until = *self.not_before.lock().await;
        if let Some(t) = until {
            let now = tokio::time::Instant::now();
            if t > now {
                let wait = t - now;
                tracing::info!(
                    connector = %self.source_name,
                    wait_secs = wait.as_secs(),
                    "rate-limit quota used up; waiting for the reset"
                );
                metrics::counter!("socialcrm_connector_rate_limit_waits_total",
                    "connector" => self.source_name.clone())
                .increment(1);
                tokio::time::sleep(wait).await;
            }
        }
    }

    async fn note_quota(&self, headers: &HeaderMap) {
        let remaining = header_str(headers, "x-ratelimit-remaining")
            .or_else(|| header_str(headers, "x-rate-limit-remaining"))
            .and_then(|v| v.trim().parse::<i64>().ok());
        let mut nb = self.not_before.lock().await;
        *nb = match remaining {
            Some(r) if r <= 0 => rate_limit_reset(headers, SystemTime::now())
                .map(|w| tokio::time::Instant::now() + w.min(MAX_SINGLE_WAIT)),
            _ => None,
        };
    }
}

/// Turns a status into success or a classified error.
pub fn classify(
    source_name: &str,
    auth_fix: &str,
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
    url: String,
) -> Result<ApiResponse, ApiError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(ApiResponse {
            status,
            headers,
            body,
            url,
        });
    }
    let wait = provider_wait(&headers, SystemTime::now());
    let source_name = source_name.to_string();
    Err(match code {
        401 | 403 => ApiError::Auth {
            source_name,
            status: code,
            url,
            fix: auth_fix.to_string(),
        },
        429 => ApiError::RateLimited {
            source_name,
            status: code,
            url,
            wait,
        },
        408 | 500..=599 => ApiError::Server {
            source_name,
            status: code,
            url,
            wait,
        },
        _ => ApiError::Client {
            source_name,
            status: code,
            url,
            body: snippet(&body),
        },
    })
}

/// The wait a failed answer asks for: `Retry-After`, else the rate-limit reset.
pub fn provider_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    header_str(headers, "retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| rate_limit_reset(headers, now))
        .map(|w| w.min(MAX_SINGLE_WAIT))
}

/// `Retry-After`: delay in seconds, or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `X-RateLimit-Reset` / `x-rate-limit-reset`: epoch seconds (X, GitHub style), a
/// number of seconds from now when it is small, or an RFC 3339 time (Mastodon).
pub fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = header_str(headers, "x-ratelimit-reset")
        .or_else(|| header_str(headers, "x-rate-limit-reset"))?
        .trim();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    if let Ok(n) = v.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        // an epoch timestamp is > 1e9; smaller values are "seconds from now"
        let secs = if n > 1_000_000_000.0 { n - now_secs } else { n };
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(v).ok()?.with_timezone(&Utc);
    let secs = at.timestamp_millis() as f64 / 1000.0 - now_secs;
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The first 300 characters of an error body (for the error message).
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// URLs in errors and logs lose their query: it may hold tokens or keys.
pub fn strip_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => base.to_string(),
        None => url.to_string(),
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    // reqwest's own text carries the URL with its query; keep it out
    strip_query(&s)
}

/// The URL of the `rel="next"` (or other `rel`) entry of a `Link` header
/// (RFC 8288), as Mastodon and WordPress send it.
pub fn link_rel(headers: &HeaderMap, rel: &str) -> Option<String> {
    for value in headers.get_all("link") {
        let Ok(v) = value.to_str() else { continue };
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let Some(target) = pieces.next() else {
                continue;
            };
            let target = target.trim();
            if !(target.starts_with('<') && target.ends_with('>')) {
                continue;
            }
            let matches = pieces.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|x| x == rel))
                    .unwrap_or(false)
            });
            if matches {
                return Some(target[1..target.len() - 1].to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        m
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // RFC 9110's example date is 1445412480 + 0 s
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        let earlier = now - Duration::from_secs(30);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", earlier),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rate_limit_reset_epoch_relative_and_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = rate_limit_reset(&h(&[("x-rate-limit-reset", "1700000090")]), now);
        assert_eq!(w, Some(Duration::from_secs(90)));
        let w = rate_limit_reset(&h(&[("X-RateLimit-Reset", "15")]), now);
        assert_eq!(w, Some(Duration::from_secs(15)));
        let w = rate_limit_reset(
            &h(&[("X-RateLimit-Reset", "2023-11-14T22:13:20.000Z")]),
            now,
        );
        assert_eq!(w, Some(Duration::from_secs(0)));
        let w = rate_limit_reset(
            &h(&[("X-RateLimit-Reset", "2023-11-14T22:14:20.000Z")]),
            now,
        );
        assert_eq!(w, Some(Duration::from_secs(60)));
    }

    #[test]
    fn classification() {
        let c = |code: u16, hs: &[(&'static str, &str)]| {
            classify(
                "test",
                "fix it",
                StatusCode::from_u16(code).expect("status"),
                h(hs),
                bytes::Bytes::from_static(b"{\"error\":\"x\"}"),
                "http://h/p".into(),
            )
        };
        assert!(c(200, &[]).is_ok());
        let e = c(401, &[]).expect_err("401");
        assert!(e.is_auth() && !e.is_retryable());
        assert!(e.to_string().contains("fix it"), "{e}");
        let e = c(429, &[("retry-after", "7")]).expect_err("429");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(c(503, &[]).expect_err("503").is_retryable());
        assert!(c(408, &[]).expect_err("408").is_retryable());
        let e = c(404, &[]).expect_err("404");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("\"error\""), "{e}");
    }

    #[test]
    fn link_header() {
        let hs = h(&[(
            "link",
            "<https://m.example/api/v1/notifications?max_id=7>; rel=\"next\", <https://m.example/api/v1/notifications?min_id=9>; rel=\"prev\"",
        )]);
        assert_eq!(
            link_rel(&hs, "next").as_deref(),
            Some("https://m.example/api/v1/notifications?max_id=7")
        );
        assert_eq!(
            link_rel(&hs, "prev").as_deref(),
            Some("https://m.example/api/v1/notifications?min_id=9")
        );
        assert_eq!(link_rel(&hs, "last"), None);
    }

    #[test]
    fn urls_in_errors_lose_their_query() {
        assert_eq!(strip_query("http://h/p?token=secret"), "http://h/p");
    }
}
