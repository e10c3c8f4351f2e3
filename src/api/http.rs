//! Routes, authentication and error mapping of `socialcrm serve` (docs/api.md).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use socialcrm_schemas::secret::KeyRing;

use super::filter::{order_by, SegmentFilter};
use super::model::Profiles;
use super::queries::{Queries, QueryError, CSV_HEADER};
use super::{ApiConfig, Scope};

const OPENAPI: &str = include_str!("openapi.json");
const UI_HTML: &str = include_str!("ui/index.html");
const UI_JS: &str = include_str!("ui/app.js");
const UI_CSS: &str = include_str!("ui/app.css");

/// Rows per CSV chunk sent to the client.
const CSV_CHUNK_ROWS: usize = 2000;

struct AppState {
    q: Queries,
    /// Profile lookups: the read model, or ClickHouse.
    profiles: Profiles,
    /// The whole config: erasures reach Kafka and ClickHouse (docs/privacy.md).
    config: Arc<crate::config::Config>,
    /// Each key's name and scopes, by digest (compared in constant time, whatever the lengths).
    keys: KeyRing<(String, Vec<Scope>)>,
    max_page_rows: u64,
    max_export_rows: u64,
}

type St = State<Arc<AppState>>;

/// An error answer: `{"error": {"code", "message"}}`.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, "bad_request", m),
            QueryError::Storage(m) => {
                tracing::warn!(error = %m, "query failed");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "ClickHouse did not answer; retry later".into(),
                )
            }
        }
    }
}

fn not_found(m: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", m)
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", m.into())
}

type ApiResult<T> = Result<T, ApiError>;

/// The whole app: public `/health`, `/openapi.json` and web page; `/v1/*` behind keys.
pub fn router(profiles: Profiles, config: &crate::config::Config) -> Router {
    let cfg: &ApiConfig = &config.api;
    let state = Arc::new(AppState {
        q: profiles.q.clone(),
        profiles,
        config: Arc::new(config.clone()),
        keys: KeyRing::new(
            cfg.keys
                .iter()
                .map(|k| (k.key.clone(), (k.name.clone(), k.scopes.clone()))),
        ),
        max_page_rows: cfg.max_page_rows,
        max_export_rows: cfg.max_export_rows,
    });
    let read = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/profiles", get(search))
        .route("/v1/profiles/lookup", get(lookup))
        .route("/v1/profiles/{customer_id}", get(by_customer))
        .route("/v1/profiles/{customer_id}/ledger", get(ledger))
        .route("/v1/segments/count", get(segment_count))
        .route("/v1/segments/preview", get(segment_preview))
        .route("/v1/top/influencers", get(top_influencers))
        .route("/v1/top/advocates", get(top_advocates))
        .route("/v1/reports/campaigns", get(report_campaigns))
        .route("/v1/reports/products", get(report_products))
        .route("/v1/reports/distributions", get(report_distributions))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Scope::Read),
            require,
        ));
    let export = Router::new()
        .route("/v1/segments/export.csv", get(segment_export))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Scope::Export),
            require,
        ));
    let admin = Router::new()
        .route("/v1/privacy/erase", post(privacy_erase))
        .route("/v1/privacy/erasures", get(privacy_erasures))
        .route("/v1/privacy/unsuppress", post(privacy_unsuppress))
        .route("/v1/privacy/lifts", get(privacy_lifts))
        .route("/v1/privacy/export", get(privacy_export))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Scope::Admin),
            require,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", UI_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", UI_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { static_file("text/css; charset=utf-8", UI_CSS) }),
        )
        .merge(read)
        .merge(export)
        .merge(admin)
        .fallback(|| async { not_found("no such endpoint; see /openapi.json".into()) })
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // the page runs only its own script and talks only to this server
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Liveness, and the read model's state: the process answers lookups from
/// ClickHouse until the model is loaded, so this is 200 either way.
async fn health(State(s): St) -> Json<Value> {
    Json(json!({"status": "ok", "read_model": s.profiles.health()}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Request metrics (`socialcrm_api_requests_total`, `socialcrm_api_request_seconds`)
/// by route and status.
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("socialcrm_api_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("socialcrm_api_request_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// The key of a request: `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(k) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The key a request was authorized with (a request extension).
#[derive(Debug, Clone)]
struct KeyInfo {
    name: String,
    scopes: Vec<Scope>,
}

fn authorize(state: &AppState, h: &HeaderMap, need: Scope) -> Result<KeyInfo, ApiError> {
    let Some(key) = presented_key(h) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer <key>)".into(),
        ));
    };
    // every key is compared, so timing says nothing about which one matched
    match state.keys.find(key) {
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key".into(),
        )),
        Some((name, scopes)) if !scopes.contains(&need) => {
            tracing::info!(key = %name, ?need, "request refused: key lacks the scope");
            Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key lacks the `{}` scope", scope_name(need)),
            ))
        }
        Some((name, scopes)) => Ok(KeyInfo {
            name: name.clone(),
            scopes: scopes.clone(),
        }),
    }
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Read => "read",
        Scope::Export => "export",
        Scope::Admin => "admin",
    }
}

/// Lets a request through when its key has the scope `need` (the key's name and
/// scopes then travel with it as a [`KeyInfo`] extension).
async fn require(
    State((s, need)): State<(Arc<AppState>, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    match authorize(&s, req.headers(), need) {
        Ok(k) => {
            req.extensions_mut().insert(k);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Decoded query pairs.
fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|r| form_urlencoded::parse(r.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Takes the named parameters out of `pairs`; anything else is an error.
fn only<'a>(pairs: &'a [(String, String)], allowed: &[&str]) -> ApiResult<Vec<(&'a str, &'a str)>> {
    pairs
        .iter()
        .map(|(k, v)| {
            if allowed.contains(&k.as_str()) {
                Ok((k.as_str(), v.as_str()))
            } else {
                Err(bad(format!(
                    "unknown parameter `{k}`; this endpoint takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )))
            }
        })
        .collect()
}

fn param<'a>(p: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    p.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `limit` (default `default`, at most `max`) and `offset`.
fn page(p: &[(&str, &str)], default: u64, max: u64) -> ApiResult<(u64, u64)> {
    let num = |key: &str, d: u64| -> ApiResult<u64> {
        match param(p, key) {
            None => Ok(d),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{key}` must be a whole number, got `{v}`"))),
        }
    };
    let limit = num("limit", default)?;
    if limit == 0 || limit > max {
        return Err(bad(format!("`limit` must be from 1 to {max}, got {limit}")));
    }
    Ok((limit, num("offset", 0)?))
}

/// The name and scopes of the key used (the web page adapts to them).
async fn whoami(axum::Extension(k): axum::Extension<KeyInfo>) -> Json<Value> {
    Json(json!({"name": k.name, "scopes": k.scopes}))
}

async fn lookup(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let all = pairs(raw);
    let p = only(&all, &["id"])?;
    let id = param(&p, "id")
        .ok_or_else(|| bad("`id` is required: type:value, e.g. email:ann@example.com"))?;
    let detail = s
        .profiles
        .by_identifier(id)
        .await?
        .ok_or_else(|| not_found(format!("no profile has the identifier {id}")))?;
    Ok(Json(detail))
}

/// The live profile of a customer id (merges followed), or 404.
async fn customer(s: &AppState, cid: &str) -> ApiResult<socialcrm_pipeline::rows::ProfileRow> {
    s.q.by_customer(cid)
        .await?
        .ok_or_else(|| not_found(format!("no customer {cid}")))
}

async fn by_customer(State(s): St, Path(cid): Path<String>) -> ApiResult<Json<Value>> {
    let detail = s
        .profiles
        .by_customer(&cid)
        .await?
        .ok_or_else(|| not_found(format!("no customer {cid}")))?;
    Ok(Json(detail))
}

async fn ledger(State(s): St, Path(cid): Path<String>) -> ApiResult<Json<Value>> {
    let prof = customer(&s, &cid).await?;
    let entries: Vec<Value> =
        s.q.ledger(&prof)
            .await?
            .iter()
            .map(|e| {
                let mut v = json!(e);
                v["at"] = json!(super::queries::time(e.at));
                v
            })
            .collect();
    Ok(Json(json!({
        "customer_id": prof.customer_id,
        "merged_from": prof.merged_from,
        "flags": prof.flags,
        "entries": entries,
    })))
}

async fn search(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let all = pairs(raw);
    let p = only(&all, &["q", "limit", "offset"])?;
    let q = param(&p, "q")
        .ok_or_else(|| bad("`q` is required: part of a name, an email prefix or a handle"))?;
    let (limit, offset) = page(&p, 20, s.max_page_rows)?;
    let (rows, more) = s.q.search(q, limit, offset).await?;
    Ok(Json(json!({
        "items": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "limit": limit, "offset": offset, "has_more": more,
    })))
}

fn segment_params(raw: Option<String>) -> ApiResult<(SegmentFilter, Vec<(String, String)>)> {
    let all = pairs(raw);
    SegmentFilter::from_pairs(all.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(bad)
}

async fn segment_count(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let (f, rest) = segment_params(raw)?;
    if let Some((k, _)) = rest.first() {
        return Err(bad(format!("`{k}` does not apply to a count")));
    }
    let n = s.q.segment_count(&f).await?;
    Ok(Json(json!({"count": n, "filters": f})))
}

async fn segment_preview(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let (f, rest) = segment_params(raw)?;
    let p: Vec<(&str, &str)> = rest.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (limit, offset) = page(&p, 50, s.max_page_rows)?;
    let order = order_by(param(&p, "sort")).map_err(bad)?;
    let (count, rows) = tokio::join!(
        s.q.segment_count(&f),
        s.q.segment_rows(&f, order, limit, offset)
    );
    Ok(Json(json!({
        "count": count?,
        "items": rows?.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "limit": limit, "offset": offset, "filters": f,
    })))
}

/// Streams the segment as CSV in chunks; a ClickHouse failure before the first row
/// is a 503, one after it cuts the transfer (the client sees an incomplete body).
async fn segment_export(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let (f, rest) = segment_params(raw)?;
    let p: Vec<(&str, &str)> = rest.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if param(&p, "offset").is_some() {
        return Err(bad("exports take `limit` and `sort`, not `offset`"));
    }
    let (limit, _) = page(&p, s.max_export_rows, s.max_export_rows)?;
    let order = order_by(param(&p, "sort")).map_err(bad)?;
    let mut cursor = s.q.segment_cursor(&f, order, limit)?;
    let first = cursor.next().await.map_err(QueryError::from)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let writer = || csv::WriterBuilder::new().from_writer(Vec::with_capacity(256 * 1024));
        let mut w = writer();
        let _ = w.write_record(CSV_HEADER);
        let (mut n, mut rows) = (0usize, 0u64);
        let mut next = first;
        while let Some(r) = next {
            if w.write_record(r.csv_record()).is_err() {
                return;
            }
            n += 1;
            rows += 1;
            if n >= CSV_CHUNK_ROWS {
                let chunk = std::mem::replace(&mut w, writer())
                    .into_inner()
                    .unwrap_or_default();
                if tx.send(Ok(chunk)).await.is_err() {
                    return; // the client went away
                }
                n = 0;
            }
            next = match cursor.next().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, rows, "segment export cut: ClickHouse failed");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
        }
        let _ = tx.send(Ok(w.into_inner().unwrap_or_default())).await;
        tracing::info!(rows, "segment export done");
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"segment.csv\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn leaderboard(s: &AppState, raw: Option<String>) -> ApiResult<(Option<String>, u64)> {
    let all = pairs(raw);
    let p = only(&all, &["network", "limit"])?;
    let (limit, _) = page(&p, 100, s.max_page_rows)?;
    Ok((param(&p, "network").map(str::to_string), limit))
}

async fn top_influencers(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let (network, limit) = leaderboard(&s, raw).await?;
    let model = s.profiles.model.clone();
    let known = move |cid: &str| model.as_ref().and_then(|m| m.name(cid));
    Ok(Json(
        s.q.top_influencers(network.as_deref(), limit, Some(&known))
            .await?,
    ))
}

async fn top_advocates(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let (network, limit) = leaderboard(&s, raw).await?;
    Ok(Json(s.q.top_advocates(network.as_deref(), limit).await?))
}

async fn report_campaigns(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    only(&pairs(raw), &[])?;
    Ok(Json(s.q.campaign_report().await?))
}

async fn report_products(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let all = pairs(raw);
    let p = only(&all, &["limit"])?;
    let (limit, _) = page(&p, 20, s.max_page_rows)?;
    Ok(Json(s.q.report_products(limit).await?))
}

async fn report_distributions(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    only(&pairs(raw), &[])?;
    Ok(Json(s.q.report_distributions().await?))
}

impl From<crate::privacy::PrivacyError> for ApiError {
    fn from(e: crate::privacy::PrivacyError) -> Self {
        use crate::privacy::PrivacyError as P;
        match e {
            P::NotFound(m) => not_found(m),
            P::BadRequest(m) => bad(m),
            P::Unavailable(m) => QueryError::Storage(m).into(),
        }
    }
}

/// Longest `wait_secs` of an erase request; the erasure itself goes on after the answer.
const MAX_ERASE_WAIT_SECS: u64 = 600;

/// A privacy request's `wait_secs` when the body gives none.
fn default_privacy_wait() -> u64 {
    30
}

/// A privacy request's `wait_secs`, at most [`MAX_ERASE_WAIT_SECS`].
fn check_wait(wait_secs: u64) -> ApiResult<()> {
    if wait_secs > MAX_ERASE_WAIT_SECS {
        return Err(bad(format!(
            "`wait_secs` must be at most {MAX_ERASE_WAIT_SECS}, got {wait_secs}"
        )));
    }
    Ok(())
}

/// `POST /v1/privacy/erase` `{"subject": "type:value" | "c_…", "wait_secs": 30}`:
/// 200 with the final status when the erasure finished within `wait_secs`, else
/// 202 with the request id (it goes on in this server; `GET /v1/privacy/erasures`).
async fn privacy_erase(
    State(s): St,
    axum::Extension(k): axum::Extension<KeyInfo>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EraseBody {
        subject: String,
        #[serde(default = "default_privacy_wait")]
        wait_secs: u64,
    }
    let b: EraseBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be {{\"subject\": \"type:value or c_…\", \"wait_secs\": 30}}: {e}"
        ))
    })?;
    check_wait(b.wait_secs)?;
    let cfg = s.config.clone();
    let r = crate::privacy::request(&cfg, &b.subject, &format!("api:{}", k.name)).await?;
    let id = r.request_id.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task_id = id.clone();
    tokio::spawn(async move {
        let hour = std::time::Duration::from_secs(3600);
        let ch = cfg.clickhouse.client();
        let res = match crate::privacy::wait_applied(&ch, &task_id, hour).await {
            Ok(Some(_)) => crate::privacy::finish(&cfg, &task_id, hour).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match &res {
            Ok(Some(row)) => {
                tracing::info!(request = %task_id, status = %row.status, "erasure finished")
            }
            Ok(None) => {
                tracing::warn!(request = %task_id, "erasure not applied by the pipeline within an hour; finish it with `socialcrm privacy erase --resume`")
            }
            Err(e) => {
                tracing::error!(request = %task_id, error = %e, "erasure failed; finish it with `socialcrm privacy erase --resume`")
            }
        }
        let _ = tx.send(res);
    });
    let wait = std::time::Duration::from_secs(b.wait_secs);
    if let Ok(Ok(Ok(Some(row)))) = tokio::time::timeout(wait, rx).await {
        return Ok(Json(json!(row)).into_response());
    }
    let now = crate::privacy::status(&s.config.clickhouse.client(), &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "request_id": id,
            "status": now.map(|r| r.status).unwrap_or_else(|| "requested".into()),
            "customer_ids": r.subject.customer_ids,
            "identifiers": r.subject.keys.len(),
            "follow": "/v1/privacy/erasures",
        })),
    )
        .into_response())
}

async fn privacy_erasures(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    only(&pairs(raw), &[])?;
    let rows = crate::privacy::list(&s.config).await?;
    Ok(Json(json!({"items": rows})))
}

/// `POST /v1/privacy/unsuppress` `{"subject": "type:value", "reason": "...",
/// "wait_secs": 30}`: 200 with the lift once the identity writer applied it within
/// `wait_secs`, else 202 with the recorded (queued) lift.
async fn privacy_unsuppress(
    State(s): St,
    axum::Extension(k): axum::Extension<KeyInfo>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UnsuppressBody {
        subject: String,
        reason: String,
        #[serde(default = "default_privacy_wait")]
        wait_secs: u64,
    }
    let b: UnsuppressBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be {{\"subject\": \"type:value\", \"reason\": \"...\", \"wait_secs\": 30}}: {e}"
        ))
    })?;
    check_wait(b.wait_secs)?;
    let row =
        crate::privacy::unsuppress(&s.config, &b.subject, &format!("api:{}", k.name), &b.reason)
            .await?;
    let ch = s.config.clickhouse.client();
    let wait = std::time::Duration::from_secs(b.wait_secs);
    if let Some(applied) = crate::privacy::wait_lift_applied(&ch, &row.request_id, wait).await? {
        let row = socialcrm_pipeline::privacy::LiftRow {
            reason: row.reason,
            requested_by: row.requested_by,
            ..applied
        };
        return Ok(Json(json!(row)).into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(json!(row))).into_response())
}

async fn privacy_lifts(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    only(&pairs(raw), &[])?;
    let rows = crate::privacy::lifts(&s.config).await?;
    Ok(Json(json!({"items": rows})))
}

async fn privacy_export(State(s): St, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let all = pairs(raw);
    let p = only(&all, &["id"])?;
    let id =
        param(&p, "id").ok_or_else(|| bad("`id` is required: type:value, or a customer id"))?;
    Ok(Json(crate::privacy::export(&s.config, id).await?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_bearer_or_header_only() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  k-123 "),
        );
        assert_eq!(presented_key(&h), Some("k-123"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k-9"));
        assert_eq!(presented_key(&h), Some("k-9"));
    }

    #[test]
    fn openapi_document_is_json_with_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let src = include_str!("http.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap();
        // every `.route("/v1/...` of this file is documented, and nothing else is
        let routed: Vec<&str> = src
            .split(".route(\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .filter(|p| p.starts_with("/v1/"))
            .collect();
        let mut a = routed.clone();
        a.sort();
        let mut b: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| p.starts_with("/v1/"))
            .collect();
        b.sort();
        assert_eq!(a, b, "routes vs /openapi.json paths");
        assert_eq!(routed.len(), 18);
    }
}
