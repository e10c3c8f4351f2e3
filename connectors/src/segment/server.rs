//! HTTP server of the web collector. Answers 200 only after Kafka acknowledged
//! every event of the request; a bad request is refused whole with a reason, so a
//! client never has to guess which part was kept.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use socialcrm_schemas::event::MAX_EVENT_BYTES;
use socialcrm_schemas::Normalizer;

use super::auth::{retry_after_secs, Settings};
use super::config::CollectorConfig;
use super::mapping::{map_message, Envelope, TYPES};
use crate::producer::{Encoded, EventProducer};

/// Length of a value's JSON encoding, without building it.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

/// Shared state of the handlers.
pub struct AppState {
    /// Keys and limits in force (replaced on reload).
    pub settings: Settings,
    pub producer: EventProducer,
    pub normalizer: Normalizer,
}

/// The routes: `/v1/{identify,track,page,screen,group,alias,batch}`, the one-letter
/// aliases analytics.js uses (`/v1/i`, `/v1/t`, ...), and `/health`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/{kind}", post(handle))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        // other paths and methods get a reason too, not an empty answer
        .fallback(|| async {
            reject(
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /v1/{identify,track,page,screen,group,alias,batch}",
            )
        })
        .method_not_allowed_fallback(|| async {
            reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: send events with POST",
            )
        })
        // SDKs may gzip their batches (Content-Encoding: gzip); limits apply after decompression
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .with_state(state)
}

fn reject(status: StatusCode, reason: impl Into<String>) -> Response {
    refused(refuse(status, reason))
}

fn refused(r: Refusal) -> Response {
    metrics::counter!("socialcrm_collector_rejected_total", "status" => r.status.as_u16().to_string())
        .increment(1);
    (r.status, Json(r.body)).into_response()
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map(|(u, _)| u)
            .unwrap_or(&text)
            .to_string(),
    )
}

/// The endpoint a `/v1/{kind}` path names (`/v1/t` is `track`, `/v1/import` is
/// `batch`), or `None` for an unknown one.
pub fn endpoint(kind: &str) -> Option<&'static str> {
    let k = match kind {
        "i" => "identify",
        "t" => "track",
        "p" => "page",
        "s" => "screen",
        "g" => "group",
        "a" => "alias",
        "b" | "import" | "batch" => "batch",
        k => k,
    };
    TYPES.iter().copied().chain(["batch"]).find(|t| *t == k)
}

/// A request refused: its status and the JSON answer with the reason.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: Value,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: json!({"success": false, "error": reason.into()}),
    }
}

/// Reads a request body: within `max_batch_bytes`, UTF-8, a JSON object.
pub fn read_body(config: &CollectorConfig, body: &[u8]) -> Result<Value, Refusal> {
    if body.len() > config.max_batch_bytes {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "request body is {} bytes; the limit is {} bytes",
                body.len(),
                config.max_batch_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("body is not valid UTF-8: {e}"),
        )
    })?;
    match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object",
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("body is not valid JSON: {e}"),
        )),
    }
}

/// Maps the messages of an authorised request (`kind` from [`endpoint`], `body`
/// from [`read_body`], `body_len` its size in bytes) to encoded canonical events
/// of `config.source`. Every event passes the pipeline's own checks; one invalid
/// message refuses the whole request, with a reason per message. Pure: no I/O.
pub fn map_request(
    config: &CollectorConfig,
    normalizer: &Normalizer,
    kind: &str,
    body: &Value,
    body_len: usize,
    received_at: DateTime<Utc>,
) -> Result<Vec<Encoded>, Refusal> {
    map_request_for(
        config,
        &config.source,
        normalizer,
        kind,
        body,
        body_len,
        received_at,
    )
}

/// [`map_request`] for the `source` of the request's write key.
pub fn map_request_for(
    config: &CollectorConfig,
    source: &str,
    normalizer: &Normalizer,
    kind: &str,
    body: &Value,
    body_len: usize,
    received_at: DateTime<Utc>,
) -> Result<Vec<Encoded>, Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object",
        ));
    };
    let sent_at = match obj.get("sentAt").and_then(Value::as_str) {
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`sentAt` is not RFC 3339 ({e})"),
                ))
            }
        },
        None => None,
    };
    let (messages, implied, batch_context): (
        Vec<&Value>,
        Option<&str>,
        Option<&Map<String, Value>>,
    ) = if kind == "batch" {
        match obj.get("batch") {
            Some(Value::Array(a)) if a.len() > config.max_batch_messages => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`batch` has {} messages; the limit is {}",
                        a.len(),
                        config.max_batch_messages
                    ),
                ))
            }
            Some(Value::Array(a)) if !a.is_empty() => (
                a.iter().collect(),
                None,
                obj.get("context").and_then(Value::as_object),
            ),
            Some(Value::Array(_)) => {
                return Err(refuse(StatusCode::BAD_REQUEST, "`batch` is empty"))
            }
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "`batch` must be an array of messages",
                ))
            }
        }
    } else {
        (vec![body], Some(kind), None)
    };

    let env = Envelope {
        source,
        received_at,
        sent_at,
        context: batch_context,
        normalizer,
        ip: config.ip,
    };
    let mut events: Vec<Encoded> = Vec::with_capacity(messages.len());
    let mut errors: Vec<Value> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let size = if messages.len() == 1 {
            body_len
        } else {
            json_len(msg)
        };
        if size > config.max_event_bytes {
            errors.push(json!({"index": i, "error": format!("message is {size} bytes; the limit is {} bytes", config.max_event_bytes)}));
            continue;
        }
        match map_message(msg, implied, &env) {
            Ok(ev) => {
                // the pipeline's own checks, so nothing accepted here lands in the DLQ
                let encoded = match Encoded::new(&ev) {
                    Ok(e) => e,
                    Err(e) => {
                        errors.push(
                            json!({"index": i, "error": format!("cannot encode the event: {e}")}),
                        );
                        continue;
                    }
                };
                let size = encoded.payload.len();
                let mut probe = ev;
                match probe.validate_and_normalize(normalizer, received_at) {
                    Ok(_) if size > MAX_EVENT_BYTES => errors.push(json!({"index": i,
                        "error": format!("the event is {size} bytes once merged with the batch context; the limit is {MAX_EVENT_BYTES} bytes")})),
                    Ok(_) => events.push(encoded),
                    Err(e) => errors.push(json!({"index": i, "error": e.to_string()})),
                }
            }
            Err(e) => errors.push(json!({"index": i, "error": e.0})),
        }
    }
    if !errors.is_empty() {
        let summary = if messages.len() == 1 {
            errors[0]["error"]
                .as_str()
                .unwrap_or("invalid message")
                .to_string()
        } else {
            format!(
                "{} of {} messages are invalid; nothing was accepted",
                errors.len(),
                messages.len()
            )
        };
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            body: json!({"success": false, "error": summary, "errors": errors}),
        });
    }
    Ok(events)
}

async fn handle(
    State(st): State<Arc<AppState>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(kind) = endpoint(&kind) else {
        return reject(
            StatusCode::NOT_FOUND,
            format!("unknown endpoint /v1/{kind}"),
        );
    };
    let live = st.settings.current();
    let config = &live.config;
    // read well past the batch limit, so a body slightly over it gets the exact size in
    // a 400; beyond that the read stops (413) without buffering more
    let hard_cap = config.max_batch_bytes.saturating_mul(4).max(1024 * 1024);
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, hard_cap))
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than {hard_cap} bytes; the limit is {} bytes",
                    config.max_batch_bytes
                ),
            )
        }
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    };

    // write key: Basic auth user, or `writeKey` in the body (older SDKs); with Basic
    // auth, keys and rate limits are checked before the body is parsed
    let mut parsed = None;
    let presented = match basic_user(&headers) {
        Some(k) => Some(k),
        None => {
            let v = match read_body(config, &body) {
                Ok(v) => v,
                Err(r) => return refused(r),
            };
            let k = v
                .get("writeKey")
                .and_then(Value::as_str)
                .map(str::to_string);
            parsed = Some(v);
            k
        }
    };
    let Some(grant) = presented.as_deref().and_then(|k| live.keys.find(k)) else {
        return reject(
            StatusCode::UNAUTHORIZED,
            "missing or invalid write key (send it as the HTTP Basic user name)",
        );
    };
    if let Err(wait) = st.settings.admit(&live, grant) {
        metrics::counter!("socialcrm_collector_rate_limited_total", "key" => grant.name.clone())
            .increment(1);
        let secs = retry_after_secs(wait);
        let mut r = reject(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limit of this write key exceeded; retry after {secs} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        return r;
    }
    let parsed = match parsed {
        Some(v) => v,
        None => match read_body(config, &body) {
            Ok(v) => v,
            Err(r) => return refused(r),
        },
    };

    let events = match map_request_for(
        config,
        &grant.source,
        &st.normalizer,
        kind,
        &parsed,
        body.len(),
        Utc::now(),
    ) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    match st.producer.send_encoded(&events).await {
        Ok(()) => {
            metrics::counter!("socialcrm_collector_events_total").increment(events.len() as u64);
            Json(json!({"success": true})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "kafka did not acknowledge; answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "5")],
                Json(json!({"success": false, "error": "events not stored (Kafka unavailable); retry later"})),
            )
                .into_response()
        }
    }
}

/// Binds and serves until `shutdown` resolves; `extra` routes (e.g. `/metrics`)
/// are served on the same port.
pub async fn serve(
    config: CollectorConfig,
    kafka: &socialcrm_schemas::kafka::KafkaConfig,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    reload: impl Fn() -> Result<CollectorConfig, String> + Send + Sync + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    config.validate()?;
    let normalizer = Normalizer::new(Some(&config.default_phone_region))
        .map_err(|e| format!("collector.default_phone_region: {e}"))?;
    let producer = EventProducer::new(kafka, Duration::from_millis(config.ack_timeout_ms))?;
    // a wrong SASL password or CA stops the collector here, naming the settings
    kafka
        .check_access_async(socialcrm_schemas::kafka::ACCESS_CHECK_TIMEOUT)
        .await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, source = %config.source, keys = config.resolved_keys().len(), topic = %kafka.topics.events, "collector listening");
    let state = Arc::new(AppState {
        settings: Settings::new(config),
        producer: producer.clone(),
        normalizer,
    });
    reload_on_sighup(state.clone(), reload)?;
    axum::serve(listener, router(state).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await?;
    producer.flush(Duration::from_secs(10));
    Ok(())
}

/// On SIGHUP: `reload()` (the config file's `[collector]` section) replaces keys and
/// limits; a bad file is refused with an error naming the field, the old ones stay.
#[cfg(unix)]
fn reload_on_sighup(
    state: Arc<AppState>,
    reload: impl Fn() -> Result<CollectorConfig, String> + Send + Sync + 'static,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload().and_then(|c| state.settings.reload(c)) {
                Ok(restart_needed) => {
                    let live = state.settings.current();
                    metrics::counter!("socialcrm_collector_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(keys = live.keys.len(), "collector keys and limits reloaded");
                    for field in restart_needed {
                        tracing::warn!(field = %field, "changed in the config file; takes effect after a restart");
                    }
                }
                Err(e) => {
                    metrics::counter!("socialcrm_collector_reloads_total", "result" => "refused")
                        .increment(1);
                    tracing::error!(error = %e, "config reload refused; the previous keys and limits stay in force");
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(
    _state: Arc<AppState>,
    _reload: impl Fn() -> Result<CollectorConfig, String> + Send + Sync + 'static,
) -> Result<(), String> {
    Ok(())
}
