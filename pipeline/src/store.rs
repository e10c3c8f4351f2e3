//! The identity writer's embedded store (DESIGN §5): the graph, profiles, the set of
//! counted event ids, the version counter and the applied Kafka offsets, in one
//! redb file. One atomic commit per batch, written only after ClickHouse and Kafka
//! accepted that batch, so a crash at any point replays into the same state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::IdentityConfig;
use crate::identity::{Graph, IdRecord};
use crate::profile::ProfileState;

const IDS: TableDefinition<&str, &[u8]> = TableDefinition::new("ids");
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// Fingerprints of counted events, one packed blob (16 bytes each) per batch
/// version: one B-tree insert per batch instead of one per event.
const SEEN: TableDefinition<u64, &[u8]> = TableDefinition::new("seen_batches");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OFFSETS: TableDefinition<&str, i64> = TableDefinition::new("offsets");
/// `pending`: what the batch in flight is about to write; `recovery`: what a
/// crashed batch may have written (see [`Intent`]).
const INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("intents");

/// What a batch is about to write to ClickHouse and Kafka, recorded durably first.
/// If the process dies before the batch's commit, the replay may resolve the same
/// events in another order (partitions interleave differently) and create other
/// customer ids; the ids the crashed attempt published but the replay never
/// recreates are retracted once the replay has passed the crashed batch's offsets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    pub version: u64,
    /// Customer ids whose rows/messages the batch writes.
    pub customer_ids: std::collections::BTreeSet<String>,
    /// Highest offset per `topic/partition` in the batch.
    pub offsets: HashMap<String, i64>,
}

impl Intent {
    fn absorb(&mut self, other: Intent) {
        self.version = self.version.max(other.version);
        self.customer_ids.extend(other.customer_ids);
        for (k, v) in other.offsets {
            let e = self.offsets.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
    }

    /// True once every partition of the intent was applied up to its offset.
    pub fn passed_by(&self, applied: &HashMap<String, i64>) -> bool {
        self.offsets
            .iter()
            .all(|(k, o)| applied.get(k).is_some_and(|a| a >= o))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity store {path}: {message} (is another pipeline using this state_dir?)")]
    Open { path: PathBuf, message: String },
    #[error("identity store: {0}")]
    Db(String),
    #[error("identity store record {key}: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
}

fn se<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The open store plus what it holds besides the graph.
pub struct Store {
    db: Database,
    pub path: PathBuf,
}

/// What one batch changed in the graph, detached from it: current values of the
/// identifiers and profiles it touched (`None` = deleted) and the new event fingerprints.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    pub ids: Vec<(String, Option<IdRecord>)>,
    pub profiles: Vec<(String, Option<ProfileState>)>,
    pub seen: Vec<u128>,
    /// (retired, survivor, when) pairs of merges.
    pub aliases: Vec<(String, String, chrono::DateTime<chrono::Utc>)>,
}

/// Everything loaded at start.
pub struct Loaded {
    pub graph: Graph,
    pub version: u64,
    /// Last applied offset per `topic/partition`.
    pub offsets: HashMap<String, i64>,
    /// Writes of crashed batches that may need retracting.
    pub recovery: Option<Intent>,
}

pub fn offset_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl Store {
    /// Opens (or creates) `<dir>/identity.redb` and loads its content.
    pub fn open(dir: &Path, cfg: &IdentityConfig) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("identity.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // make sure every table exists
        let w = db.begin_write().map_err(db_err)?;
        {
            w.open_table(IDS).map_err(se)?;
            w.open_table(PROFILES).map_err(se)?;
            w.open_table(SEEN).map_err(se)?;
            w.open_table(META).map_err(se)?;
            w.open_table(OFFSETS).map_err(se)?;
            // a batch that never committed becomes (part of) the recovery record
            let mut intents = w.open_table(INTENTS).map_err(se)?;
            let pending = read_intent(&intents, "pending")?;
            if let Some(p) = pending {
                let mut rec = read_intent(&intents, "recovery")?.unwrap_or_default();
                rec.absorb(p);
                let bytes = serde_json::to_vec(&rec).map_err(se)?;
                intents.insert("recovery", bytes.as_slice()).map_err(se)?;
                intents.remove("pending").map_err(se)?;
            }
        }
        w.commit().map_err(se)?;

        let mut graph = Graph::new(cfg);
        let r = db.begin_read().map_err(se)?;
        for item in r.open_table(IDS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let rec: IdRecord =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::Decode {
                    key: k.value().to_string(),
                    source,
                })?;
            graph.ids.insert(k.value().to_string(), rec);
        }
        for item in r.open_table(PROFILES).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let p: ProfileState =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::Decode {
                    key: k.value().to_string(),
                    source,
                })?;
            graph.profiles.insert(k.value().to_string(), p);
        }
        for item in r.open_table(SEEN).map_err(se)?.iter().map_err(se)? {
            let (_, v) = item.map_err(se)?;
            for chunk in v.value().chunks_exact(16) {
                let mut b = [0u8; 16];
                b.copy_from_slice(chunk);
                graph.seen.insert(u128::from_le_bytes(b));
            }
        }
        let version = r
            .open_table(META)
            .map_err(se)?
            .get("version")
            .map_err(se)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut offsets = HashMap::new();
        for item in r.open_table(OFFSETS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            offsets.insert(k.value().to_string(), v.value());
        }
        let recovery = read_intent(&r.open_table(INTENTS).map_err(se)?, "recovery")?;
        Ok((
            Store { db, path },
            Loaded {
                graph,
                version,
                offsets,
                recovery,
            },
        ))
    }

    /// Records, durably, what the next batch is about to write.
    pub fn write_intent(&self, intent: &Intent) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(se)?;
        {
            let bytes = serde_json::to_vec(intent).map_err(se)?;
            w.open_table(INTENTS)
                .map_err(se)?
                .insert("pending", bytes.as_slice())
                .map_err(se)?;
        }
        w.commit().map_err(se)
    }

    /// Forgets the recovery record (after its retractions were written).
    pub fn clear_recovery(&self) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(se)?;
        {
            w.open_table(INTENTS)
                .map_err(se)?
                .remove("recovery")
                .map_err(se)?;
        }
        w.commit().map_err(se)
    }

    /// Persists what the batch changed, the version counter and the applied offsets,
    /// atomically and durably, then clears the graph's dirty sets.
    pub fn commit(
        &self,
        graph: &mut Graph,
        version: u64,
        offsets: &HashMap<String, i64>,
    ) -> Result<(), StoreError> {
        let delta = graph.take_delta();
        self.commit_delta(&delta, version, offsets)
    }

    /// Persists a batch's [`Delta`] (taken from the graph when the batch was
    /// resolved, so the next batch can be resolved while this one is written).
    pub fn commit_delta(
        &self,
        delta: &Delta,
        version: u64,
        offsets: &HashMap<String, i64>,
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(se)?;
        {
            let mut ids = w.open_table(IDS).map_err(se)?;
            for (key, rec) in &delta.ids {
                if let Some(rec) = rec {
                    let bytes = serde_json::to_vec(rec).map_err(se)?;
                    ids.insert(key.as_str(), bytes.as_slice()).map_err(se)?;
                } else {
                    ids.remove(key.as_str()).map_err(se)?;
                }
            }
            let mut profiles = w.open_table(PROFILES).map_err(se)?;
            for (key, p) in &delta.profiles {
                if let Some(p) = p {
                    let bytes = serde_json::to_vec(p).map_err(se)?;
                    profiles
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(se)?;
                } else {
                    profiles.remove(key.as_str()).map_err(se)?;
                }
            }
            if !delta.seen.is_empty() {
                let mut blob = Vec::with_capacity(delta.seen.len() * 16);
                for fp in &delta.seen {
                    blob.extend_from_slice(&fp.to_le_bytes());
                }
                w.open_table(SEEN)
                    .map_err(se)?
                    .insert(version, blob.as_slice())
                    .map_err(se)?;
            }
            w.open_table(META)
                .map_err(se)?
                .insert("version", version)
                .map_err(se)?;
            let mut offs = w.open_table(OFFSETS).map_err(se)?;
            for (k, v) in offsets {
                offs.insert(k.as_str(), *v).map_err(se)?;
            }
            w.open_table(INTENTS)
                .map_err(se)?
                .remove("pending")
                .map_err(se)?;
        }
        w.commit().map_err(se)?;
        Ok(())
    }
}

fn read_intent(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Intent>, StoreError> {
    match t.get(key).map_err(se)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|source| StoreError::Decode {
                key: format!("intent {key}"),
                source,
            }),
    }
}

fn db_err(e: redb::TransactionError) -> StoreError {
    StoreError::Db(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier};

    fn ev(id: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        CanonicalEvent {
            schema_version: 1,
            event_id: id.into(),
            source: "web".into(),
            channel: Channel::Web,
            event_type: "page".into(),
            name: None,
            occurred_at: "2026-01-01T00:00:00Z".parse().expect("date"),
            received_at: "2026-01-01T00:00:00Z".parse().expect("date"),
            identifiers: ids.iter().map(|(t, v)| Identifier::new(*t, *v)).collect(),
            target: vec![],
            traits: Default::default(),
            properties: Default::default(),
            revenue: None,
            context: Default::default(),
        }
    }

    #[test]
    fn survives_reopen_and_uncommitted_work_is_replayed_identically() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        let (store, mut loaded) = Store::open(dir.path(), &cfg).expect("open");
        loaded
            .graph
            .process(&ev("1", &[(IdType::AnonymousId, "a1")]), &[])
            .expect("ok");
        loaded
            .graph
            .process(
                &ev(
                    "2",
                    &[(IdType::AnonymousId, "a1"), (IdType::Email, "x@y.io")],
                ),
                &[],
            )
            .expect("ok");
        let mut offs = HashMap::new();
        offs.insert(offset_key("t", 0), 1);
        store.commit(&mut loaded.graph, 7, &offs).expect("commit");
        // work after the commit is lost on "crash"
        loaded
            .graph
            .process(&ev("3", &[(IdType::Email, "x@y.io")]), &[])
            .expect("ok");
        drop(store);
        let (_store, again) = Store::open(dir.path(), &cfg).expect("reopen");
        assert_eq!(again.version, 7);
        assert_eq!(again.offsets.get("t/0"), Some(&1));
        let p = again.graph.profile_of("email:x@y.io").expect("profile");
        assert_eq!(p.event_count, 2);
        assert_eq!(again.graph.partition(), loaded.graph.partition());
    }

    #[test]
    fn a_crashed_batch_becomes_a_recovery_record_until_replayed() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        {
            let (store, _) = Store::open(dir.path(), &cfg).expect("open");
            let mut intent = Intent {
                version: 1,
                ..Intent::default()
            };
            intent.customer_ids.insert("c_crashed".into());
            intent.offsets.insert(offset_key("t", 0), 9);
            store.write_intent(&intent).expect("intent");
            // crash: no commit
        }
        let (store, mut loaded) = Store::open(dir.path(), &cfg).expect("reopen");
        let rec = loaded.recovery.clone().expect("recovery record");
        assert!(rec.customer_ids.contains("c_crashed"));
        let mut applied = HashMap::new();
        applied.insert(offset_key("t", 0), 5);
        assert!(!rec.passed_by(&applied));
        applied.insert(offset_key("t", 0), 9);
        assert!(rec.passed_by(&applied));
        store
            .commit(&mut loaded.graph, 2, &applied)
            .expect("commit");
        store.clear_recovery().expect("clear");
        drop(store);
        let (_s, again) = Store::open(dir.path(), &cfg).expect("reopen");
        assert!(again.recovery.is_none());
        assert_eq!(again.version, 2);
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        let _first = Store::open(dir.path(), &cfg).expect("open");
        let err = Store::open(dir.path(), &cfg).err().expect("must fail");
        assert!(err.to_string().contains("another pipeline"), "{err}");
    }
}
