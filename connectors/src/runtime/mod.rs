//! The connector runtime: one loop that every pull connector runs in.
//!
//! A connector implements [`Source`]: given a stream and its cursor, fetch the next
//! page and map it to canonical events. The runtime owns everything else:
//!
//! * the persisted cursor per stream ([`state::CursorStore`]); a page's cursor is
//!   stored only after Kafka acknowledged every event of the page (DESIGN §4), so a
//!   crash replays a page (same deterministic `event_id`s), never skips one;
//! * `--since` backfills (the stored cursor is replaced by the source's cursor for
//!   that date), with progress on a terminal bar or as log lines;
//! * validation of every event against the canonical contract, and the DLQ for
//!   objects the provider sent that cannot be mapped: reported with their id and
//!   skipped, never fatal;
//! * Kafka back-pressure: a page whose events Kafka did not acknowledge is sent
//!   again, with backoff, until it is;
//! * API failures: the source's [`http::ApiClient`] retries through the one retry
//!   module; refused credentials stop the connector with a message naming the
//!   source and the fix; other failures end the poll and are tried again after
//!   `poll_interval_secs`;
//! * metrics: events produced, rejected objects, API calls, retries, cursor lag.

pub mod config;
pub mod http;
pub mod progress;
pub mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use socialcrm_schemas::identifier::Normalizer;
use socialcrm_schemas::kafka::KafkaConfig;
use socialcrm_schemas::messages::{DlqMessage, DlqOrigin};
use socialcrm_schemas::retry::{retry, RetryPolicy};
use socialcrm_schemas::CanonicalEvent;

use crate::producer::{EventProducer, ProduceError};
use config::RuntimeSettings;
use http::ApiError;
use progress::Progress;
use state::{CursorStore, StateError};

/// One page of a stream, mapped.
#[derive(Debug, Default)]
pub struct Page {
    /// Canonical events mapped from the page's objects.
    pub events: Vec<CanonicalEvent>,
    /// Objects the provider sent that could not be mapped.
    pub rejected: Vec<Rejected>,
    /// The cursor to store once every event of this page is in Kafka.
    pub cursor: Value,
    /// True when the stream has nothing more right now; the runtime then waits
    /// `poll_interval_secs` before asking again.
    pub caught_up: bool,
    /// How many objects the whole sync will cover, when the API says (progress).
    pub total: Option<u64>,
    /// Time of the newest object synced so far in this stream (cursor lag).
    pub position: Option<DateTime<Utc>>,
    /// Objects this page covered (events may be more or fewer).
    pub objects: u64,
}

/// A provider object the connector could not map.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The provider's id of the object (or `?` when it has none).
    pub object_id: String,
    pub reason: String,
    /// The object as the provider sent it.
    pub raw: Vec<u8>,
}

impl Rejected {
    /// A rejected JSON object.
    pub fn json(object_id: impl Into<String>, reason: impl Into<String>, raw: &Value) -> Self {
        Rejected {
            object_id: object_id.into(),
            reason: reason.into(),
            raw: serde_json::to_vec(raw).unwrap_or_default(),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The stored cursor cannot be used (e.g. an expired pagination token); the
    /// runtime restarts the stream from `restart_from`.
    #[error("{message}")]
    CursorInvalid {
        message: String,
        restart_from: Value,
    },
}

/// A source connector: knows its API, pagination, cursor and mapping.
pub trait Source: Send {
    /// Connector type (`mastodon`, `shopify`, ...).
    fn kind(&self) -> &'static str;
    /// Streams with their own cursor (`notifications`, `customers`, `orders`, ...).
    fn streams(&self) -> Vec<String>;
    /// The cursor of a stream that has none stored yet, or of a `--since` backfill.
    fn initial_cursor(&self, stream: &str, since: Option<DateTime<Utc>>) -> Value;
    /// Fetches and maps the page after `cursor`.
    fn fetch(
        &mut self,
        stream: &str,
        cursor: &Value,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send;
}

/// What `connector run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Instance name (`shop_eu`).
    pub instance: String,
    pub settings: RuntimeSettings,
    /// Backfill from this time (replaces the stored cursors).
    pub since: Option<DateTime<Utc>>,
    /// Stop once every stream caught up (cron-style runs, tests, benchmarks).
    pub once: bool,
    pub kafka: KafkaConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("kafka producer: {0}")]
    Producer(#[from] ProduceError),
    /// The connector could not be set up (HTTP client, config).
    #[error("cannot start the connector: {0}")]
    Setup(ApiError),
    /// Credentials refused: the connector stops (a retry cannot fix it).
    #[error("{0}")]
    Auth(ApiError),
}

/// Totals of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub pages: u64,
    pub events: u64,
    pub rejected: u64,
    pub failed_polls: u64,
}

/// Runs `source` until shutdown (or, with `once`, until every stream caught up).
pub async fn run_source<S: Source>(
    mut source: S,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, RunError> {
    let kind = source.kind();
    let name = opts.instance.clone();
    let mut store = CursorStore::open(&opts.settings.state_path(), &name, kind)?;
    let events = EventProducer::new(&opts.kafka, Duration::from_secs(30))?;
    let dlq =
        EventProducer::for_topic(&opts.kafka, &opts.kafka.topics.dlq, Duration::from_secs(30))?;
    let streams = source.streams();
    tracing::info!(connector = %name, kind, streams = ?streams, state = %store.path().display(),
        since = ?opts.since, "connector starting");
    if let Some(since) = opts.since {
        for s in &streams {
            store.set(s, source.initial_cursor(s, Some(since)))?;
        }
    }
    let normalizer = Normalizer::default();
    let send_policy = RetryPolicy::forever(Duration::from_millis(500), Duration::from_secs(30));
    let mut stats = RunStats::default();
    let mut progress = Progress::new(&name, opts.since);
    tokio::pin!(shutdown);
    let mut caught_up = vec![false; streams.len()];

    'outer: loop {
        for (i, stream) in streams.iter().enumerate() {
            let cursor = match store.get(stream) {
                Some(s) => s.cursor.clone(),
                None => source.initial_cursor(stream, None),
            };
            let page = tokio::select! {
                _ = &mut shutdown => break 'outer,
                r = source.fetch(stream, &cursor) => r,
            };
            let page = match page {
                Ok(p) => p,
                Err(SourceError::Api(e)) if e.is_auth() => return Err(RunError::Auth(e)),
                Err(SourceError::CursorInvalid {
                    message,
                    restart_from,
                }) => {
                    tracing::warn!(connector = %name, stream, reason = %message,
                        "stored cursor unusable; restarting the stream (replays are deduplicated by event_id)");
                    store.set(stream, restart_from)?;
                    continue;
                }
                Err(SourceError::Api(e)) => {
                    stats.failed_polls += 1;
                    metrics::counter!("socialcrm_connector_failed_polls_total",
                        "connector" => name.clone(), "stream" => stream.clone())
                    .increment(1);
                    tracing::error!(connector = %name, stream, error = %e,
                        "fetch failed after retries; trying again after the poll interval");
                    caught_up[i] = true;
                    continue;
                }
            };
            let (good, rejected) = check_events(page.events, &normalizer, &page.rejected);
            let sent = {
                let send = retry(&send_policy, "connector produce", || async {
                    events.send_all(&good).await?;
                    dlq_send(&dlq, &name, &rejected).await
                });
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    r = send => r,
                }
            };
            sent?;
            // every event and DLQ entry of the page is acknowledged: only now the cursor moves
            store.set(stream, page.cursor)?;
            stats.pages += 1;
            stats.events += good.len() as u64;
            stats.rejected += rejected.len() as u64;
            let labels = [("connector", name.clone()), ("stream", stream.clone())];
            let labels = &labels[..];
            metrics::counter!("socialcrm_connector_events_produced_total", labels)
                .increment(good.len() as u64);
            metrics::counter!("socialcrm_connector_rejected_objects_total", labels)
                .increment(rejected.len() as u64);
            metrics::counter!("socialcrm_connector_pages_total", labels).increment(1);
            let lag = if page.caught_up {
                0.0
            } else {
                page.position
                    .map(|p| (Utc::now() - p).num_milliseconds().max(0) as f64 / 1000.0)
                    .unwrap_or(0.0)
            };
            metrics::gauge!("socialcrm_connector_cursor_lag_seconds", labels).set(lag);
            progress.page(
                stream,
                page.objects,
                good.len() as u64,
                page.total,
                page.position,
            );
            caught_up[i] = page.caught_up;
        }
        if caught_up.iter().all(|c| *c) {
            progress.caught_up();
            if opts.once {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_secs(opts.settings.poll_interval_secs)) => {}
            }
            caught_up.iter_mut().for_each(|c| *c = false);
        }
    }
    progress.finish();
    events.flush(Duration::from_secs(10));
    tracing::info!(connector = %name, pages = stats.pages, events = stats.events,
        rejected = stats.rejected, failed_polls = stats.failed_polls, "connector stopped");
    Ok(stats)
}

/// Validates every event against the canonical contract; events that fail become
/// rejected objects (a connector bug or an odd provider value must not stop it).
fn check_events(
    events: Vec<CanonicalEvent>,
    normalizer: &Normalizer,
    already: &[Rejected],
) -> (Vec<CanonicalEvent>, Vec<Rejected>) {
    let mut rejected = already.to_vec();
    let mut good = Vec::with_capacity(events.len());
    let now = Utc::now();
    for mut ev in events {
        match ev.validate_and_normalize(normalizer, now) {
            Ok(dropped) => {
                for d in dropped {
                    tracing::debug!(event_id = %ev.event_id, identifier = ?d, "identifier dropped");
                }
                good.push(ev)
            }
            Err(e) => rejected.push(Rejected {
                object_id: ev.event_id.clone(),
                reason: format!("mapped event is invalid: {e}"),
                raw: serde_json::to_vec(&ev).unwrap_or_default(),
            }),
        }
    }
    (good, rejected)
}

async fn dlq_send(
    dlq: &EventProducer,
    instance: &str,
    rejected: &[Rejected],
) -> Result<(), ProduceError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut out = Vec::with_capacity(rejected.len());
    for r in rejected {
        tracing::warn!(connector = %instance, object_id = %r.object_id, reason = %r.reason,
            "provider object skipped (sent to the DLQ)");
        let msg = DlqMessage::new(
            "bad_object",
            r.reason.clone(),
            "connector",
            DlqOrigin {
                connector: Some(instance.to_string()),
                object_id: Some(r.object_id.clone()),
                ..DlqOrigin::default()
            },
            &r.raw,
            now,
        );
        out.push(crate::producer::Encoded {
            event_id: r.object_id.clone(),
            key: format!("{instance}:{}", r.object_id),
            payload: serde_json::to_vec(&msg)?,
        });
    }
    dlq.send_encoded(&out).await
}
