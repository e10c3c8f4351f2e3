//! The consumer loop: batch → validate → resolve → record intent → write ClickHouse
//! → publish Kafka → persist the identity store → store offsets. Offsets move only
//! after every sink acknowledged the batch (DESIGN §4), and sinks are retried
//! forever with backoff: a slow or down dependency slows intake, nothing is dropped.
//! A stop request during a write abandons the batch, which is replayed on restart.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;
use socialcrm_schemas::kafka::KafkaConfig;
use socialcrm_schemas::messages::{DlqMessage, DlqOrigin, IdentityCommand, IdentityMessage};
use socialcrm_schemas::retry::{retry, RetryPolicy};
use socialcrm_schemas::{CanonicalEvent, Normalizer};
use tokio::sync::watch;

use crate::config::{IdentityConfig, PipelineConfig};
use crate::identity::Graph;
use crate::pii::Protector;
use crate::privacy::{BatchPrivacy, Privacy};
use crate::rows::{secs, AliasRow, EventRow, IdentityRow, LedgerRow, ProfileRow};
use crate::scoring::incremental::IncrementalModel;
use crate::store::{offset_key, Delta, Intent, Store, StoreError};

/// Largest original payload copied into a DLQ message; longer ones are truncated
/// (and flagged) so the DLQ message always fits Kafka's default message size.
pub use socialcrm_schemas::messages::MAX_DLQ_ORIGINAL_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    ClickHouseUnusable(#[from] socialcrm_schemas::clickhouse_config::HealthError),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    KafkaAccess(#[from] socialcrm_schemas::kafka::AccessError),
}

/// Totals of one run, also logged per batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub batches: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub skipped_applied: u64,
    pub retracted: u64,
    /// Events dropped because they carry an erased (suppressed) identifier.
    pub suppressed: u64,
}

/// Everything the pipeline needs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub pipeline: PipelineConfig,
    pub identity: IdentityConfig,
    pub scoring: crate::scoring::ScoringConfig,
    /// Hashing of identifiers and traits, IP addresses (`crate::pii`).
    pub privacy: socialcrm_schemas::privacy::PrivacyConfig,
}

/// (topic, key, payload); a `None` payload is a tombstone.
type OutMsg<'a> = (&'a str, Option<String>, Option<Vec<u8>>);

/// What resolving one batch produced (on the consumer's side).
#[derive(Default)]
struct Prepared {
    version: u64,
    now: DateTime<Utc>,
    events: Vec<EventRow>,
    ledger: Vec<IdentityMessage>,
    dlq: Vec<(Option<String>, DlqMessage)>,
    delta: Delta,
    max_offsets: BTreeMap<(String, i32), i64>,
    /// Applied offsets including this batch (persisted with it).
    applied: HashMap<String, i64>,
    messages: usize,
    skipped: u64,
    /// Erasures applied in this batch (docs/privacy.md).
    privacy: BatchPrivacy,
    /// Where the batch's time went, for the "batch written" log line.
    timing: Timing,
}

/// Milliseconds a batch spent in each step. Consuming and resolving a batch
/// overlap the writing of the previous one; the slower of the two sets the pace.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// Receiving the batch's messages from the consumer.
    consume_ms: u64,
    /// Validation, identity resolution and profile updates (`prepare`).
    prepare_ms: u64,
    /// Building the ClickHouse rows and Kafka messages of identities and profiles.
    outputs_ms: u64,
    /// The durable intent record.
    intent_ms: u64,
    /// ClickHouse inserts and Kafka produces, until all were accepted.
    sinks_ms: u64,
    /// The identity store's commit.
    commit_ms: u64,
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Rows and messages of one batch, built by the writer.
struct Outputs {
    identities: Vec<IdentityRow>,
    aliases: Vec<AliasRow>,
    ledger_rows: Vec<LedgerRow>,
    profiles: Vec<ProfileRow>,
    /// (customer_id, payload or tombstone)
    profile_msgs: Vec<(String, Option<Vec<u8>>)>,
}

/// What the writer of a batch needs.
struct Writer {
    ch: clickhouse::Client,
    producer: FutureProducer,
    kafka: KafkaConfig,
    policy: RetryPolicy,
    store: Arc<Store>,
    failpoint_after_sinks: bool,
}

/// Result of a written and committed batch.
struct Done {
    max_offsets: BTreeMap<(String, i32), i64>,
    applied: HashMap<String, i64>,
    messages: usize,
    accepted: usize,
    rejected: usize,
    profiles: usize,
    timing: Timing,
}

/// Runs until `shutdown` resolves or, when `exit_when_idle_secs` is set, until
/// the topic has been idle that long.
pub async fn run(
    s: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunStats, PipelineError> {
    s.pipeline.validate().map_err(PipelineError::Config)?;
    s.identity.validate().map_err(PipelineError::Config)?;
    let normalizer = Normalizer::new(Some(&s.identity.default_phone_region))
        .map_err(|e| PipelineError::Config(format!("identity.default_phone_region: {e}")))?;
    s.privacy.validate().map_err(PipelineError::Config)?;
    let protector = Protector::new(&s.privacy);
    let privacy = Privacy::new(&s.privacy, &s.kafka.topics.privacy_commands);
    let (store, loaded) = Store::open(Path::new(&s.pipeline.state_dir), &s.identity)?;
    store.check_privacy(
        s.privacy.hasher().map_or(0, |h| h.fingerprint()),
        loaded.version == 0 && loaded.graph.ids.is_empty(),
    )?;
    let graph = loaded.graph;
    let mut version = loaded.version;
    let mut applied = loaded.offsets;
    let mut recovery = loaded.recovery;
    tracing::info!(
        state = %store.path.display(),
        identifiers = graph.ids.len(),
        profiles = graph.profiles.len(),
        events_seen = graph.seen.len(),
        recovering = recovery.is_some(),
        "identity store loaded"
    );
    // test hook: die between the sinks and the store commit (the worst moment)
    let failpoint_after_sinks =
        std::env::var("SOCIALCRM_FAILPOINT").is_ok_and(|v| v == "after_sinks");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let policy = RetryPolicy::forever(
        Duration::from_millis(200),
        Duration::from_millis(s.pipeline.retry_max_interval_ms),
    );
    tokio::select! {
        r = retry(&policy, "clickhouse_health", || s.clickhouse.health_check()) => r?,
        _ = stop_rx.changed() => return Ok(RunStats::default()),
    }
    let ch = s.clickhouse.client();
    // a wrong SASL password or CA stops the pipeline here, naming the settings
    s.kafka
        .check_access_async(socialcrm_schemas::kafka::ACCESS_CHECK_TIMEOUT)
        .await?;

    let consumer: StreamConsumer = s
        .kafka
        .client_config()
        .set("group.id", &s.pipeline.group_id)
        .set("group.instance.id", s.pipeline.instance_id())
        .set(
            "session.timeout.ms",
            s.pipeline.session_timeout_ms.to_string(),
        )
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "200000")
        .create()?;
    consumer.subscribe(&[
        &s.kafka.topics.events,
        &s.kafka.topics.commands,
        &s.kafka.topics.privacy_commands,
    ])?;
    let producer: FutureProducer = s
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .create()?;

    // scores of completed scoring runs flow into the profiles (and the schedule runs
    // the scoring job itself, when configured)
    let (scores_tx, mut scores_rx) = tokio::sync::mpsc::channel::<ScoreUpdate>(4);
    // new events' decayed sums use the configured half-life (profile::Activity)
    crate::profile::set_activity_half_life_days(s.scoring.half_life_days);
    // the last run's distributions: profiles that events touch are rescored
    let mut model: Option<Arc<IncrementalModel>> = None;
    tokio::spawn(crate::scoring::apply::watch(
        s.clickhouse.clone(),
        s.scoring.clone(),
        scores_tx,
        stop_rx.clone(),
    ));

    let store = Arc::new(store);
    let writer = Arc::new(Writer {
        ch,
        producer,
        kafka: s.kafka.clone(),
        policy: policy.clone(),
        store: store.clone(),
        failpoint_after_sinks,
    });
    let mut stats = RunStats::default();
    let batch_wait = Duration::from_millis(s.pipeline.batch_max_wait_ms);
    let idle_limit = (s.pipeline.exit_when_idle_secs > 0)
        .then(|| Duration::from_secs(s.pipeline.exit_when_idle_secs));
    let mut idle_since = Instant::now();
    // the batch being written while the next one is consumed and resolved
    let mut inflight: Option<tokio::task::JoinHandle<Result<Done, PipelineError>>> = None;
    let mut graph = Some(graph);
    if let Some(g) = graph.as_mut() {
        crate::privacy::load_suppressions(&privacy, &writer.ch, g, &policy).await?;
    }

    loop {
        if *stop_rx.borrow() {
            break;
        }
        // wait for the first message of a batch
        let first = tokio::select! {
            _ = stop_rx.changed() => break,
            m = tokio::time::timeout(Duration::from_millis(500), consumer.recv()) => match m {
                Ok(Ok(m)) => Some(m.detach()),
                Ok(Err(e)) => { tracing::warn!(error = %e, "kafka consume error"); None }
                Err(_) => None,
            }
        };
        let mut pending_scores = Vec::new();
        while let Ok(u) = scores_rx.try_recv() {
            match u {
                ScoreUpdate::Model(m) => model = Some(m),
                ScoreUpdate::Scores(mut v) => pending_scores.append(&mut v),
            }
        }
        let first = match first {
            Some(m) => Some(m),
            // no events, but new scores: an empty batch writes the changed profiles
            None if !pending_scores.is_empty() => None,
            None => {
                idle_tick(
                    &mut inflight,
                    &mut stop_rx,
                    &consumer,
                    &writer,
                    graph.as_ref(),
                    &mut recovery,
                    version,
                    &mut stats,
                )
                .await?;
                if *stop_rx.borrow() {
                    return Ok(stats);
                }
                if idle_limit.is_some_and(|l| idle_since.elapsed() >= l) {
                    tracing::info!("idle, exiting");
                    break;
                }
                continue;
            }
        };
        let consume_started = Instant::now();
        let mut batch = Vec::new();
        if let Some(first) = first {
            batch.push(first);
            idle_since = Instant::now();
        }
        let deadline = Instant::now() + batch_wait;
        while !batch.is_empty() && batch.len() < s.pipeline.batch_max_events {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => tracing::warn!(error = %e, "kafka consume error"),
                Err(_) => break,
            }
        }
        version += 1;
        let consume_ms = ms_since(consume_started);

        // 1. validate and resolve (CPU, off the async workers), while the previous
        //    batch is still being written
        let mut g = graph
            .take()
            .ok_or_else(|| PipelineError::Config("graph lost".into()))?;
        let norm = normalizer.clone();
        let prot = protector.clone();
        let privacy = privacy.clone();
        let applied_now = applied.clone();
        let commands_topic = s.kafka.topics.commands.clone();
        let model_now = model.clone();
        let prepare_started = Instant::now();
        let (g, p, batch_stats) = tokio::task::spawn_blocking(move || {
            let mut st = RunStats::default();
            // profiles that got a run's scores in this batch are rescored only if
            // events touch them too
            let mut from_run: rustc_hash::FxHashSet<String> = Default::default();
            if !pending_scores.is_empty() {
                let n = pending_scores.len();
                from_run = g.dirty_profiles.clone();
                let applied_to = pending_scores
                    .into_iter()
                    .filter(|(cid, sc)| g.apply_scores(cid, sc.clone()))
                    .count();
                from_run = g
                    .dirty_profiles
                    .iter()
                    .filter(|c| !from_run.contains(*c))
                    .cloned()
                    .collect();
                tracing::info!(
                    scores = n,
                    profiles = applied_to,
                    "scores applied to profiles"
                );
            }
            let p = prepare(
                &batch,
                &commands_topic,
                &mut g,
                &applied_now,
                &norm,
                &prot,
                &privacy,
                version,
                Utc::now(),
                &mut st,
                model_now.as_deref().map(|m| (m, &from_run)),
            );
            (g, p, st)
        })
        .await
        .map_err(join_err)?;
        graph = Some(g);
        let mut p = p?;
        p.timing.consume_ms = consume_ms;
        p.timing.prepare_ms = ms_since(prepare_started);
        stats.accepted += batch_stats.accepted;
        stats.duplicates += batch_stats.duplicates;
        stats.rejected += batch_stats.rejected;
        stats.skipped_applied += batch_stats.skipped_applied;
        stats.suppressed += batch_stats.suppressed;
        if p.skipped > 0 {
            tracing::warn!(
                skipped = p.skipped,
                "skipped messages at or below offsets already applied (a replay after a crash, or the topic or group offsets were reset)"
            );
        }
        applied = p.applied.clone();

        // 2. the previous batch must be committed before this one is written
        if let Some(h) = inflight.take() {
            let Some(done) = settle(h, &mut stop_rx).await? else {
                tracing::info!(
                    "stop requested while writing; unwritten batches will be replayed on restart"
                );
                return Ok(stats);
            };
            complete(
                &consumer,
                &writer,
                graph.as_ref(),
                &mut recovery,
                &done,
                version,
                &mut stats,
            )
            .await?;
        }

        // 3. write this batch in the background: intent, sinks, store commit
        let w = writer.clone();
        inflight = Some(tokio::spawn(async move { write_batch(w, p).await }));
    }
    if let Some(h) = inflight.take() {
        tokio::select! {
            r = h => {
                let done = r.map_err(join_err)??;
                after_commit(&consumer, &done, &mut stats)?;
            }
            _ = stop_rx.changed() => {}
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit");
    }
    Ok(stats)
}

/// What the scoring watcher hands the identity writer.
pub enum ScoreUpdate {
    /// The distributions of a newly completed run (sent before its scores).
    Model(Arc<IncrementalModel>),
    /// Scores of the run: (customer_id, scores), in chunks.
    Scores(Vec<(String, crate::profile::ProfileScores)>),
}

/// Idle: finish the batch in flight so its offsets are stored.
#[allow(clippy::too_many_arguments)]
async fn idle_tick(
    inflight: &mut Option<tokio::task::JoinHandle<Result<Done, PipelineError>>>,
    stop_rx: &mut watch::Receiver<bool>,
    consumer: &StreamConsumer,
    writer: &Writer,
    graph: Option<&Graph>,
    recovery: &mut Option<Intent>,
    version: u64,
    stats: &mut RunStats,
) -> Result<(), PipelineError> {
    if let Some(h) = inflight.take() {
        let Some(done) = settle(h, stop_rx).await? else {
            return Ok(());
        };
        complete(consumer, writer, graph, recovery, &done, version, stats).await?;
    }
    Ok(())
}

/// Waits for the batch in flight; `None` when a stop was requested meanwhile.
async fn settle(
    h: tokio::task::JoinHandle<Result<Done, PipelineError>>,
    stop_rx: &mut watch::Receiver<bool>,
) -> Result<Option<Done>, PipelineError> {
    tokio::select! {
        r = h => Ok(Some(r.map_err(join_err)??)),
        _ = stop_rx.changed() => Ok(None),
    }
}

/// After a batch's commit: its offsets, its log line, and crash recovery.
async fn complete(
    consumer: &StreamConsumer,
    writer: &Writer,
    graph: Option<&Graph>,
    recovery: &mut Option<Intent>,
    done: &Done,
    version: u64,
    stats: &mut RunStats,
) -> Result<(), PipelineError> {
    after_commit(consumer, done, stats)?;
    recover(writer, graph, recovery, &done.applied, version, stats).await
}

fn join_err(e: tokio::task::JoinError) -> PipelineError {
    PipelineError::Config(format!("internal task failed: {e}"))
}

/// Offsets of a committed batch go to Kafka; one log line per batch.
fn after_commit(
    consumer: &StreamConsumer,
    done: &Done,
    stats: &mut RunStats,
) -> Result<(), PipelineError> {
    for ((t, part), o) in &done.max_offsets {
        consumer.store_offset(t, *part, *o)?;
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
        tracing::debug!(error = %e, "offset commit deferred");
    }
    stats.batches += 1;
    metrics::counter!("socialcrm_pipeline_batches_total").increment(1);
    metrics::counter!("socialcrm_pipeline_messages_total").increment(done.messages as u64);
    tracing::info!(
        batch = stats.batches,
        messages = done.messages,
        accepted = done.accepted,
        rejected = done.rejected,
        profiles = done.profiles,
        total_accepted = stats.accepted,
        consume_ms = done.timing.consume_ms,
        prepare_ms = done.timing.prepare_ms,
        outputs_ms = done.timing.outputs_ms,
        intent_ms = done.timing.intent_ms,
        sinks_ms = done.timing.sinks_ms,
        commit_ms = done.timing.commit_ms,
        "batch written"
    );
    Ok(())
}

/// Once a crashed batch has been replayed, retracts what only it created.
async fn recover(
    w: &Writer,
    graph: Option<&Graph>,
    recovery: &mut Option<Intent>,
    committed: &HashMap<String, i64>,
    version: u64,
    stats: &mut RunStats,
) -> Result<(), PipelineError> {
    let (Some(rec), Some(graph)) = (recovery.as_ref(), graph) else {
        return Ok(());
    };
    if !rec.passed_by(committed) {
        return Ok(());
    }
    // higher than any version the crashed attempt used (it reused committed + 1)
    let n = retract(w, graph, rec, version + 1).await?;
    let store = w.store.clone();
    tokio::task::spawn_blocking(move || store.clear_recovery())
        .await
        .map_err(join_err)??;
    stats.retracted += n;
    *recovery = None;
    Ok(())
}

/// Builds the batch's rows, records the intent, writes the sinks, commits the store.
async fn write_batch(w: Arc<Writer>, p: Prepared) -> Result<Done, PipelineError> {
    let mut timing = p.timing;
    let t = Instant::now();
    let (p, out) = tokio::task::spawn_blocking(move || {
        let out = outputs(&p);
        (p, out)
    })
    .await
    .map_err(join_err)?;
    let out = out?;
    timing.outputs_ms = ms_since(t);

    // record what this batch is about to publish (for crash recovery)
    let mut intent = Intent {
        version: p.version,
        ..Intent::default()
    };
    intent
        .customer_ids
        .extend(out.profiles.iter().map(|r| r.customer_id.clone()));
    for ((t, part), o) in &p.max_offsets {
        intent.offsets.insert(offset_key(t, *part), *o);
    }
    let t = Instant::now();
    if !intent.customer_ids.is_empty() {
        let store = w.store.clone();
        tokio::task::spawn_blocking(move || store.write_intent(&intent))
            .await
            .map_err(join_err)??;
    }
    timing.intent_ms = ms_since(t);

    let t = Instant::now();
    write_outputs(&w, &p, &out).await?;
    timing.sinks_ms = ms_since(t);
    if w.failpoint_after_sinks {
        tracing::error!("SOCIALCRM_FAILPOINT=after_sinks: aborting");
        std::process::abort();
    }

    let mut done = Done {
        max_offsets: p.max_offsets.clone(),
        applied: p.applied.clone(),
        messages: p.messages,
        accepted: p.events.len(),
        rejected: p.dlq.len(),
        profiles: out.profiles.len(),
        timing,
    };
    let t = Instant::now();
    let store = w.store.clone();
    tokio::task::spawn_blocking(move || store.commit_delta(&p.delta, p.version, &p.applied))
        .await
        .map_err(join_err)??;
    done.timing.commit_ms = ms_since(t);
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    batch: &[OwnedMessage],
    commands_topic: &str,
    graph: &mut Graph,
    applied: &HashMap<String, i64>,
    normalizer: &Normalizer,
    protector: &Protector,
    privacy: &Privacy,
    version: u64,
    now: DateTime<Utc>,
    stats: &mut RunStats,
    rescore: Option<(&IncrementalModel, &rustc_hash::FxHashSet<String>)>,
) -> Result<Prepared, PipelineError> {
    let mut p = Prepared {
        version,
        now,
        events: Vec::with_capacity(batch.len()),
        applied: applied.clone(),
        messages: batch.len(),
        ..Prepared::default()
    };
    for m in batch {
        let tp = (m.topic().to_string(), m.partition());
        let e = p.max_offsets.entry(tp.clone()).or_insert(m.offset());
        *e = (*e).max(m.offset());
        if applied
            .get(&offset_key(&tp.0, tp.1))
            .is_some_and(|a| m.offset() <= *a)
        {
            stats.skipped_applied += 1;
            p.skipped += 1;
            continue;
        }
        let payload = m.payload().unwrap_or_default();
        if m.topic() == commands_topic {
            match m.payload() {
                Some(_) => apply_command(m, payload, graph, &mut p, now),
                // a tombstone: an erasure withdrew a command whose wall it emptied
                // (docs/privacy.md); a rebuilt writer that met the command drops it
                None => crate::privacy::withdraw_command(graph, m.key()),
            }
            continue;
        }
        if m.topic() == privacy.topic {
            apply_erase(m, payload, graph, privacy, &mut p, now);
            continue;
        }
        let result = CanonicalEvent::parse_and_validate(payload, normalizer, now)
            .map_err(|e| (e.code(), e.to_string()))
            // an erased person's event goes nowhere (docs/privacy.md)
            .and_then(|(ev, rejected)| match privacy.suppressed(graph, &ev) {
                true => Err((SUPPRESSED, String::new())),
                false => Ok((ev, rejected)),
            })
            .and_then(|(mut ev, mut rejected)| {
                // [privacy]: hashes and IP rules before the graph sees anything
                let screened = protector.protect(graph, &mut ev, &mut rejected, normalizer);
                graph
                    .process_screened(&ev, &rejected, screened)
                    .map(|o| (ev, o))
                    .map_err(|reason| ("no_identifier", reason))
            });
        match result {
            Err((code, _))
                if code == SUPPRESSED || privacy.raw_suppressed(graph, payload, normalizer) =>
            {
                stats.suppressed += 1;
                metrics::counter!("socialcrm_pipeline_events_total", "outcome" => "suppressed")
                    .increment(1);
            }
            Ok((_, outcome)) if outcome.duplicate => {
                stats.duplicates += 1;
                metrics::counter!("socialcrm_pipeline_events_total", "outcome" => "duplicate")
                    .increment(1);
            }
            Ok((ev, outcome)) => {
                stats.accepted += 1;
                metrics::counter!("socialcrm_pipeline_events_total", "outcome" => "accepted")
                    .increment(1);
                p.events.push(EventRow::new(
                    &ev,
                    &outcome.customer_id,
                    &outcome.primary,
                    m.partition(),
                    m.offset(),
                    version,
                    now,
                ));
                p.ledger.extend(outcome.ledger);
            }
            Err((code, reason)) => {
                stats.rejected += 1;
                metrics::counter!("socialcrm_pipeline_events_total", "outcome" => "rejected")
                    .increment(1);
                metrics::counter!("socialcrm_pipeline_rejected_total", "code" => code).increment(1);
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                p.dlq
                    .push((key.clone(), dlq_message(m, key, code, reason, now)));
            }
        }
    }

    for ((t, part), o) in &p.max_offsets {
        let k = offset_key(t, *part);
        let e = p.applied.entry(k).or_insert(*o);
        *e = (*e).max(*o);
    }
    // between scoring runs: the profiles this batch changed get new engagement,
    // RFM and lifecycle (docs/scoring.md, "Between runs")
    if let Some((model, from_run)) = rescore {
        // an event's profile is dirty already; only the profiles that got a run's
        // scores in this batch need the events to say whether they changed too
        let dirty = std::mem::take(&mut graph.dirty_profiles);
        let touched = (!from_run.is_empty())
            .then_some(&p.events)
            .into_iter()
            .flatten()
            .map(|e| e.customer_id.as_str());
        let t = std::time::Instant::now();
        let n = graph.rescore(
            dirty
                .iter()
                .filter(|c| !from_run.contains(*c))
                .map(String::as_str)
                .chain(touched),
            model,
            now.timestamp(),
        );
        graph.dirty_profiles.extend(dirty);
        if n > 0 {
            metrics::counter!("socialcrm_pipeline_incremental_scores_total").increment(n as u64);
            metrics::histogram!("socialcrm_pipeline_incremental_score_seconds")
                .record(t.elapsed().as_secs_f64() / n as f64);
        }
    }
    p.delta = graph.take_delta();
    Ok(p)
}

/// An operator's unlink/split from `crm.identity.commands`; a malformed or
/// impossible command goes to the dead-letter topic with the reason.
fn apply_command(
    m: &OwnedMessage,
    payload: &[u8],
    graph: &mut Graph,
    p: &mut Prepared,
    now: DateTime<Utc>,
) {
    let result = serde_json::from_slice::<IdentityCommand>(payload)
        .map_err(|e| ("bad_command", format!("not an identity command: {e}")))
        .and_then(|cmd| {
            graph
                .apply_command(&cmd)
                .map(|l| (cmd, l))
                .map_err(|e| ("bad_command", e))
        });
    match result {
        Ok((cmd, ledger)) => {
            tracing::info!(
                command = %cmd.command_id,
                action = ?cmd.action,
                customer = %cmd.customer_id,
                changes = ledger.len(),
                "identity command applied"
            );
            p.ledger.extend(ledger);
        }
        Err((code, reason)) => {
            tracing::warn!(%reason, "identity command refused");
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            p.dlq
                .push((key.clone(), dlq_message(m, key, code, reason, now)));
        }
    }
}

/// Code of an event dropped because it carries a suppressed identifier (never
/// in a DLQ message: the event is not kept anywhere).
const SUPPRESSED: &str = "suppressed";

/// An erasure request from `crm.privacy.commands` (`crate::privacy`); a malformed
/// one goes to the dead-letter topic with the reason.
fn apply_erase(
    m: &OwnedMessage,
    payload: &[u8],
    graph: &mut Graph,
    privacy: &Privacy,
    p: &mut Prepared,
    now: DateTime<Utc>,
) {
    let (events, ledger) = (&mut p.events, &mut p.ledger);
    match privacy.apply(payload, graph, &mut p.privacy, events, ledger, now) {
        Ok(cmd) if cmd.action == socialcrm_schemas::messages::PrivacyAction::Unsuppress => {
            tracing::info!(request = %cmd.request_id, identifiers = cmd.identifiers.len(), "suppression lift applied")
        }
        Ok(cmd) => tracing::info!(request = %cmd.request_id, "erasure applied"),
        Err(reason) => {
            tracing::warn!(%reason, "erasure request refused");
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            p.dlq
                .push((key.clone(), dlq_message(m, key, "bad_command", reason, now)));
        }
    }
}

fn dlq_message(
    m: &OwnedMessage,
    key: Option<String>,
    code: &str,
    reason: String,
    now: DateTime<Utc>,
) -> DlqMessage {
    let origin = DlqOrigin {
        topic: Some(m.topic().to_string()),
        partition: Some(m.partition()),
        offset: Some(m.offset()),
        key,
        ..DlqOrigin::default()
    };
    DlqMessage::new(
        code,
        reason,
        "validate",
        origin,
        m.payload().unwrap_or_default(),
        now,
    )
}

/// Rows and messages for what the batch changed (runs on a blocking thread).
fn outputs(p: &Prepared) -> Result<Outputs, PipelineError> {
    let (version, now) = (p.version, p.now);
    let identities = p
        .delta
        .ids
        .iter()
        .filter(|(k, _)| !p.privacy.keys.contains(k))
        .map(|(k, rec)| IdentityRow::new(k, rec.as_ref(), version, now))
        .collect();
    let aliases = p
        .delta
        .aliases
        .iter()
        .map(|(r, s, at)| AliasRow {
            retired_id: r.clone(),
            survivor_id: s.clone(),
            merged_at: secs(*at),
            version,
        })
        .collect();
    let ledger_rows = p
        .ledger
        .iter()
        .enumerate()
        .map(|(i, m)| LedgerRow::new(m, version, i as u32))
        .collect();
    let mut profiles = Vec::with_capacity(p.delta.profiles.len());
    let mut profile_msgs = Vec::with_capacity(p.delta.profiles.len());
    for (c, state) in &p.delta.profiles {
        let Some(state) = state else { continue };
        let msg = state.to_message(version, now);
        profiles.push(ProfileRow::from_message(&msg, state, version, now));
        let payload = if state.is_active() {
            Some(serde_json::to_vec(&msg)?)
        } else {
            None // merged away: tombstone on the compacted topic
        };
        profile_msgs.push((c.clone(), payload));
    }
    // erased: a tombstone for every customer id of the person
    profile_msgs.extend(p.privacy.customer_ids.iter().map(|c| (c.clone(), None)));
    Ok(Outputs {
        identities,
        aliases,
        ledger_rows,
        profiles,
        profile_msgs,
    })
}

/// Events follow their primary identifier to its new customer (after an unlink,
/// a split or a re-resolved conflict): the moves go to `event_moves`, then one
/// `ALTER TABLE ... UPDATE` mutation per batch reads them there, so the mutation's
/// text (kept in `system.mutations`) names no identifier (docs/privacy.md).
/// ClickHouse applies it in the background; until then queries see the old
/// attribution.
async fn reattribute(
    ch: &clickhouse::Client,
    moved: &[(String, String)],
    version: u64,
    policy: &RetryPolicy,
) -> Result<(), PipelineError> {
    let now = Utc::now();
    let move_id = format!(
        "{version}-{}",
        now.timestamp_nanos_opt().unwrap_or_default()
    );
    let rows: Vec<crate::rows::EventMoveRow> = moved
        .iter()
        .map(|(k, c)| crate::rows::EventMoveRow {
            move_id: move_id.clone(),
            primary_id: k.clone(),
            customer_id: c.clone(),
            moved_at: secs(now),
        })
        .collect();
    insert_rows(ch, "event_moves", &rows, policy).await?;
    // one tuple of two aligned arrays: transform wants constant arrays, and 18.16
    // runs no `IN [array]` (nor DISTINCT/ORDER BY subqueries) in a mutation
    let moves = "(SELECT (groupArray(primary_id), groupArray(customer_id)) FROM event_moves WHERE move_id = ?)";
    retry(policy, "clickhouse_reattribute", || async {
        ch.query(&format!(
            "ALTER TABLE events UPDATE customer_id = transform(primary_id, tupleElement({moves}, 1), tupleElement({moves}, 2), customer_id) \
             WHERE primary_id IN (SELECT primary_id FROM event_moves WHERE move_id = ?)"
        ))
        .bind(&move_id)
        .bind(&move_id)
        .bind(&move_id)
        .execute()
        .await
    })
    .await?;
    tracing::info!(identifiers = moved.len(), "events re-attributed");
    Ok(())
}

async fn write_outputs(w: &Writer, p: &Prepared, out: &Outputs) -> Result<(), PipelineError> {
    let (ch, policy) = (&w.ch, &w.policy);
    let (a, b, c, d, e) = tokio::join!(
        insert_rows(ch, "events", &p.events, policy),
        insert_rows(ch, "identities", &out.identities, policy),
        insert_rows(ch, "customer_aliases", &out.aliases, policy),
        insert_rows(ch, "identity_ledger", &out.ledger_rows, policy),
        insert_rows(ch, "profiles", &out.profiles, policy),
    );
    a?;
    b?;
    c?;
    d?;
    e?;
    if !p.delta.moved.is_empty() {
        reattribute(ch, &p.delta.moved, p.version, policy).await?;
    }
    let topics = &w.kafka.topics;
    let mut msgs: Vec<OutMsg<'_>> =
        Vec::with_capacity(p.dlq.len() + p.ledger.len() + out.profile_msgs.len());
    for (key, m) in &p.dlq {
        msgs.push((&topics.dlq, key.clone(), Some(serde_json::to_vec(m)?)));
    }
    for m in &p.ledger {
        msgs.push((
            &topics.identity,
            Some(m.customer_id.clone()),
            Some(serde_json::to_vec(m)?),
        ));
    }
    for (key, payload) in &out.profile_msgs {
        msgs.push((&topics.profiles, Some(key.clone()), payload.clone()));
    }
    produce_all(&w.producer, &msgs, policy).await?;
    if !p.privacy.is_empty() {
        // after Kafka: `applied` tells the requester that the tombstones are out
        retry(policy, "clickhouse_erasures", || p.privacy.write(ch)).await?;
    }
    Ok(())
}

/// Customer ids a crashed batch published that the replayed graph does not know.
pub fn to_retract<'a>(graph: &Graph, rec: &'a Intent) -> Vec<&'a String> {
    rec.customer_ids
        .iter()
        .filter(|c| !graph.profiles.contains_key(*c))
        .collect()
}

/// Marks the customer ids a crashed batch published, but the replay did not
/// recreate, as inactive (ClickHouse) and tombstones them (`crm.profiles`).
async fn retract(
    w: &Writer,
    graph: &Graph,
    rec: &Intent,
    version: u64,
) -> Result<u64, PipelineError> {
    let now = Utc::now();
    let gone = to_retract(graph, rec);
    if gone.is_empty() {
        tracing::info!("crash recovery complete: nothing to retract");
        return Ok(0);
    }
    let rows: Vec<ProfileRow> = gone
        .iter()
        .map(|c| ProfileRow::retracted(c, version, now))
        .collect();
    insert_rows(&w.ch, "profiles", &rows, &w.policy).await?;
    let msgs: Vec<OutMsg<'_>> = gone
        .iter()
        .map(|c| (w.kafka.topics.profiles.as_str(), Some((*c).clone()), None))
        .collect();
    produce_all(&w.producer, &msgs, &w.policy).await?;
    tracing::warn!(
        retracted = gone.len(),
        "crash recovery: retracted profiles that only the crashed batch had created"
    );
    Ok(gone.len() as u64)
}

async fn insert_rows<T>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
    policy: &RetryPolicy,
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::Row + Serialize + for<'a> clickhouse::RowWrite<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(());
    }
    retry(policy, table, || async {
        let mut insert = client.insert::<T>(table).await?;
        for r in rows {
            insert.write(r).await?;
        }
        insert.end().await
    })
    .await
}

async fn produce_all(
    producer: &FutureProducer,
    msgs: &[OutMsg<'_>],
    policy: &RetryPolicy,
) -> Result<(), rdkafka::error::KafkaError> {
    // first attempt for all at once; only failures go through the retry loop
    let first = join_all(msgs.iter().map(|(topic, key, payload)| async move {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            rec = rec.key(k.as_str());
        }
        if let Some(p) = payload {
            rec = rec.payload(p.as_slice());
        }
        producer.send(rec, Timeout::Never).await
    }))
    .await;
    let failed: Vec<&OutMsg<'_>> = msgs
        .iter()
        .zip(first)
        .filter_map(|(m, r)| r.is_err().then_some(m))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    tracing::warn!(failed = failed.len(), "kafka deliveries failed; retrying");
    let sends = failed.into_iter().map(|(topic, key, payload)| async move {
        retry(policy, "kafka_produce", || async {
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
            if let Some(k) = key {
                rec = rec.key(k.as_str());
            }
            if let Some(p) = payload {
                rec = rec.payload(p.as_slice());
            }
            producer
                .send(rec, Timeout::Never)
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        })
        .await
    });
    for r in join_all(sends).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialcrm_schemas::IdType;

    fn ev(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        crate::testing::event(id, at, ids)
    }

    #[test]
    fn ids_only_a_crashed_order_created_are_retracted() {
        // the same two events, keyed to different partitions, in two orders
        let e1 = ev("1", "2026-01-01T00:00:00Z", &[(IdType::AnonymousId, "a")]);
        let e2 = ev(
            "2",
            "2026-01-02T00:00:00Z",
            &[(IdType::AnonymousId, "a"), (IdType::Email, "x@y.io")],
        );
        let cfg = IdentityConfig::default();
        let mut crashed = Graph::new(&cfg);
        crashed.process(&e2, &[]).expect("ok");
        crashed.process(&e1, &[]).expect("ok");
        let intent = Intent {
            version: 1,
            customer_ids: crashed.dirty_profiles.iter().cloned().collect(),
            offsets: HashMap::new(),
        };
        let mut replayed = Graph::new(&cfg);
        replayed.process(&e1, &[]).expect("ok");
        replayed.process(&e2, &[]).expect("ok");
        // same partition of identifiers, different customer ids
        assert_eq!(crashed.partition(), replayed.partition());
        let crashed_id = crashed.customer_of("email:x@y.io").expect("id").to_string();
        let replayed_id = replayed
            .customer_of("email:x@y.io")
            .expect("id")
            .to_string();
        assert_ne!(crashed_id, replayed_id);
        assert_eq!(to_retract(&replayed, &intent), vec![&crashed_id]);
    }
}
