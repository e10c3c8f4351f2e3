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
//! * suppression: events that carry an erased person's identifier are skipped
//!   (counted, never produced) when a [`SuppressionList`] is given (docs/privacy.md);
//! * metrics: events produced, rejected objects, API calls, retries, cursor lag.

pub mod config;
pub mod http;
pub mod progress;
pub mod state;
#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use socialcrm_schemas::identifier::Normalizer;
use socialcrm_schemas::kafka::KafkaConfig;
use socialcrm_schemas::messages::{DlqMessage, DlqOrigin};
use socialcrm_schemas::retry::{retry, RetryPolicy};
use socialcrm_schemas::suppression::SuppressionList;
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
    /// Mapping left to do: the runtime runs it on another worker while the
    /// next page is fetched (see [`Source::fetch_unmapped`]).
    pub deferred: Option<Deferred>,
}

impl Page {
    /// Runs the deferred mapping, if any, so that `events` and `rejected` hold
    /// everything the page maps to.
    pub fn map_deferred(&mut self) {
        if let Some(d) = self.deferred.take() {
            let out = d.run();
            self.merge(out);
        }
    }

    fn merge(&mut self, out: DeferredOutput) {
        self.events.extend(out.events);
        self.rejected.extend(out.rejected);
        self.position = self.position.max(out.position);
    }
}

/// What a deferred mapping produces; appended to the page's own.
#[derive(Debug, Default)]
pub struct DeferredOutput {
    pub events: Vec<CanonicalEvent>,
    pub rejected: Vec<Rejected>,
    /// Time of the newest object mapped (cursor lag, progress).
    pub position: Option<DateTime<Utc>>,
}

/// The mapping of a fetched page, to be run later and elsewhere: a pure
/// function of the page's objects, so that fetching the next page (which needs
/// only the cursor) does not wait for it.
pub struct Deferred(Box<dyn FnOnce() -> DeferredOutput + Send>);

impl Deferred {
    pub fn new(f: impl FnOnce() -> DeferredOutput + Send + 'static) -> Self {
        Deferred(Box::new(f))
    }

    pub fn run(self) -> DeferredOutput {
        (self.0)()
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred(..)")
    }
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

    /// Its `crm.dlq` message. An object without a usable id (an empty `id` in the
    /// provider's JSON) is named `?`: the DLQ schema requires a non-empty id.
    pub fn dlq_message(&self, instance: &str, now: DateTime<Utc>) -> DlqMessage {
        let object_id = if self.object_id.is_empty() {
            "?".to_string()
        } else {
            self.object_id.clone()
        };
        DlqMessage::new(
            "bad_object",
            self.reason.clone(),
            "connector",
            DlqOrigin {
                connector: Some(instance.to_string()),
                object_id: Some(object_id),
                ..DlqOrigin::default()
            },
            &self.raw,
            now,
        )
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
    /// Whether the next page may be fetched before Kafka acknowledged the previous
    /// one. False for APIs where fetching confirms (deletes) what came before
    /// (Telegram's `getUpdates` offset).
    fn fetch_ahead(&self) -> bool {
        true
    }
    /// Fetches and maps the page after `cursor`.
    fn fetch(
        &mut self,
        stream: &str,
        cursor: &Value,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send;
    /// [`fetch`](Source::fetch), except that the page's mapping may be left in
    /// [`Page::deferred`]; the runtime calls this and maps on another worker.
    /// The cursor, `caught_up` and `objects` must be final. Sources whose
    /// mapping is on the critical path of their pagination override it, and
    /// implement `fetch` as this plus [`Page::map_deferred`], so that tests of
    /// `fetch` run the same mapping.
    fn fetch_unmapped(
        &mut self,
        stream: &str,
        cursor: &Value,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send {
        self.fetch(stream, cursor)
    }
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
    /// Erased people's identifiers: their events are skipped (the pipeline drops
    /// them too; this keeps them out of Kafka).
    pub suppression: Option<SuppressionList>,
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
    /// Events skipped because they carry a suppressed identifier.
    pub suppressed: u64,
}

/// Pages of one stream that may be fetched before the oldest is acknowledged
/// (an upper bound; [`MAX_EVENTS_IN_FLIGHT`] usually binds first).
const MAX_PAGES_IN_FLIGHT: usize = 64;

/// Events of one stream that may wait for Kafka's acknowledgement before the
/// next page is fetched. The window is sized by events, not pages: providers'
/// pages hold 8 (Shopify orders) to 100 (X, Telegram) objects, and what has to
/// cover Kafka's acknowledgement latency is the number of events in flight.
/// A page is always fetched when nothing is in flight, however large it is.
const MAX_EVENTS_IN_FLIGHT: usize = 4096;

/// Pages of at least this many objects are prepared (mapped, validated,
/// encoded) on the blocking pool when pages are fetched ahead. Smaller pages
/// (Shopify's 8 orders) and one-page-at-a-time sources (Telegram, where
/// nothing runs beside the page) are prepared on the async worker: the hop to
/// another thread would cost more than it frees.
const POOL_MIN_PAGE: usize = 32;

/// A stored cursor is rewritten at most this often while pages keep coming (and
/// always when a stream caught up or the run ends): fewer fsyncs, and a crash
/// replays at most this much more.
const STORE_EVERY: Duration = Duration::from_millis(250);

/// A page whose events are on their way to Kafka.
struct InFlight {
    /// Validates, encodes and produces; answers (events, rejected, suppressed).
    send: tokio::task::JoinHandle<Result<Sent, ProduceError>>,
    /// Events (and rejected objects) the page carries, for the window.
    size: usize,
    cursor: Value,
    objects: u64,
    total: Option<u64>,
    position: Option<DateTime<Utc>>,
    caught_up: bool,
}

/// Where a run's wall time went (logged when it stops): fetching and mapping
/// pages, and waiting for Kafka with no room to fetch further. What is left is
/// cursor stores, retries' waits and polls' sleeps. `prepare` and `produce`
/// are the produce tasks' own times, beside that wall time.
#[derive(Debug, Default)]
struct Timing {
    fetch: Duration,
    ack_wait: Duration,
    /// Summed over pages (pages fetched ahead overlap): mapping deferred to
    /// the produce task, validation and encoding (not a page's wait for a
    /// preparation slot).
    prepare: Duration,
    /// Summed over pages: producing and waiting for Kafka's acknowledgements.
    produce: Duration,
}

/// What a page's produce task did.
struct Sent {
    events: u64,
    rejected: u64,
    suppressed: u64,
    /// Newest object time found by a deferred mapping.
    position: Option<DateTime<Utc>>,
    prepare: Duration,
    produce: Duration,
}

/// Why a stream's sync round ended.
enum RoundEnd {
    /// Caught up, or a fetch failed (tried again after the poll interval).
    Done,
    Shutdown,
}

/// Runs `source` until shutdown (or, with `once`, until every stream caught up).
///
/// Within a stream, pages are fetched ahead while earlier pages are still being
/// mapped (when the source deferred it) and produced, up to
/// [`MAX_EVENTS_IN_FLIGHT`] events and [`MAX_PAGES_IN_FLIGHT`] pages (one page
/// when the source says fetching confirms what came before, see
/// [`Source::fetch_ahead`]). Cursors are stored in page order, and only up to
/// the last page whose events Kafka acknowledged.
pub async fn run_source<S: Source>(
    mut source: S,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, RunError> {
    let kind = source.kind();
    let name = opts.instance.clone();
    let mut store = CursorStore::open(&opts.settings.state_path(), &name, kind)?;
    let timeout = Duration::from_secs(30);
    // a source whose pages are fetched ahead keeps many pages in flight: its
    // producer waits a little to fill batches across them (fewer produce requests,
    // about half the broker's CPU); one that waits for each page's acknowledgement
    // before the next fetch produces at once
    let producer = if source.fetch_ahead() {
        EventProducer::pipelined
    } else {
        EventProducer::low_latency
    };
    let events = producer(&opts.kafka, &opts.kafka.topics.events, timeout)?;
    let dlq = producer(&opts.kafka, &opts.kafka.topics.dlq, timeout)?;
    let streams = source.streams();
    tracing::info!(connector = %name, kind, streams = ?streams, state = %store.path().display(),
        since = ?opts.since, "connector starting");
    if let Some(since) = opts.since {
        for s in &streams {
            store.set(s, source.initial_cursor(s, Some(since)))?;
        }
    }
    let normalizer = Normalizer::default();
    let mut stats = RunStats::default();
    let mut progress = Progress::new(&name, opts.since);
    // fused: once it fired, polling it again is harmless (it stays pending)
    let shutdown = futures::FutureExt::fuse(shutdown);
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut timing = Timing::default();
    let cpu_slots = std::sync::Arc::new(tokio::sync::Semaphore::new(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ));
    let ahead = if source.fetch_ahead() {
        MAX_PAGES_IN_FLIGHT
    } else {
        1
    };

    'outer: loop {
        let mut all_caught_up = true;
        for stream in &streams {
            let mut cursor = match store.get(stream) {
                Some(s) => s.cursor.clone(),
                None => source.initial_cursor(stream, None),
            };
            let mut inflight: std::collections::VecDeque<InFlight> = Default::default();
            let mut fetching = true;
            let mut acked: Option<Value> = None;
            let mut last_store = std::time::Instant::now();
            let mut inflight_size = 0usize;
            let end = loop {
                // fetch ahead while there is room
                while fetching
                    && inflight.len() < ahead
                    && (inflight.is_empty() || inflight_size < MAX_EVENTS_IN_FLIGHT)
                {
                    // settle pages Kafka already acknowledged (no waiting), and store
                    // their cursor when due, so a slow API still makes steady progress
                    while inflight.front().is_some_and(|f| f.send.is_finished()) {
                        if let Some(f) = inflight.pop_front() {
                            inflight_size -= f.size;
                            if let Some(c) =
                                settle(f, &name, stream, &mut stats, &mut timing, &mut progress)
                                    .await?
                            {
                                acked = Some(c);
                            }
                        }
                    }
                    if last_store.elapsed() >= STORE_EVERY {
                        if let Some(c) = acked.take() {
                            store.set(stream, c)?;
                        }
                        last_store = std::time::Instant::now();
                    }
                    let fetch_started = std::time::Instant::now();
                    let page = tokio::select! {
                        _ = &mut shutdown => None,
                        r = source.fetch_unmapped(stream, &cursor) => Some(r),
                    };
                    timing.fetch += fetch_started.elapsed();
                    let Some(page) = page else {
                        stopping = true;
                        fetching = false;
                        break;
                    };
                    match page {
                        Ok(page) => {
                            cursor = page.cursor.clone();
                            fetching = !page.caught_up;
                            let (ev, dl, n) = (events.clone(), dlq.clone(), name.clone());
                            let norm = normalizer.clone();
                            let suppression = opts.suppression.clone();
                            let (mapped, pre_rejected) = (page.events, page.rejected);
                            let deferred = page.deferred;
                            // a deferred page is not mapped yet: count its objects
                            let size = (mapped.len() + pre_rejected.len())
                                .max(if deferred.is_some() {
                                    page.objects as usize
                                } else {
                                    0
                                })
                                .max(1);
                            inflight_size += size;
                            let on_pool = ahead > 1 && size >= POOL_MIN_PAGE;
                            let cpu = cpu_slots.clone();
                            let send = tokio::spawn(async move {
                                // mapping, validation and encoding are CPU work of a
                                // millisecond or more per large page: when pages are
                                // fetched ahead, they run on the blocking pool, a few
                                // at a time, so that the async workers stay free for
                                // the HTTP calls of the page chain (and, in tests and
                                // benchmarks, the fake API); see POOL_MIN_PAGE
                                // timed inside the job: a pooled page's wait for a
                                // slot is not preparation
                                let job = move || {
                                    let started = std::time::Instant::now();
                                    let prepared = prepare(
                                        mapped,
                                        pre_rejected,
                                        deferred,
                                        &norm,
                                        suppression.as_ref(),
                                    );
                                    prepared.map(|p| (p, started.elapsed()))
                                };
                                let (prepared, prepare) = if !on_pool {
                                    job()?
                                } else {
                                    let permit = cpu.acquire_owned().await.ok();
                                    tokio::task::spawn_blocking(move || {
                                        let _permit = permit;
                                        job()
                                    })
                                    .await
                                    .map_err(|e| {
                                        tracing::error!(error = %e, "page preparation failed");
                                        ProduceError::Create(rdkafka::error::KafkaError::Canceled)
                                    })??
                                };
                                let policy = RetryPolicy::forever(
                                    Duration::from_millis(500),
                                    Duration::from_secs(30),
                                );
                                let produce_started = std::time::Instant::now();
                                retry(&policy, "connector produce", || async {
                                    ev.send_encoded(&prepared.encoded).await?;
                                    dlq_send(&dl, &n, &prepared.rejected).await
                                })
                                .await?;
                                Ok(Sent {
                                    events: prepared.encoded.len() as u64,
                                    rejected: prepared.rejected.len() as u64,
                                    suppressed: prepared.suppressed,
                                    position: prepared.position,
                                    prepare,
                                    produce: produce_started.elapsed(),
                                })
                            });
                            inflight.push_back(InFlight {
                                send,
                                size,
                                cursor: page.cursor,
                                objects: page.objects,
                                total: page.total,
                                position: page.position,
                                caught_up: page.caught_up,
                            });
                        }
                        Err(e) => {
                            // settle what is in flight first: their cursors may be stored
                            inflight_size = 0;
                            while let Some(f) = inflight.pop_front() {
                                if let Some(c) =
                                    settle(f, &name, stream, &mut stats, &mut timing, &mut progress)
                                        .await?
                                {
                                    acked = Some(c);
                                }
                            }
                            if let Some(c) = acked.take() {
                                store.set(stream, c)?;
                            }
                            match e {
                                SourceError::Api(e) if e.is_auth() => {
                                    return Err(RunError::Auth(e))
                                }
                                SourceError::CursorInvalid {
                                    message,
                                    restart_from,
                                } => {
                                    tracing::warn!(connector = %name, stream, reason = %message,
                                        "stored cursor unusable; restarting the stream (replays are deduplicated by event_id)");
                                    store.set(stream, restart_from.clone())?;
                                    cursor = restart_from;
                                    continue;
                                }
                                SourceError::Api(e) => {
                                    stats.failed_polls += 1;
                                    metrics::counter!("socialcrm_connector_failed_polls_total",
                                        "connector" => name.clone(), "stream" => stream.clone())
                                    .increment(1);
                                    tracing::error!(connector = %name, stream, error = %e,
                                        "fetch failed after retries; trying again after the poll interval");
                                    fetching = false;
                                    break;
                                }
                            }
                        }
                    }
                }
                if stopping {
                    // pages not yet acknowledged are abandoned: their cursors are not
                    // stored, so the next run fetches them again
                    break RoundEnd::Shutdown;
                }
                // wait for the oldest page, in order
                let Some(front) = inflight.pop_front() else {
                    break RoundEnd::Done;
                };
                inflight_size -= front.size;
                let wait_started = std::time::Instant::now();
                let settled = tokio::select! {
                    _ = &mut shutdown => None,
                    r = settle(front, &name, stream, &mut stats, &mut timing, &mut progress) => Some(r),
                };
                timing.ack_wait += wait_started.elapsed();
                match settled {
                    None => break RoundEnd::Shutdown,
                    Some(r) => {
                        if let Some(c) = r? {
                            acked = Some(c);
                        }
                    }
                }
                if last_store.elapsed() >= STORE_EVERY {
                    if let Some(c) = acked.take() {
                        store.set(stream, c)?;
                    }
                    last_store = std::time::Instant::now();
                }
            };
            if let Some(c) = acked.take() {
                store.set(stream, c)?;
            }
            match end {
                RoundEnd::Shutdown => break 'outer,
                RoundEnd::Done => {}
            }
            if fetching {
                all_caught_up = false;
            }
        }
        if all_caught_up {
            progress.caught_up();
            if opts.once {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_secs(opts.settings.poll_interval_secs)) => {}
            }
        }
    }
    progress.finish();
    events.flush(Duration::from_secs(10));
    tracing::info!(connector = %name, pages = stats.pages, events = stats.events,
        rejected = stats.rejected, suppressed = stats.suppressed,
        failed_polls = stats.failed_polls, fetch_ms = timing.fetch.as_millis() as u64,
        ack_wait_ms = timing.ack_wait.as_millis() as u64,
        prepare_ms = timing.prepare.as_millis() as u64,
        produce_ms = timing.produce.as_millis() as u64, "connector stopped");
    Ok(stats)
}

/// A page ready for Kafka: its events validated and encoded, its rejected objects.
struct Prepared {
    encoded: Vec<crate::producer::Encoded>,
    rejected: Vec<Rejected>,
    suppressed: u64,
    /// Newest object time found by a deferred mapping.
    position: Option<DateTime<Utc>>,
}

/// Runs a page's deferred mapping, validates its events (invalid ones become
/// rejected objects), drops suppressed people's events and encodes the rest.
fn prepare(
    mut mapped: Vec<CanonicalEvent>,
    mut pre_rejected: Vec<Rejected>,
    deferred: Option<Deferred>,
    normalizer: &Normalizer,
    suppression: Option<&SuppressionList>,
) -> Result<Prepared, ProduceError> {
    let mut position = None;
    if let Some(d) = deferred {
        let out = d.run();
        mapped.extend(out.events);
        pre_rejected.extend(out.rejected);
        position = out.position;
    }
    let (mut good, rejected) = check_events(mapped, normalizer, &pre_rejected);
    let before = good.len();
    if let Some(list) = suppression {
        good.retain(|ev| list.suppressed(ev).is_none());
    }
    let suppressed = (before - good.len()) as u64;
    let encoded = good
        .iter()
        .map(crate::producer::Encoded::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        encoded,
        rejected,
        suppressed,
        position,
    })
}

/// Waits for a page's events to be acknowledged; returns its cursor.
async fn settle(
    f: InFlight,
    name: &str,
    stream: &str,
    stats: &mut RunStats,
    timing: &mut Timing,
    progress: &mut Progress,
) -> Result<Option<Value>, RunError> {
    let Sent {
        events,
        rejected,
        suppressed,
        position,
        prepare,
        produce,
    } = match f.send.await {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => return Err(RunError::Producer(e)),
        Err(e) => {
            return Err(RunError::Producer(ProduceError::Create(
                rdkafka::error::KafkaError::Canceled,
            )))
            .inspect_err(|_| tracing::error!(error = %e, "produce task failed"))
        }
    };
    timing.prepare += prepare;
    timing.produce += produce;
    stats.pages += 1;
    stats.events += events;
    stats.rejected += rejected;
    stats.suppressed += suppressed;
    let labels = [
        ("connector", name.to_string()),
        ("stream", stream.to_string()),
    ];
    let labels = &labels[..];
    metrics::counter!("socialcrm_connector_events_produced_total", labels).increment(events);
    metrics::counter!("socialcrm_connector_rejected_objects_total", labels).increment(rejected);
    metrics::counter!("socialcrm_connector_suppressed_events_total", labels).increment(suppressed);
    metrics::counter!("socialcrm_connector_pages_total", labels).increment(1);
    let position = f.position.max(position);
    let lag = if f.caught_up {
        0.0
    } else {
        position
            .map(|p| (Utc::now() - p).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    metrics::gauge!("socialcrm_connector_cursor_lag_seconds", labels).set(lag);
    progress.page(stream, f.objects, events, f.total, position);
    Ok(Some(f.cursor))
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
        let msg = r.dlq_message(instance, now);
        out.push(crate::producer::Encoded {
            event_id: r.object_id.clone(),
            key: format!("{instance}:{}", r.object_id),
            payload: serde_json::to_vec(&msg)?,
        });
    }
    dlq.send_encoded(&out).await
}
