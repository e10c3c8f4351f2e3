//! The consumer loop: batch → validate → resolve → write ClickHouse → publish Kafka →
//! persist the identity store → store offsets. Offsets move only after every sink
//! acknowledged the batch (DESIGN §4), and sinks are retried forever with backoff:
//! a slow or down dependency slows intake, nothing is dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;
use socialcrm_schemas::kafka::KafkaConfig;
use socialcrm_schemas::messages::{DlqMessage, DlqOrigin, IdentityMessage};
use socialcrm_schemas::retry::{retry, RetryPolicy};
use socialcrm_schemas::{CanonicalEvent, Normalizer, SCHEMA_VERSION};

use crate::config::{IdentityConfig, PipelineConfig};
use crate::rows::{secs, AliasRow, EventRow, IdentityRow, LedgerRow, ProfileRow};
use crate::store::{offset_key, Store, StoreError};

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
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Totals of one run, also logged per batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub batches: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub skipped_applied: u64,
}

/// Everything the pipeline needs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub pipeline: PipelineConfig,
    pub identity: IdentityConfig,
}

struct Outputs {
    events: Vec<EventRow>,
    ledger: Vec<IdentityMessage>,
    dlq: Vec<(Option<String>, DlqMessage)>,
}

/// Runs until `shutdown` resolves (finishing the batch in hand) or, when
/// `exit_when_idle_secs` is set, until the topic has been idle that long.
pub async fn run(
    s: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunStats, PipelineError> {
    s.pipeline.validate().map_err(PipelineError::Config)?;
    let normalizer = Normalizer::new(Some(&s.identity.default_phone_region))
        .map_err(|e| PipelineError::Config(format!("identity.default_phone_region: {e}")))?;
    let (store, loaded) = Store::open(Path::new(&s.pipeline.state_dir), &s.identity)?;
    let mut graph = loaded.graph;
    let mut version = loaded.version;
    let mut applied = loaded.offsets;
    tracing::info!(
        state = %store.path.display(),
        identifiers = graph.ids.len(),
        profiles = graph.profiles.len(),
        events_seen = graph.seen.len(),
        "identity store loaded"
    );

    let policy = RetryPolicy::forever(
        Duration::from_millis(200),
        Duration::from_millis(s.pipeline.retry_max_interval_ms),
    );
    retry(&policy, "clickhouse_health", || s.clickhouse.health_check()).await?;
    let ch = s.clickhouse.client();

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
    consumer.subscribe(&[&s.kafka.topics.events])?;
    let producer: FutureProducer = s
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .create()?;

    let mut stats = RunStats::default();
    let batch_wait = Duration::from_millis(s.pipeline.batch_max_wait_ms);
    let idle_limit = (s.pipeline.exit_when_idle_secs > 0)
        .then(|| Duration::from_secs(s.pipeline.exit_when_idle_secs));
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut idle_since = Instant::now();

    while !stopping {
        // wait for the first message of a batch
        let first = tokio::select! {
            _ = &mut shutdown => { stopping = true; None }
            m = tokio::time::timeout(Duration::from_millis(500), consumer.recv()) => match m {
                Ok(Ok(m)) => Some(m.detach()),
                Ok(Err(e)) => { tracing::warn!(error = %e, "kafka consume error"); None }
                Err(_) => None,
            }
        };
        let Some(first) = first else {
            if idle_limit.is_some_and(|l| idle_since.elapsed() >= l) {
                tracing::info!("idle, exiting");
                break;
            }
            continue;
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + batch_wait;
        while batch.len() < s.pipeline.batch_max_events {
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
        idle_since = Instant::now();
        version += 1;
        let now = Utc::now();

        // 1. validate and resolve, in memory
        let mut out = Outputs {
            events: Vec::with_capacity(batch.len()),
            ledger: Vec::new(),
            dlq: Vec::new(),
        };
        let mut max_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in &batch {
            let tp = (m.topic().to_string(), m.partition());
            let e = max_offsets.entry(tp.clone()).or_insert(m.offset());
            *e = (*e).max(m.offset());
            if applied
                .get(&offset_key(&tp.0, tp.1))
                .is_some_and(|a| m.offset() <= *a)
            {
                stats.skipped_applied += 1;
                continue;
            }
            let payload = m.payload().unwrap_or_default();
            match CanonicalEvent::parse_and_validate(payload, &normalizer, now) {
                Ok((ev, rejected)) => {
                    let outcome = graph.process(&ev, &rejected);
                    if outcome.duplicate {
                        stats.duplicates += 1;
                        continue;
                    }
                    stats.accepted += 1;
                    out.events.push(EventRow::new(
                        &ev,
                        &outcome.customer_id,
                        m.partition(),
                        m.offset(),
                        version,
                        now,
                    ));
                    out.ledger.extend(outcome.ledger);
                }
                Err(err) => {
                    stats.rejected += 1;
                    metrics::counter!("socialcrm_pipeline_rejected_total", "code" => err.code())
                        .increment(1);
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    let (original, original_base64) = match std::str::from_utf8(payload) {
                        Ok(t) => (Some(t.to_string()), None),
                        Err(_) => (None, Some(base64_encode(payload))),
                    };
                    out.dlq.push((
                        key.clone(),
                        DlqMessage {
                            schema_version: SCHEMA_VERSION,
                            error_code: err.code().to_string(),
                            reason: err.to_string(),
                            stage: "validate".into(),
                            origin: DlqOrigin {
                                topic: m.topic().to_string(),
                                partition: m.partition(),
                                offset: m.offset(),
                                key,
                            },
                            original,
                            original_base64,
                            failed_at: now,
                        },
                    ));
                }
            }
        }

        // 2. rows of what changed
        let id_rows: Vec<IdentityRow> = graph
            .dirty_ids
            .iter()
            .map(|k| IdentityRow::new(k, graph.ids.get(k), version, now))
            .collect();
        let alias_rows: Vec<AliasRow> = graph
            .dirty_aliases
            .iter()
            .map(|(r, s, at)| AliasRow {
                retired_id: r.clone(),
                survivor_id: s.clone(),
                merged_at: secs(*at),
                version,
            })
            .collect();
        let ledger_rows: Vec<LedgerRow> = out
            .ledger
            .iter()
            .map(|m| LedgerRow::new(m, version))
            .collect();
        let profile_states: Vec<_> = graph
            .dirty_profiles
            .iter()
            .filter_map(|c| graph.profiles.get(c))
            .collect();
        let profile_rows: Vec<ProfileRow> = profile_states
            .iter()
            .map(|p| ProfileRow::new(p, version, now))
            .collect();
        let mut profile_msgs: Vec<(String, Option<Vec<u8>>)> =
            Vec::with_capacity(profile_states.len());
        for p in &profile_states {
            let payload = if p.is_active() {
                Some(serde_json::to_vec(&p.to_message(version, now))?)
            } else {
                None // merged away: tombstone on the compacted topic
            };
            profile_msgs.push((p.customer_id.clone(), payload));
        }

        // 3. ClickHouse, retried until accepted
        let (a, b, c, d, e) = tokio::join!(
            insert_rows(&ch, "events", &out.events, &policy),
            insert_rows(&ch, "identities", &id_rows, &policy),
            insert_rows(&ch, "customer_aliases", &alias_rows, &policy),
            insert_rows(&ch, "identity_ledger", &ledger_rows, &policy),
            insert_rows(&ch, "profiles", &profile_rows, &policy),
        );
        a?;
        b?;
        c?;
        d?;
        e?;

        // 4. Kafka outputs, acknowledged
        let mut kafka_msgs: Vec<OutMsg<'_>> = Vec::new();
        for (key, m) in &out.dlq {
            kafka_msgs.push((
                &s.kafka.topics.dlq,
                key.clone(),
                Some(serde_json::to_vec(m)?),
            ));
        }
        for m in &out.ledger {
            kafka_msgs.push((
                &s.kafka.topics.identity,
                Some(m.customer_id.clone()),
                Some(serde_json::to_vec(m)?),
            ));
        }
        for (key, payload) in profile_msgs {
            kafka_msgs.push((&s.kafka.topics.profiles, Some(key), payload));
        }
        produce_all(&producer, &kafka_msgs, &policy).await?;

        // 5. persist the identity store with the applied offsets, then store offsets
        for ((t, p), o) in &max_offsets {
            applied.insert(offset_key(t, *p), *o);
        }
        store.commit(&mut graph, version, &applied)?;
        for ((t, p), o) in &max_offsets {
            consumer.store_offset(t, *p, *o)?;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit deferred");
        }
        stats.batches += 1;
        metrics::counter!("socialcrm_pipeline_events_total").increment(batch.len() as u64);
        tracing::info!(
            batch = stats.batches,
            messages = batch.len(),
            accepted = out.events.len(),
            rejected = out.dlq.len(),
            profiles = profile_rows.len(),
            total_accepted = stats.accepted,
            "batch written"
        );
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit");
    }
    Ok(stats)
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

/// (topic, key, payload); a `None` payload is a tombstone.
type OutMsg<'a> = (&'a str, Option<String>, Option<Vec<u8>>);

async fn produce_all(
    producer: &FutureProducer,
    msgs: &[OutMsg<'_>],
    policy: &RetryPolicy,
) -> Result<(), rdkafka::error::KafkaError> {
    let sends = msgs.iter().map(|(topic, key, payload)| async move {
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

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}
