//! HTTP server of the web collector. Answers 200 only after Kafka acknowledged
//! every event of the request; a bad request is refused whole with a reason, so a
//! client never has to guess which part was kept.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use socialcrm_schemas::event::MAX_EVENT_BYTES;
use socialcrm_schemas::Normalizer;

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
    pub config: CollectorConfig,
    pub producer: EventProducer,
    pub normalizer: Normalizer,
}

/// The routes: `/v1/{identify,track,page,screen,group,alias,batch}`, the one-letter
/// aliases analytics.js uses (`/v1/i`, `/v1/t`, ...), and `/health`.
pub fn router(state: Arc<AppState>) -> Router {
    // hard cap well above the batch limit so oversized bodies still get a 400 with a reason
    let hard_cap = state
        .config
        .max_batch_bytes
        .saturating_mul(4)
        .max(1024 * 1024);
    Router::new()
        .route("/v1/{kind}", post(handle))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .layer(DefaultBodyLimit::max(hard_cap))
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

/// Constant-time comparison so response timing does not leak key prefixes.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
/// from [`read_body`], `body_len` its size in bytes) to encoded canonical events.
/// Every event passes the pipeline's own checks; one invalid message refuses the
/// whole request, with a reason per message. Pure: no I/O.
pub fn map_request(
    config: &CollectorConfig,
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
        source: &config.source,
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
    body: Bytes,
) -> Response {
    let Some(kind) = endpoint(&kind) else {
        return reject(
            StatusCode::NOT_FOUND,
            format!("unknown endpoint /v1/{kind}"),
        );
    };
    let parsed = match read_body(&st.config, &body) {
        Ok(v) => v,
        Err(r) => return refused(r),
    };

    // write key: Basic auth user, or `writeKey` in the body (older SDKs)
    let key = basic_user(&headers).or_else(|| {
        parsed
            .get("writeKey")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let authorized = key.as_deref().is_some_and(|k| {
        st.config
            .write_keys
            .iter()
            .fold(false, |ok, w| ok | same(w.as_bytes(), k.as_bytes()))
    });
    if !authorized {
        return reject(
            StatusCode::UNAUTHORIZED,
            "missing or invalid write key (send it as the HTTP Basic user name)",
        );
    }

    let events = match map_request(
        &st.config,
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
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    config.validate()?;
    let normalizer = Normalizer::new(Some(&config.default_phone_region))
        .map_err(|e| format!("collector.default_phone_region: {e}"))?;
    let producer = EventProducer::new(kafka, Duration::from_millis(config.ack_timeout_ms))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, source = %config.source, topic = %kafka.topics.events, "collector listening");
    let state = Arc::new(AppState {
        config,
        producer: producer.clone(),
        normalizer,
    });
    axum::serve(listener, router(state).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await?;
    producer.flush(Duration::from_secs(10));
    Ok(())
}
