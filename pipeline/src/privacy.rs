//! Erasure and suppression in the identity writer (docs/privacy.md).
//!
//! An erasure request arrives on `crm.privacy.commands` ([`EraseCommand`]: customer
//! ids and salted hashes, no clear value) and is applied in order with the events:
//! the person's profile, retired ids and identifiers leave the graph, `erase`
//! entries go to the ledger and `crm.identity`, tombstones to `crm.profiles`, and
//! the hashes join the suppression list (in the store with the batch, and in
//! ClickHouse `crm.suppressions`). The batch then records the erasure as `applied`
//! in `crm.erasures`, with the stored keys in `crm.erasure_keys`; the requester
//! (`socialcrm privacy erase`, the HTTP API) deletes the ClickHouse rows after that.
//!
//! From then on an event that carries a suppressed identifier anywhere (actor,
//! claims, target) is dropped before it is resolved: counted, not stored, not sent
//! to the dead-letter topic, so a replay or a backfill cannot bring the person back.
//!
//! A lift (`socialcrm privacy unsuppress`, an `unsuppress` command on the same
//! topic) lets through the events of a suppressed identifier that occurred after
//! the lift; older ones stay dropped. A later erasure of the identifier ends it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use socialcrm_schemas::messages::{EraseCommand, IdentityAction, IdentityMessage, PrivacyAction};
use socialcrm_schemas::privacy::PrivacyConfig;
use socialcrm_schemas::retry::{retry, RetryPolicy};
use socialcrm_schemas::suppression::{
    event_identifiers, lift_admits, raw_identifiers, SuppressionHasher, SuppressionList,
};
use socialcrm_schemas::{CanonicalEvent, Identifier, Normalizer};

use crate::identity::{ledger_entry, link_key, Cause, Graph};
use crate::rows::{secs, EventRow};
use crate::run::PipelineError;

/// A row of `crm.suppressions`.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct SuppressionRow {
    pub hash: String,
    pub id_type: String,
    pub request_id: String,
    pub salt_id: String,
    pub added_at: u32,
    pub version: u64,
}

/// A row of `crm.suppression_lifts`: one status (`requested`, `applied`) of one
/// lifted identifier hash.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct LiftRow {
    pub hash: String,
    pub id_type: String,
    pub request_id: String,
    pub salt_id: String,
    pub status: String,
    pub lifted_at: u32,
    pub requested_by: String,
    pub reason: String,
    pub version: u64,
}

/// A row of `crm.erasure_keys`: a stored identifier key (`kind` `id`) or an event
/// id (`event`) of an erasure in progress.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct ErasureKeyRow {
    pub request_id: String,
    pub kind: String,
    pub key: String,
    pub hash: String,
}

/// A row of `crm.erasures`: one status of one request (the newest version wins).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct ErasureRow {
    pub request_id: String,
    pub status: String,
    pub version: u64,
    pub requested_at: u32,
    pub updated_at: u32,
    pub requested_by: String,
    /// Suppression hash of the identifier asked for, or the customer id.
    pub subject: String,
    pub customer_ids: Vec<String>,
    pub identifiers: u32,
    pub tables: Vec<String>,
    pub rows_before: Vec<u64>,
    pub rows_after: Vec<u64>,
    pub message: String,
}

/// The steps of an erasure, in order. `failed` (rows left after the deletion)
/// ranks below `verified` so that a later successful attempt wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Recorded by the requester; the command is on its way to the writer.
    Requested = 1,
    /// The writer applied it: graph, Kafka, suppression list.
    Applied = 2,
    /// The deleting mutations finished.
    Completed = 3,
    /// Rows were left after the deletion (see `rows_after`); run it again.
    Failed = 4,
    /// Every table was counted: nothing of the person is left.
    Verified = 5,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Applied => "applied",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Verified => "verified",
        }
    }

    /// The `version` of a status row written at `now`: later steps always win,
    /// whatever the writers' clocks (a replayed `applied` never hides `verified`).
    pub fn version(self, now: DateTime<Utc>) -> u64 {
        ((self as u64) << 44) | (now.timestamp_millis().max(0) as u64 & ((1 << 44) - 1))
    }
}

/// What the erasures of one batch changed (besides the graph).
#[derive(Debug, Default)]
pub struct BatchPrivacy {
    /// Customer ids erased (tombstoned on `crm.profiles`).
    pub customer_ids: BTreeSet<String>,
    /// Stored identifier keys erased: no row of theirs is written.
    pub keys: BTreeSet<String>,
    pub suppressions: Vec<SuppressionRow>,
    pub erasure_keys: Vec<ErasureKeyRow>,
    pub applied: Vec<ErasureRow>,
    /// Lifts applied in this batch (`applied` status rows).
    pub lifts: Vec<LiftRow>,
}

impl BatchPrivacy {
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.lifts.is_empty()
    }

    /// Writes the suppression list, the erasure keys, then the `applied` status
    /// (last: the requester starts deleting when it sees it), and applied lifts.
    pub async fn write(&self, ch: &clickhouse::Client) -> Result<(), clickhouse::error::Error> {
        insert(ch, "suppressions", &self.suppressions).await?;
        insert(ch, "erasure_keys", &self.erasure_keys).await?;
        insert(ch, "erasures", &self.applied).await?;
        insert(ch, "suppression_lifts", &self.lifts).await
    }
}

/// Inserts `rows` into `table` (nothing when there are none).
pub async fn insert<T>(
    ch: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::Row + Serialize + for<'a> clickhouse::RowWrite<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut ins = ch.insert::<T>(table).await?;
    for r in rows {
        ins.write(r).await?;
    }
    ins.end().await
}

/// The writer's side of privacy for one run.
#[derive(Debug, Clone)]
pub struct Privacy {
    pub hasher: SuppressionHasher,
    /// `crm.privacy.commands`.
    pub topic: String,
}

impl Privacy {
    pub fn new(cfg: &PrivacyConfig, topic: &str) -> Privacy {
        Privacy {
            hasher: SuppressionHasher::new(cfg),
            topic: topic.to_string(),
        }
    }

    /// `occurred_at` in Unix seconds (`None`: unknown, so a lift does not apply).
    fn is_suppressed(&self, graph: &Graph, id: &Identifier, occurred_at: Option<i64>) -> bool {
        let key = self.hasher.stored_key(id);
        if graph.lifted.is_empty() {
            // a suppressed identifier is never in the graph: known ones need no hash
            return !graph.ids.contains_key(&key)
                && graph.suppressed.contains(&self.hasher.hash_key(&key));
        }
        // a lifted identifier enters the graph again with its new events, while its
        // old events stay dropped: while lifts exist, every identifier is hashed
        let hash = self.hasher.hash_key(&key);
        match graph.lifted.get(&hash) {
            Some(l) => !occurred_at.is_some_and(|at| lift_admits(Some(l), at)),
            None => !graph.ids.contains_key(&key) && graph.suppressed.contains(&hash),
        }
    }

    /// True when a validated event (identifiers normalised, not yet hashed)
    /// carries a suppressed identifier (one lifted before the event occurred
    /// counts as suppressed no more).
    pub fn suppressed(&self, graph: &Graph, ev: &CanonicalEvent) -> bool {
        let at = Some(ev.occurred_at.timestamp());
        !graph.suppressed.is_empty()
            && event_identifiers(ev).any(|i| self.is_suppressed(graph, i, at))
    }

    /// The same for a payload that failed validation (it would go to the
    /// dead-letter topic): the identifiers it names, read leniently, and its
    /// `occurred_at` if it has a readable one.
    pub fn raw_suppressed(&self, graph: &Graph, payload: &[u8], normalizer: &Normalizer) -> bool {
        if graph.suppressed.is_empty() {
            return false;
        }
        let at = if graph.lifted.is_empty() {
            None
        } else {
            serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| {
                    v.get("occurred_at")
                        .and_then(|t| t.as_str())
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                })
                .map(|t| t.timestamp())
        };
        raw_identifiers(payload, normalizer)
            .iter()
            .any(|i| self.is_suppressed(graph, i, at))
    }

    /// Applies a lift (`unsuppress` command): each listed hash that is suppressed
    /// lets through events that occurred after `requested_at`.
    fn lift(
        &self,
        cmd: &EraseCommand,
        graph: &mut Graph,
        batch: &mut BatchPrivacy,
        now: DateTime<Utc>,
    ) {
        let at = cmd.requested_at.timestamp();
        for h in &cmd.identifiers {
            if !graph.suppressed.contains(&h.hash) {
                tracing::info!(request = %cmd.request_id, id_type = %h.id_type, "lift of an identifier that is not suppressed: nothing to lift");
                continue;
            }
            let l = graph.lifted.entry(h.hash.clone()).or_insert(at);
            *l = (*l).max(at);
            batch.lifts.push(LiftRow {
                hash: h.hash.clone(),
                id_type: h.id_type.clone(),
                request_id: cmd.request_id.clone(),
                salt_id: cmd.salt_id.clone(),
                status: "applied".into(),
                lifted_at: secs(cmd.requested_at),
                requested_by: cmd.requested_by.clone(),
                reason: String::new(),
                version: Status::Applied.version(now),
            });
        }
        metrics::counter!("socialcrm_pipeline_suppression_lifts_total").increment(1);
    }

    /// Applies an erasure request. Rows and ledger entries that earlier events of
    /// the same batch produced for the person are taken out of `events` and
    /// `ledger`; the `erase` entries are added to `ledger`. An invalid request (or
    /// one hashed under another salt) is an error for the dead-letter topic.
    pub fn apply(
        &self,
        payload: &[u8],
        graph: &mut Graph,
        batch: &mut BatchPrivacy,
        events: &mut Vec<EventRow>,
        ledger: &mut Vec<IdentityMessage>,
        now: DateTime<Utc>,
    ) -> Result<EraseCommand, String> {
        let cmd: EraseCommand =
            serde_json::from_slice(payload).map_err(|e| format!("not an erase command: {e}"))?;
        let salt_id = self.hasher.salt_id();
        if cmd.salt_id != salt_id {
            return Err(format!(
                "{} request {} was hashed under another privacy.salt (salt_id {}, this writer's {salt_id}): send it again from a process with this writer's config",
                match cmd.action {
                    PrivacyAction::Erase => "erase",
                    PrivacyAction::Unsuppress => "unsuppress",
                },
                cmd.request_id,
                cmd.salt_id
            ));
        }
        if cmd.action == PrivacyAction::Unsuppress {
            self.lift(&cmd, graph, batch, now);
            return Ok(cmd);
        }
        let cause = Cause {
            event_id: format!("command:{}", cmd.request_id),
            fp: link_key(&[format!("erase:{}", cmd.request_id)]),
            at: cmd.requested_at,
        };
        let wanted: BTreeSet<&str> = cmd.identifiers.iter().map(|h| h.hash.as_str()).collect();
        let mut cids: Vec<String> = Vec::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        let mut entries: Vec<IdentityMessage> = Vec::new();
        let mut erase = |graph: &mut Graph, cid: &str, keys: &mut BTreeSet<String>| {
            if let Some((e, l)) = graph.erase_profile(cid, &cause) {
                cids.extend(e.customer_ids);
                keys.extend(e.keys);
                entries.extend(l);
            }
        };
        // an erasure older than a lift of one of its identifiers (a rebuilt writer
        // re-reading the compacted topic): the person's events from before the lift
        // were dropped, so what the graph holds now came after the lift; it stays
        let erased_at = cmd.requested_at.timestamp();
        let superseded = cmd
            .identifiers
            .iter()
            .any(|h| graph.lifted.get(&h.hash).is_some_and(|l| *l >= erased_at));
        for c in cmd.customer_ids.iter().filter(|_| !superseded) {
            if let Some(live) = graph.live_customer(c) {
                erase(graph, &live, &mut keys);
            }
        }
        // identifiers the requester saw that are elsewhere now (or a writer whose
        // customer ids differ, e.g. rebuilt): found by hashing the graph's keys
        let found: BTreeSet<String> = keys.iter().map(|k| self.hasher.hash_key(k)).collect();
        if !superseded && wanted.iter().any(|h| !found.contains(*h)) {
            let more: BTreeSet<String> = graph
                .ids
                .iter()
                .filter(|(k, r)| {
                    !r.customer_id.is_empty() && wanted.contains(self.hasher.hash_key(k).as_str())
                })
                .map(|(_, r)| r.customer_id.clone())
                .collect();
            for c in more {
                erase(graph, &c, &mut keys);
            }
        }
        // the requester's ids that the graph did not hold still get an entry (and
        // a tombstone): downstream services may know them
        for c in cmd.customer_ids.iter().filter(|_| !superseded) {
            if !cids.contains(c) {
                entries.push(ledger_entry(
                    &cause,
                    IdentityAction::Erase,
                    c,
                    None,
                    None,
                    Some(("erasure", "erased (not in the identity graph)".to_string())),
                ));
                cids.push(c.clone());
            }
        }

        // this batch's own rows for the person go too
        let gone = |c: &str| cids.iter().any(|x| x == c);
        events.retain(|e| !gone(&e.customer_id) && !keys.contains(&e.primary_id));
        ledger.retain(|m| {
            !gone(&m.customer_id)
                && !m.merged_customer_id.as_deref().is_some_and(gone)
                && !m
                    .identifier
                    .as_ref()
                    .is_some_and(|i| keys.contains(&i.key()))
        });
        ledger.extend(entries);

        let at = secs(now);
        let version = Status::Applied.version(now);
        let mut hashes: BTreeSet<(String, String)> = cmd
            .identifiers
            .iter()
            .map(|h| (h.hash.clone(), h.id_type.clone()))
            .collect();
        for k in &keys {
            let hash = self.hasher.hash_key(k);
            let id_type = k.split_once(':').map(|(t, _)| t).unwrap_or_default();
            hashes.insert((hash.clone(), id_type.to_string()));
            batch.erasure_keys.push(ErasureKeyRow {
                request_id: cmd.request_id.clone(),
                kind: "id".into(),
                key: k.clone(),
                hash,
            });
        }
        for (hash, id_type) in hashes {
            // an erasure after a lift ends it (a rebuilt writer replaying an older
            // erasure keeps the newer lift)
            if graph.lifted.get(&hash).is_some_and(|l| *l <= erased_at) {
                graph.lifted.remove(&hash);
            }
            if graph.suppressed.insert(hash.clone()) {
                graph.new_suppressed.push((hash.clone(), id_type.clone()));
            }
            batch.suppressions.push(SuppressionRow {
                hash,
                id_type,
                request_id: cmd.request_id.clone(),
                salt_id: salt_id.clone(),
                added_at: at,
                version,
            });
        }
        let message = if keys.is_empty() {
            format!(
                "the identity graph held none of the {} identifiers; they are suppressed",
                cmd.identifiers.len()
            )
        } else {
            format!(
                "{} identifiers and {} customer ids left the identity graph; suppressed",
                keys.len(),
                cids.len()
            )
        };
        batch.applied.push(ErasureRow {
            request_id: cmd.request_id.clone(),
            status: Status::Applied.as_str().into(),
            version,
            requested_at: secs(cmd.requested_at),
            updated_at: at,
            // every status row carries what the request said: ReplacingMergeTree
            // keeps only the newest row of a request
            requested_by: cmd.requested_by.clone(),
            subject: cmd.subject.clone(),
            customer_ids: cids.clone(),
            identifiers: keys.len().max(cmd.identifiers.len()) as u32,
            message,
            ..ErasureRow::default()
        });
        batch.customer_ids.extend(cids);
        batch.keys.extend(keys);
        metrics::counter!("socialcrm_pipeline_erasures_total").increment(1);
        Ok(cmd)
    }
}

/// A tombstone on the commands topic (key `command_id`): the command's wall goes.
pub fn withdraw_command(graph: &mut Graph, key: Option<&[u8]>) {
    let Some(key) = key else { return };
    let id = link_key(&[format!("wall:{}", String::from_utf8_lossy(key))]);
    if graph.walls.remove(id).is_some() {
        graph.dirty_walls.insert(id);
        tracing::info!(command = %String::from_utf8_lossy(key), "identity command withdrawn");
    }
}

/// At start: adds ClickHouse's suppression list to the store's (a writer rebuilt
/// with an empty store meets every erasure again before it reads any event), and
/// refuses a list made under another salt (its hashes could no longer match).
pub async fn load_suppressions(
    p: &Privacy,
    ch: &clickhouse::Client,
    graph: &mut Graph,
    policy: &RetryPolicy,
) -> Result<(), PipelineError> {
    let list = SuppressionList::new(p.hasher.clone());
    let (hashes, other) = retry(policy, "clickhouse_suppressions", || list.load(ch))
        .await
        .map_err(|e| {
            PipelineError::Config(format!(
                "reading crm.suppressions: {e} (has `socialcrm migrate` run?)"
            ))
        })?;
    if other > 0 {
        return Err(PipelineError::Config(format!(
            "crm.suppressions holds {other} hashes made under another privacy.salt: with this salt they never match, and erased people would come back; start with the salt they were made with"
        )));
    }
    let before = graph.suppressed.len();
    for h in hashes {
        if graph.suppressed.insert(h.clone()) {
            graph.new_suppressed.push((h, String::new()));
        }
    }
    let lifts = retry(policy, "clickhouse_suppression_lifts", || {
        list.load_lifts(ch)
    })
    .await
    .map_err(|e| {
        PipelineError::Config(format!(
            "reading crm.suppression_lifts: {e} (has `socialcrm migrate` run?)"
        ))
    })?;
    for (h, at) in lifts {
        if graph.suppressed.contains(&h) {
            let l = graph.lifted.entry(h).or_insert(at);
            *l = (*l).max(at);
        }
    }
    if p.hasher.uses_default_salt() && !graph.suppressed.is_empty() {
        tracing::warn!("privacy.salt is empty: the suppression list uses the public default salt, so anyone can test guessed identifiers against it; set privacy.salt (docs/privacy.md)");
    }
    tracing::info!(
        suppressed = graph.suppressed.len(),
        lifted = graph.lifted.len(),
        from_clickhouse = graph.suppressed.len() - before,
        "suppression list loaded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use crate::store::Store;
    use socialcrm_schemas::messages::{HashedIdentifier, PrivacyAction};
    use socialcrm_schemas::IdType;
    use std::collections::HashMap;

    fn ev(id: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        crate::testing::event(id, "2026-01-01T00:00:00Z", ids)
    }

    fn request(p: &Privacy, cids: &[&str], keys: &[&str]) -> Vec<u8> {
        encode(p, PrivacyAction::Erase, "erase-1", cids, keys, Utc::now())
    }

    fn command(p: &Privacy, action: PrivacyAction, id: &str, keys: &[&str], at: &str) -> Vec<u8> {
        encode(p, action, id, &[], keys, at.parse().expect("time"))
    }

    fn encode(
        p: &Privacy,
        action: PrivacyAction,
        id: &str,
        cids: &[&str],
        keys: &[&str],
        at: chrono::DateTime<Utc>,
    ) -> Vec<u8> {
        serde_json::to_vec(&EraseCommand {
            schema_version: 1,
            request_id: id.into(),
            action,
            customer_ids: cids.iter().map(|c| c.to_string()).collect(),
            identifiers: keys
                .iter()
                .map(|k| HashedIdentifier {
                    id_type: k.split(':').next().unwrap_or_default().into(),
                    hash: p.hasher.hash_key(k),
                })
                .collect(),
            salt_id: p.hasher.salt_id(),
            requested_by: "cli".into(),
            subject: String::new(),
            requested_at: at,
        })
        .expect("json")
    }

    #[test]
    fn a_lift_admits_new_events_only_and_a_later_erasure_ends_it() {
        let cfg = IdentityConfig::default();
        let p = Privacy::new(&PrivacyConfig::default(), "t");
        let n = Normalizer::new(None).expect("normalizer");
        let mut g = Graph::new(&cfg);
        let ann = |id: &str, at: &str| {
            crate::testing::event(
                id,
                at,
                &[(IdType::UserId, "ann"), (IdType::Email, "ann@x.io")],
            )
        };
        let mail =
            |id: &str, at: &str| crate::testing::event(id, at, &[(IdType::Email, "ann@x.io")]);
        g.process(&ann("1", "2026-01-01T00:00:00Z"), &[])
            .expect("ok");
        let cid = g.customer_of("user_id:ann").expect("ann").to_string();
        let (mut events, mut ledger, mut batch) = (Vec::new(), Vec::new(), BatchPrivacy::default());
        let mut run = |g: &mut Graph, payload: Vec<u8>, batch: &mut BatchPrivacy| {
            p.apply(&payload, g, batch, &mut events, &mut ledger, Utc::now())
                .expect("applied")
        };
        let erase_1 = serde_json::to_vec(&EraseCommand {
            customer_ids: vec![cid],
            ..serde_json::from_slice(&command(
                &p,
                PrivacyAction::Erase,
                "erase-1",
                &["email:ann@x.io"],
                "2026-02-01T00:00:00Z",
            ))
            .expect("cmd")
        })
        .expect("json");
        run(&mut g, erase_1.clone(), &mut batch);
        assert!(p.suppressed(&g, &mail("2", "2026-03-01T00:00:00Z")));

        // the email is lifted on 2026-03-01: later events with it come in again,
        // older ones (a replay) and the still suppressed user id stay out
        let lift = command(
            &p,
            PrivacyAction::Unsuppress,
            "lift-1",
            &["email:ann@x.io"],
            "2026-03-01T00:00:00Z",
        );
        run(&mut g, lift, &mut batch);
        assert_eq!(batch.lifts.len(), 1);
        assert_eq!(batch.lifts[0].status, "applied");
        assert!(!p.suppressed(&g, &mail("3", "2026-03-02T00:00:00Z")));
        assert!(
            p.suppressed(&g, &mail("4", "2026-03-01T00:00:00Z")),
            "the lift's own second"
        );
        assert!(
            p.suppressed(&g, &mail("5", "2026-01-15T00:00:00Z")),
            "an old event"
        );
        assert!(
            p.suppressed(&g, &ann("6", "2026-03-02T00:00:00Z")),
            "user_id is not lifted"
        );
        // once the new event is in the graph, an old one is still dropped
        g.process(&mail("3", "2026-03-02T00:00:00Z"), &[])
            .expect("ok");
        assert!(g.customer_of("email:ann@x.io").is_some());
        assert!(p.suppressed(&g, &mail("7", "2026-01-20T00:00:00Z")));
        let raw_old = br#"{"occurred_at": "2026-01-20T00:00:00Z", "identifiers": [{"type": "email", "value": "ann@x.io"}], "bad": 1}"#;
        let raw_new = br#"{"occurred_at": "2026-03-05T00:00:00Z", "identifiers": [{"type": "email", "value": "ann@x.io"}], "bad": 1}"#;
        assert!(p.raw_suppressed(&g, raw_old, &n));
        assert!(!p.raw_suppressed(&g, raw_new, &n));
        // a rebuilt writer replaying the older erasure keeps the lift
        run(&mut g, erase_1, &mut batch);
        assert!(!p.suppressed(&g, &mail("8", "2026-03-03T00:00:00Z")));
        // a lift of an identifier that is not suppressed records nothing
        let before = batch.lifts.len();
        run(
            &mut g,
            command(
                &p,
                PrivacyAction::Unsuppress,
                "lift-2",
                &["email:nobody@x.io"],
                "2026-03-04T00:00:00Z",
            ),
            &mut batch,
        );
        assert_eq!(batch.lifts.len(), before);
        // she is erased again later: the lift ends
        let cid = g.customer_of("email:ann@x.io").expect("back").to_string();
        let erase_2 = serde_json::to_vec(&EraseCommand {
            customer_ids: vec![cid],
            ..serde_json::from_slice(&command(
                &p,
                PrivacyAction::Erase,
                "erase-2",
                &["email:ann@x.io"],
                "2026-04-01T00:00:00Z",
            ))
            .expect("cmd")
        })
        .expect("json");
        run(&mut g, erase_2, &mut batch);
        assert!(g.lifted.is_empty());
        assert!(p.suppressed(&g, &mail("9", "2026-05-01T00:00:00Z")));
    }

    #[test]
    fn an_erased_person_is_suppressed_and_stays_so_after_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        let p = Privacy::new(&PrivacyConfig::default(), "t");
        let n = Normalizer::new(None).expect("normalizer");
        let (store, mut loaded) = Store::open(dir.path(), &cfg).expect("open");
        let g = &mut loaded.graph;
        let ann = ev("1", &[(IdType::UserId, "ann"), (IdType::Email, "ann@x.io")]);
        g.process(&ann, &[]).expect("ok");
        g.process(&ev("2", &[(IdType::UserId, "bob")]), &[])
            .expect("ok");
        let cid = g.customer_of("user_id:ann").expect("ann").to_string();
        // the same batch holds an event of Ann's before the request
        let mut events = vec![EventRow::new(
            &ann,
            &cid,
            "user_id:ann",
            0,
            1,
            1,
            Utc::now(),
        )];
        let mut ledger = Vec::new();
        let mut batch = BatchPrivacy::default();
        // the requester knew only the email: the whole profile goes
        let cmd = request(&p, &[&cid], &["email:ann@x.io"]);
        p.apply(&cmd, g, &mut batch, &mut events, &mut ledger, Utc::now())
            .expect("applied");
        assert!(events.is_empty(), "the batch's own row of Ann is dropped");
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].action, IdentityAction::Erase);
        assert_eq!(batch.customer_ids, BTreeSet::from([cid.clone()]));
        assert_eq!(batch.keys.len(), 2);
        assert_eq!(batch.suppressions.len(), 2);
        assert_eq!(batch.applied[0].status, "applied");
        assert_eq!(
            batch.applied[0].requested_by, "cli",
            "the newest row keeps who asked"
        );
        assert!(p.suppressed(g, &ann));
        assert!(p.suppressed(
            g,
            &ev("3", &[(IdType::UserId, "new"), (IdType::Email, "ann@x.io")])
        ));
        assert!(!p.suppressed(g, &ev("4", &[(IdType::UserId, "bob")])));
        let raw = br#"{"schema_version": 9, "identifiers": [{"type": "user_id", "value": "ann"}]}"#;
        assert!(p.raw_suppressed(g, raw, &n));
        // a request hashed under another salt is refused
        let other = Privacy::new(
            &PrivacyConfig {
                salt: "another-salt-0123456".into(),
                ..PrivacyConfig::default()
            },
            "t",
        );
        let e = other
            .apply(
                &cmd,
                &mut Graph::new(&cfg),
                &mut BatchPrivacy::default(),
                &mut events,
                &mut ledger,
                Utc::now(),
            )
            .expect_err("salt");
        assert!(e.contains("privacy.salt"), "{e}");

        store.commit(g, 1, &HashMap::new()).expect("commit");
        drop(store);
        let (_s, again) = Store::open(dir.path(), &cfg).expect("reopen");
        assert_eq!(again.graph.suppressed.len(), 2);
        assert!(
            p.suppressed(&again.graph, &ann),
            "suppression survives a restart"
        );
        assert!(again.graph.customer_of("user_id:ann").is_none());
        assert!(!again.graph.profiles.contains_key(&cid));
        assert!(again.graph.customer_of("user_id:bob").is_some());
    }
}
