//! Erasure and right of access (docs/privacy.md), shared by `socialcrm privacy` and
//! the HTTP API's `/v1/privacy/*`.
//!
//! An erasure goes through the identity writer, like unlinks do: the requester
//! resolves the person in ClickHouse, records the request (`crm.erasures`, status
//! `requested`) with the person's stored keys (`crm.erasure_keys`), and sends an
//! [`EraseCommand`] (hashes only) on `crm.privacy.commands`. The pipeline applies it
//! (graph, `crm.identity`, tombstones on `crm.profiles`, suppression list) and
//! records `applied`. Then the requester deletes the person's rows from every
//! ClickHouse table with mutations that name only the request (their conditions
//! read `crm.erasure_keys`, so no personal value lands in `system.mutations`), waits
//! for them (`completed`), counts what is left in every table and records
//! `verified` (or `failed`, with the counts), and deletes the keys.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use socialcrm_pipeline::privacy::{ErasureKeyRow, ErasureRow, LiftRow, Status};
use socialcrm_pipeline::rows::ProfileRow;
use socialcrm_schemas::messages::{EraseCommand, HashedIdentifier, IdentityCommand, PrivacyAction};
use socialcrm_schemas::suppression::SuppressionHasher;
use socialcrm_schemas::{Identifier, SCHEMA_VERSION};

use crate::api::queries::{profile_json, Queries, QueryError};
use crate::config::Config;

/// Why a privacy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// Nobody matches the subject.
    #[error("{0}")]
    NotFound(String),
    /// The subject or a parameter is not valid.
    #[error("{0}")]
    BadRequest(String),
    /// ClickHouse or Kafka failed (retry later).
    #[error("{0}")]
    Unavailable(String),
}

impl From<QueryError> for PrivacyError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => PrivacyError::BadRequest(m),
            QueryError::Storage(m) => PrivacyError::Unavailable(m),
        }
    }
}

impl From<clickhouse::error::Error> for PrivacyError {
    fn from(e: clickhouse::error::Error) -> Self {
        PrivacyError::Unavailable(format!("clickhouse: {e}"))
    }
}

type PResult<T> = Result<T, PrivacyError>;

/// The tables the person's rows are deleted from (or, for the ledger, blanked
/// in), in the order of deletion. Every table of `schemas/migrations/` is either
/// here or in [`KEPT_TABLES`] (a unit test checks it).
pub const ERASED_TABLES: [&str; 9] = [
    "events_by_id",
    "events",
    "event_moves",
    "identities",
    "customer_aliases",
    "identity_ledger",
    "profiles",
    "scores",
    "influencer_ranks",
];

/// Tables that hold nothing personal of a person, and why.
pub const KEPT_TABLES: [(&str, &str); 8] = [
    (
        "score_runs",
        "scoring runs: times, counts and the scoring config",
    ),
    (
        "score_models",
        "each scoring run's score distributions: values without customer ids",
    ),
    ("schema_migrations", "applied migrations"),
    ("suppressions", "salted hashes of erased identifiers"),
    (
        "suppression_lifts",
        "lifted suppressions: hashes, who lifted them, when and why",
    ),
    (
        "erasures",
        "erasure requests: subject hash, customer ids, counts",
    ),
    (
        "erasure_keys",
        "keys of erasures in progress; deleted when one is verified",
    ),
    (
        "events_by_id_mv",
        "materialized view feeding events_by_id (no storage of its own)",
    ),
];

/// What an erasure asks of each table (`src/erasure.sql`, with its placeholders
/// expanded; every `?` is the request id).
struct TablePlan {
    table: String,
    /// Rows that hold the person's data (counted before and after).
    rows: String,
    /// `ALTER TABLE ... DELETE WHERE <rows>`, or `... UPDATE ... WHERE ...`.
    mutation: String,
}

impl TablePlan {
    /// How many times `sql` binds the request id.
    fn binds(sql: &str) -> usize {
        sql.matches('?').count()
    }
}

const ERASURE_SQL: &str = include_str!("erasure.sql");

/// The plans of `src/erasure.sql` for database `db`.
fn plans(db: &str) -> PResult<Vec<TablePlan>> {
    let keys = |kind: &str| {
        format!("(SELECT key FROM {db}.erasure_keys WHERE request_id = ? AND kind = '{kind}')")
    };
    let pairs = format!(
        "(SELECT (groupArray(key), groupArray(hash)) FROM {db}.erasure_keys WHERE request_id = ? AND kind = 'id')"
    );
    let expand = |t: &str| {
        t.replace("{ids}", &keys("id"))
            .replace("{events}", &keys("event"))
            .replace("{customers}", &keys("customer"))
            .replace("{keys}", &format!("tupleElement({pairs}, 1)"))
            .replace("{hashes}", &format!("tupleElement({pairs}, 2)"))
            .replace("{db}", db)
    };
    let mut out = Vec::new();
    for line in ERASURE_SQL.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        let f: Vec<&str> = line.split(" | ").collect();
        let [table, rows, action] = f[..] else {
            return Err(PrivacyError::Unavailable(format!(
                "src/erasure.sql: a line needs `table | rows | mutation`: {line}"
            )));
        };
        let rows = expand(rows);
        let mutation = match action {
            "DELETE" => format!("ALTER TABLE {db}.{table} DELETE WHERE {rows}"),
            update if update.starts_with("UPDATE ") => {
                format!("ALTER TABLE {db}.{table} {}", expand(update))
            }
            other => {
                return Err(PrivacyError::Unavailable(format!(
                    "src/erasure.sql: unknown mutation for {table}: {other}"
                )))
            }
        };
        out.push(TablePlan {
            table: table.to_string(),
            rows,
            mutation,
        });
    }
    Ok(out)
}

fn bind_n(mut q: clickhouse::query::Query, id: &str, n: usize) -> clickhouse::query::Query {
    for _ in 0..n {
        q = q.bind(id);
    }
    q
}

/// What a request is about, resolved in ClickHouse.
#[derive(Debug)]
pub struct Subject {
    /// The live profile, if the person has one.
    pub profile: Option<ProfileRow>,
    /// The live id, then the retired ids merged into it.
    pub customer_ids: Vec<String>,
    /// Stored identifier keys (`type:value`).
    pub keys: BTreeSet<String>,
    /// What `crm.erasures.subject` records: the hash of the identifier asked
    /// for, or the customer id.
    pub recorded_as: String,
}

fn is_customer_id(s: &str) -> bool {
    s.strip_prefix("c_")
        .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The person a subject (`type:value` or a customer id) names.
pub async fn resolve(cfg: &Config, q: &Queries, subject: &str) -> PResult<Subject> {
    let hasher = SuppressionHasher::new(&cfg.privacy);
    let (profile, asked_key) = if is_customer_id(subject) {
        let p = q
            .by_customer(subject)
            .await?
            .ok_or_else(|| PrivacyError::NotFound(format!("no customer {subject}")))?;
        (Some(p), None)
    } else {
        let (t, v) = subject.split_once(':').ok_or_else(|| {
            PrivacyError::BadRequest(format!(
                "`{subject}`: give an identifier as type:value (e.g. email:ann@example.com) or a customer id (c_…)"
            ))
        })?;
        let id = socialcrm_schemas::privacy::lookup_identifier(
            cfg.privacy.hasher().as_ref(),
            &q.normalizer,
            t,
            v,
        )
        .map_err(|e| PrivacyError::BadRequest(format!("`{subject}`: {e}")))?;
        (q.lookup(subject).await?, Some(id.key()))
    };
    let mut customer_ids = Vec::new();
    let mut keys = BTreeSet::new();
    if let Some(p) = &profile {
        customer_ids.push(p.customer_id.clone());
        customer_ids.extend(p.merged_from.iter().cloned());
        keys.extend(
            p.identifier_types
                .iter()
                .zip(&p.identifier_values)
                .map(|(t, v)| format!("{t}:{v}")),
        );
    }
    let recorded_as = match &asked_key {
        Some(k) => {
            keys.insert(k.clone());
            hasher.hash_key(k)
        }
        None => subject.to_string(),
    };
    Ok(Subject {
        profile,
        customer_ids,
        keys,
        recorded_as,
    })
}

/// `erase-<UTC time>-<8 hex>`.
fn new_request_id() -> String {
    format!(
        "erase-{}",
        crate::commands::identity::new_command_id().trim_start_matches("cmd-")
    )
}

async fn insert<T>(ch: &clickhouse::Client, table: &str, rows: &[T]) -> PResult<()>
where
    T: clickhouse::Row + serde::Serialize + for<'a> clickhouse::RowWrite<Value<'a> = T>,
{
    Ok(socialcrm_pipeline::privacy::insert(ch, table, rows).await?)
}

/// A recorded and sent request.
#[derive(Debug)]
pub struct Requested {
    pub request_id: String,
    pub subject: Subject,
}

/// Resolves the subject, records the request and sends it to the identity writer.
pub async fn request(cfg: &Config, subject: &str, requested_by: &str) -> PResult<Requested> {
    let q = crate::api::queries(cfg).map_err(|e| PrivacyError::BadRequest(format!("{e:#}")))?;
    let s = resolve(cfg, &q, subject).await?;
    let hasher = SuppressionHasher::new(&cfg.privacy);
    let request_id = new_request_id();
    let now = Utc::now();
    let ch = &q.client;
    let mut keys: Vec<ErasureKeyRow> = s
        .keys
        .iter()
        .map(|k| ErasureKeyRow {
            request_id: request_id.clone(),
            kind: "id".into(),
            key: k.clone(),
            hash: hasher.hash_key(k),
        })
        .collect();
    keys.extend(s.customer_ids.iter().map(|c| ErasureKeyRow {
        request_id: request_id.clone(),
        kind: "customer".into(),
        key: c.clone(),
        hash: String::new(),
    }));
    insert(ch, "erasure_keys", &keys).await?;
    let row = ErasureRow {
        request_id: request_id.clone(),
        status: Status::Requested.as_str().into(),
        version: Status::Requested.version(now),
        requested_at: now.timestamp() as u32,
        updated_at: now.timestamp() as u32,
        requested_by: requested_by.to_string(),
        subject: s.recorded_as.clone(),
        customer_ids: s.customer_ids.clone(),
        identifiers: s.keys.len() as u32,
        message: "sent to the identity writer".into(),
        ..ErasureRow::default()
    };
    insert(ch, "erasures", &[row]).await?;
    let cmd = EraseCommand {
        schema_version: SCHEMA_VERSION,
        request_id: request_id.clone(),
        action: PrivacyAction::Erase,
        customer_ids: s.customer_ids.clone(),
        identifiers: s
            .keys
            .iter()
            .map(|k| HashedIdentifier {
                id_type: k.split(':').next().unwrap_or_default().to_string(),
                hash: hasher.hash_key(k),
            })
            .collect(),
        salt_id: hasher.salt_id(),
        requested_by: requested_by.to_string(),
        subject: s.recorded_as.clone(),
        requested_at: now,
    };
    send_privacy_command(cfg, &request_id, &cmd).await?;
    tracing::info!(request = %request_id, customers = s.customer_ids.len(), identifiers = s.keys.len(), "erasure requested");
    Ok(Requested {
        request_id,
        subject: s,
    })
}

/// Longest `reason` of a lift, in characters.
pub const MAX_LIFT_REASON_CHARS: usize = 500;

/// Lifts the suppression of an erased identifier (`type:value`) from now on:
/// records who, when and why in `crm.suppression_lifts` (`requested`) and sends an
/// `unsuppress` command to the identity writer, ordered with the erasures on
/// `crm.privacy.commands`. Events that occurred after the lift are accepted again;
/// older ones stay dropped, and the erased data stays erased (docs/privacy.md).
pub async fn unsuppress(
    cfg: &Config,
    subject: &str,
    requested_by: &str,
    reason: &str,
) -> PResult<LiftRow> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(PrivacyError::BadRequest(
            "give a reason for lifting the suppression (e.g. `consented again on 2026-12-01, ticket 4711`); it is recorded".into(),
        ));
    }
    if reason.chars().count() > MAX_LIFT_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(PrivacyError::BadRequest(format!(
            "the reason must be at most {MAX_LIFT_REASON_CHARS} characters, without control characters"
        )));
    }
    let (t, v) = subject.split_once(':').ok_or_else(|| {
        PrivacyError::BadRequest(format!(
            "`{subject}`: give the identifier as type:value (e.g. email:ann@example.com)"
        ))
    })?;
    let q = crate::api::queries(cfg).map_err(|e| PrivacyError::BadRequest(format!("{e:#}")))?;
    let id = socialcrm_schemas::privacy::lookup_identifier(
        cfg.privacy.hasher().as_ref(),
        &q.normalizer,
        t,
        v,
    )
    .map_err(|e| PrivacyError::BadRequest(format!("`{subject}`: {e}")))?;
    let hasher = SuppressionHasher::new(&cfg.privacy);
    let key = id.key();
    let hash = hasher.hash_key(&key);
    let salt_id = hasher.salt_id();
    let ch = cfg.clickhouse.client();
    let suppressed: u64 = ch
        .query("SELECT count() FROM suppressions WHERE hash = ? AND salt_id = ?")
        .bind(&hash)
        .bind(&salt_id)
        .fetch_one()
        .await?;
    if suppressed == 0 {
        return Err(PrivacyError::NotFound(format!(
            "`{subject}` is not suppressed (no erasure under this privacy.salt names it): nothing to lift"
        )));
    }
    let now = Utc::now();
    let request_id = format!(
        "lift-{}",
        crate::commands::identity::new_command_id().trim_start_matches("cmd-")
    );
    let id_type = key.split(':').next().unwrap_or_default().to_string();
    let row = LiftRow {
        hash: hash.clone(),
        id_type: id_type.clone(),
        request_id: request_id.clone(),
        salt_id: salt_id.clone(),
        status: "requested".into(),
        lifted_at: now.timestamp() as u32,
        requested_by: requested_by.to_string(),
        reason: reason.to_string(),
        version: Status::Requested.version(now),
    };
    insert(&ch, "suppression_lifts", std::slice::from_ref(&row)).await?;
    let cmd = EraseCommand {
        schema_version: SCHEMA_VERSION,
        request_id: request_id.clone(),
        action: PrivacyAction::Unsuppress,
        customer_ids: Vec::new(),
        identifiers: vec![HashedIdentifier {
            id_type,
            hash: hash.clone(),
        }],
        salt_id,
        requested_by: requested_by.to_string(),
        subject: hash,
        requested_at: now,
    };
    send_privacy_command(cfg, &request_id, &cmd).await?;
    tracing::info!(request = %request_id, id_type = %row.id_type, requested_by, "suppression lift requested");
    Ok(row)
}

/// The status rows of lift requests folded into one per request: the newest
/// status, with the reason and who asked from the requester's row.
fn fold_lifts(rows: Vec<LiftRow>) -> Vec<LiftRow> {
    let mut by_id: std::collections::BTreeMap<String, LiftRow> = Default::default();
    for r in rows {
        match by_id.get_mut(&r.request_id) {
            None => {
                by_id.insert(r.request_id.clone(), r);
            }
            Some(prev) => {
                let (newer, mut older) = if r.version > prev.version {
                    (r, std::mem::take(prev))
                } else {
                    (std::mem::take(prev), r)
                };
                *prev = newer;
                if prev.reason.is_empty() {
                    prev.reason = std::mem::take(&mut older.reason);
                }
                if prev.requested_by.is_empty() {
                    prev.requested_by = older.requested_by;
                }
            }
        }
    }
    let mut out: Vec<LiftRow> = by_id.into_values().collect();
    out.sort_by(|a, b| {
        b.lifted_at
            .cmp(&a.lifted_at)
            .then(a.request_id.cmp(&b.request_id))
    });
    out
}

/// The current state of a lift request (`requested` or `applied`).
pub async fn lift_status(ch: &clickhouse::Client, request_id: &str) -> PResult<Option<LiftRow>> {
    let rows: Vec<LiftRow> = ch
        .query("SELECT ?fields FROM suppression_lifts FINAL WHERE request_id = ?")
        .bind(request_id)
        .fetch_all()
        .await?;
    Ok(fold_lifts(rows).into_iter().next())
}

/// Waits until the identity writer applied a lift; `None` on timeout.
pub async fn wait_lift_applied(
    ch: &clickhouse::Client,
    request_id: &str,
    wait: Duration,
) -> PResult<Option<LiftRow>> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(r) = lift_status(ch, request_id).await? {
            if r.status == "applied" {
                return Ok(Some(r));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every lift, newest first (one row per request, its current status).
pub async fn lifts(cfg: &Config) -> PResult<Vec<LiftRow>> {
    let rows: Vec<LiftRow> = cfg
        .clickhouse
        .client()
        .query("SELECT ?fields FROM suppression_lifts FINAL")
        .fetch_all()
        .await?;
    Ok(fold_lifts(rows))
}

/// Sends one keyed message and waits for Kafka's acknowledgement.
/// Sends an erase or unsuppress command on `crm.privacy.commands`, keyed by its request.
async fn send_privacy_command(cfg: &Config, request_id: &str, cmd: &EraseCommand) -> PResult<()> {
    let payload = serde_json::to_vec(cmd)
        .map_err(|e| PrivacyError::Unavailable(format!("encoding the request: {e}")))?;
    send(
        cfg,
        &cfg.kafka.topics.privacy_commands,
        request_id,
        &payload,
    )
    .await
}

pub async fn send(cfg: &Config, topic: &str, key: &str, payload: &[u8]) -> PResult<()> {
    send_opt(cfg, topic, key, Some(payload)).await
}

/// [`send`] of a value or (`None`) a tombstone.
async fn send_opt(cfg: &Config, topic: &str, key: &str, payload: Option<&[u8]>) -> PResult<()> {
    let producer: FutureProducer = cfg
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| PrivacyError::Unavailable(format!("creating the Kafka producer: {e}")))?;
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
    if let Some(p) = payload {
        record = record.payload(p);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| PrivacyError::Unavailable(format!("sending to {topic}: {e}")))?;
    Ok(())
}

/// Folds the status rows of one request (oldest first) into its current state:
/// the newest status, with what only the requester knows (who asked, the subject)
/// and every customer id any step named.
fn fold(rows: Vec<ErasureRow>) -> Option<ErasureRow> {
    let mut out: Option<ErasureRow> = None;
    for r in rows {
        out = Some(match out {
            None => r,
            Some(prev) => {
                let mut ids = prev.customer_ids.clone();
                ids.extend(
                    r.customer_ids
                        .iter()
                        .filter(|c| !prev.customer_ids.contains(c))
                        .cloned(),
                );
                ErasureRow {
                    requested_by: if r.requested_by.is_empty() {
                        prev.requested_by
                    } else {
                        r.requested_by
                    },
                    subject: if r.subject.is_empty() {
                        prev.subject
                    } else {
                        r.subject
                    },
                    identifiers: prev.identifiers.max(r.identifiers),
                    customer_ids: ids,
                    ..r
                }
            }
        });
    }
    out
}

/// Unlink and split commands stay on the compacted `crm.identity.commands` for
/// good, with the identifiers they name. Each one that names an erased key is
/// rewritten without it (same key: compaction keeps the new value), or withdrawn
/// with a tombstone when one of its sides is left empty. Answers (rewritten,
/// withdrawn).
pub async fn scrub_commands(cfg: &Config, keys: &BTreeSet<String>) -> PResult<(usize, usize)> {
    let topic = cfg.kafka.topics.commands.clone();
    let kafka = cfg.kafka.clone();
    let latest = tokio::task::spawn_blocking(move || read_compacted(&kafka, &topic))
        .await
        .map_err(|e| PrivacyError::Unavailable(format!("reading the commands topic: {e}")))??;
    let (mut rewritten, mut withdrawn) = (0, 0);
    for (key, payload) in latest {
        let Some(payload) = payload else { continue };
        let Ok(mut cmd) = serde_json::from_slice::<IdentityCommand>(&payload) else {
            continue; // not a command (the pipeline sent it to crm.dlq)
        };
        let named = |ids: &[Identifier]| ids.iter().any(|i| keys.contains(&i.key()));
        if !named(&cmd.identifiers) && !named(&cmd.others) {
            continue;
        }
        cmd.identifiers.retain(|i| !keys.contains(&i.key()));
        cmd.others.retain(|i| !keys.contains(&i.key()));
        let topic = &cfg.kafka.topics.commands;
        if cmd.identifiers.is_empty() || cmd.others.is_empty() {
            send_opt(cfg, topic, &key, None).await?;
            withdrawn += 1;
        } else {
            let payload = serde_json::to_vec(&cmd)
                .map_err(|e| PrivacyError::Unavailable(format!("encoding a command: {e}")))?;
            send_opt(cfg, topic, &key, Some(&payload)).await?;
            rewritten += 1;
        }
    }
    Ok((rewritten, withdrawn))
}

/// The latest value of every key of a (compacted) topic, read from the beginning
/// to the end it had when called.
fn read_compacted(
    kafka: &socialcrm_schemas::kafka::KafkaConfig,
    topic: &str,
) -> PResult<std::collections::BTreeMap<String, Option<Vec<u8>>>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let err = |e: rdkafka::error::KafkaError| PrivacyError::Unavailable(format!("{topic}: {e}"));
    let c: BaseConsumer = kafka
        .client_config()
        .set("group.id", "socialcrm-privacy-scrub")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(err)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(err)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .map_err(err)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .map_err(err)?;
            ends.insert(p.id(), high);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if ends.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl).map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(PrivacyError::Unavailable(format!(
                "{topic}: not read to its end within 60 s"
            )));
        }
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.map_err(err)?;
        if let Some(k) = m.key() {
            out.insert(
                String::from_utf8_lossy(k).into_owned(),
                m.payload().map(<[u8]>::to_vec),
            );
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}

/// The current state of a request.
pub async fn status(ch: &clickhouse::Client, request_id: &str) -> PResult<Option<ErasureRow>> {
    let rows: Vec<ErasureRow> = ch
        .query("SELECT ?fields FROM erasures WHERE request_id = ? ORDER BY version")
        .bind(request_id)
        .fetch_all()
        .await?;
    Ok(fold(rows))
}

/// Every request, newest first.
pub async fn list(cfg: &Config) -> PResult<Vec<ErasureRow>> {
    let rows: Vec<ErasureRow> = cfg
        .clickhouse
        .client()
        .query("SELECT ?fields FROM erasures ORDER BY request_id, version")
        .fetch_all()
        .await?;
    let mut out: Vec<ErasureRow> = Vec::new();
    let mut group: Vec<ErasureRow> = Vec::new();
    for r in rows {
        if group.last().is_some_and(|g| g.request_id != r.request_id) {
            out.extend(fold(std::mem::take(&mut group)));
        }
        group.push(r);
    }
    out.extend(fold(group));
    out.sort_by(|a, b| {
        b.requested_at
            .cmp(&a.requested_at)
            .then(a.request_id.cmp(&b.request_id))
    });
    Ok(out)
}

fn rank(status: &str) -> u8 {
    match status {
        "requested" => 1,
        "applied" => 2,
        "completed" => 3,
        "failed" => 4,
        "verified" => 5,
        _ => 0,
    }
}

/// Waits until the identity writer applied the request; `None` on timeout.
pub async fn wait_applied(
    ch: &clickhouse::Client,
    request_id: &str,
    wait: Duration,
) -> PResult<Option<ErasureRow>> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(r) = status(ch, request_id).await? {
            if rank(&r.status) >= rank("applied") {
                return Ok(Some(r));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn record(
    ch: &clickhouse::Client,
    base: &ErasureRow,
    st: Status,
    message: String,
) -> PResult<ErasureRow> {
    let now = Utc::now();
    let row = ErasureRow {
        status: st.as_str().into(),
        version: st.version(now),
        updated_at: now.timestamp() as u32,
        message,
        ..base.clone()
    };
    insert(ch, "erasures", std::slice::from_ref(&row)).await?;
    Ok(row)
}

/// Counts the person's rows per table (the plans' `rows` conditions).
async fn count_rows(ch: &clickhouse::Client, db: &str, request_id: &str) -> PResult<Vec<u64>> {
    let mut out = Vec::new();
    for p in plans(db)? {
        let q = ch.query(&format!(
            "SELECT count() FROM {db}.{} WHERE {}",
            p.table, p.rows
        ));
        let n = TablePlan::binds(&p.rows);
        out.push(bind_n(q, request_id, n).fetch_one::<u64>().await?);
    }
    Ok(out)
}

/// Mutations of this request not yet done.
async fn pending_mutations(ch: &clickhouse::Client, db: &str, request_id: &str) -> PResult<u64> {
    Ok(ch
        .query("SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0 AND position(command, ?) > 0")
        .bind(db)
        .bind(request_id)
        .fetch_one::<u64>()
        .await?)
}

/// After the writer applied the request: deletes the person's rows from every
/// table, waits for the mutations (at most `wait`), verifies by counting, and
/// records each step. Safe to run again on a request in any state.
pub async fn finish(cfg: &Config, request_id: &str, wait: Duration) -> PResult<ErasureRow> {
    let ch = cfg.clickhouse.client();
    let db = cfg.clickhouse.database.as_str();
    let mut row = status(&ch, request_id)
        .await?
        .ok_or_else(|| PrivacyError::NotFound(format!("no erasure request {request_id}")))?;
    if rank(&row.status) < rank("applied") {
        return Err(PrivacyError::BadRequest(format!(
            "erasure {request_id} is `{}`: the identity writer has not applied it yet (is the pipeline running?)",
            row.status
        )));
    }
    if row.status == "verified" {
        return Ok(row);
    }
    // customer ids the writer erased that the requester did not know
    let known: Vec<String> = ch
        .query("SELECT key FROM erasure_keys WHERE request_id = ? AND kind = 'customer'")
        .bind(request_id)
        .fetch_all()
        .await?;
    let more: Vec<ErasureKeyRow> = row
        .customer_ids
        .iter()
        .filter(|c| !known.contains(c))
        .map(|c| ErasureKeyRow {
            request_id: request_id.to_string(),
            kind: "customer".into(),
            key: c.clone(),
            hash: String::new(),
        })
        .collect();
    if !more.is_empty() {
        insert(&ch, "erasure_keys", &more).await?;
    }
    // the events to delete, by id (events_by_id holds no identifiers of its own)
    let plans = plans(db)?;
    let ev = plans
        .iter()
        .find(|p| p.table == "events")
        .ok_or_else(|| PrivacyError::Unavailable("no plan for events".into()))?;
    let collect = ch.query(&format!(
        "INSERT INTO {db}.erasure_keys SELECT ?, 'event', event_id, '' FROM {db}.events WHERE {}",
        ev.rows
    ));
    bind_n(
        collect.bind(request_id),
        request_id,
        TablePlan::binds(&ev.rows),
    )
    .execute()
    .await?;
    let before = count_rows(&ch, db, request_id).await?;
    let tables: Vec<String> = plans.iter().map(|p| p.table.clone()).collect();
    row.tables = tables.clone();
    row.rows_before = before.clone();
    let mut left = before.clone();
    let deadline = Instant::now() + wait;
    for round in 0..3 {
        for (p, n) in plans.iter().zip(&left) {
            if *n == 0 {
                continue;
            }
            bind_n(
                ch.query(&p.mutation),
                request_id,
                TablePlan::binds(&p.mutation),
            )
            .execute()
            .await?;
        }
        loop {
            let pending = pending_mutations(&ch, db, request_id).await?;
            if pending == 0 {
                break;
            }
            if Instant::now() >= deadline {
                row.rows_after = Vec::new();
                return record(
                    &ch,
                    &row,
                    Status::Applied,
                    format!("{pending} mutations still running; run `socialcrm privacy erase --resume {request_id}` later"),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if round == 0 {
            row = record(&ch, &row, Status::Completed, "mutations done".into()).await?;
        }
        left = count_rows(&ch, db, request_id).await?;
        if left.iter().all(|n| *n == 0) {
            break;
        }
        tracing::warn!(request = %request_id, ?left, "rows left after the erasure (written meanwhile?); deleting again");
    }
    row.rows_after = left.clone();
    if left.iter().any(|n| *n > 0) {
        return record(
            &ch,
            &row,
            Status::Failed,
            "rows are left (see rows_after); run the erasure again with --resume".into(),
        )
        .await;
    }
    let keys: Vec<String> = ch
        .query("SELECT key FROM erasure_keys WHERE request_id = ? AND kind = 'id'")
        .bind(request_id)
        .fetch_all()
        .await?;
    let (rewritten, withdrawn) = scrub_commands(cfg, &keys.into_iter().collect()).await?;
    let removed: u64 = before.iter().sum();
    let row = record(
        &ch,
        &row,
        Status::Verified,
        format!(
            "{removed} rows deleted or blanked, every table counted 0 afterwards; identity commands rewritten {rewritten}, withdrawn {withdrawn}"
        ),
    )
    .await?;
    // the keys have served: nothing of the person is left but hashes
    ch.query(&format!(
        "ALTER TABLE {db}.erasure_keys DELETE WHERE request_id = ?"
    ))
    .bind(request_id)
    .execute()
    .await?;
    while pending_mutations(&ch, db, request_id).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(row)
}

/// Everything stored about a person, as JSON (right of access).
pub async fn export(cfg: &Config, subject: &str) -> PResult<Value> {
    let q = crate::api::queries(cfg).map_err(|e| PrivacyError::BadRequest(format!("{e:#}")))?;
    let s = resolve(cfg, &q, subject).await?;
    let Some(p) = &s.profile else {
        return Err(PrivacyError::NotFound(format!(
            "no profile has {subject} (nothing is stored under it, or it was erased)"
        )));
    };
    let ch = &q.client;
    let cids = &s.customer_ids;
    let rows = |sql: String| {
        let mut query = ch.query(&sql);
        for c in cids {
            query = query.bind(c.as_str());
        }
        query
    };
    let list = format!("({})", vec!["?"; cids.len().max(1)].join(", "));
    let json_rows = |bytes: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let events = rows(format!(
        "SELECT event_id, customer_id, source, channel, type, name, occurred_at, received_at, \
         identifier_types, identifier_values, target_types, target_values, traits, properties, \
         context, revenue_amount, revenue_currency FROM v_events WHERE customer_id IN {list} \
         ORDER BY occurred_at, event_id"
    ))
    .fetch_bytes("JSONEachRow")?
    .collect()
    .await?;
    let identities = rows(format!(
        "SELECT id_type, id_value, customer_id, first_seen, updated_at FROM v_identities \
         WHERE customer_id IN {list} ORDER BY id_type, id_value"
    ))
    .fetch_bytes("JSONEachRow")?
    .collect()
    .await?;
    let scores = rows(format!(
        "SELECT * FROM scores WHERE customer_id IN {list} ORDER BY scored_at, run_id"
    ))
    .fetch_bytes("JSONEachRow")?
    .collect()
    .await?;
    let mut events = json_rows(&events);
    for e in &mut events {
        // JSON objects are stored as text: give them back as objects
        for k in ["traits", "properties", "context"] {
            let parsed = e[k]
                .as_str()
                .filter(|t| !t.is_empty())
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            e[k] = parsed.unwrap_or_else(|| json!({}));
        }
    }
    let ledger = q.ledger(p).await?;
    Ok(json!({
        "subject": subject,
        "customer_id": p.customer_id,
        "generated_at": Utc::now().to_rfc3339(),
        "profile": profile_json(p),
        "identifiers": json_rows(&identities),
        "events": events,
        "identity_ledger": ledger,
        "scores": json_rows(&scores),
        "stored_where": {
            "docs": "docs/privacy.md#what-is-stored-where",
            "tables_with_personal_data": ERASED_TABLES,
            "tables_without": KEPT_TABLES.iter().map(|(t, why)| json!({"table": t, "holds": why})).collect::<Vec<_>>(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table the migrations create is either erased or listed as kept, so
    /// a new table cannot be forgotten by erasures.
    #[test]
    fn every_table_is_erased_or_known_to_hold_nothing_personal() {
        let mut created = BTreeSet::new();
        for m in socialcrm_schemas::migrations::MIGRATIONS {
            for line in m.sql.lines() {
                let l = line.trim();
                for prefix in [
                    "CREATE TABLE IF NOT EXISTS {db}.",
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.",
                ] {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        created.insert(name);
                    }
                }
            }
        }
        assert!(
            created.contains("events") && created.contains("erasures"),
            "{created:?}"
        );
        let known: BTreeSet<String> = ERASED_TABLES
            .iter()
            .map(|t| t.to_string())
            .chain(KEPT_TABLES.iter().map(|(t, _)| t.to_string()))
            .collect();
        let missing: Vec<&String> = created.difference(&known).collect();
        assert!(
            missing.is_empty(),
            "tables no erasure handles: {missing:?}; add them to ERASED_TABLES (with a plan) or KEPT_TABLES"
        );
        let plans = plans("crm").expect("src/erasure.sql parses");
        let plan_tables: Vec<&str> = plans.iter().map(|p| p.table.as_str()).collect();
        assert_eq!(plan_tables, ERASED_TABLES);
    }

    #[test]
    fn a_request_shows_its_newest_status_and_what_the_requester_recorded() {
        let requested = ErasureRow {
            request_id: "r".into(),
            status: "requested".into(),
            requested_by: "cli".into(),
            subject: "sha256:ab".into(),
            customer_ids: vec!["c_1".into()],
            identifiers: 2,
            ..ErasureRow::default()
        };
        let applied = ErasureRow {
            status: "applied".into(),
            requested_by: String::new(),
            subject: String::new(),
            customer_ids: vec!["c_2".into(), "c_1".into()],
            identifiers: 3,
            ..requested.clone()
        };
        let now = fold(vec![requested, applied]).expect("state");
        assert_eq!(now.status, "applied");
        assert_eq!(
            (now.requested_by.as_str(), now.subject.as_str()),
            ("cli", "sha256:ab")
        );
        assert_eq!(now.customer_ids, vec!["c_1", "c_2"]);
        assert_eq!(now.identifiers, 3);
        assert_eq!(fold(Vec::new()), None);
    }

    #[test]
    fn mutations_name_the_request_and_no_array_literal() {
        for p in plans("crm").expect("src/erasure.sql parses") {
            assert!(TablePlan::binds(&p.rows) > 0, "{}", p.table);
            // every placeholder expanded
            assert!(
                !p.rows.contains('{') && !p.mutation.contains('{'),
                "{}",
                p.mutation
            );
            // 18.16 blocks mutations for good on `IN [array]`
            assert!(!p.mutation.contains("IN ["), "{}", p.mutation);
            assert!(p
                .mutation
                .starts_with(&format!("ALTER TABLE crm.{} ", p.table)));
        }
        assert!(is_customer_id("c_0123456789abcdef"));
        assert!(!is_customer_id("c_xyz") && !is_customer_id("email:a@b.co"));
    }
}
