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
const SEEN: TableDefinition<u128, ()> = TableDefinition::new("seen");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OFFSETS: TableDefinition<&str, i64> = TableDefinition::new("offsets");

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

/// Everything loaded at start.
pub struct Loaded {
    pub graph: Graph,
    pub version: u64,
    /// Last applied offset per `topic/partition`.
    pub offsets: HashMap<String, i64>,
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
            let (k, _) = item.map_err(se)?;
            graph.seen.insert(k.value());
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
        Ok((
            Store { db, path },
            Loaded {
                graph,
                version,
                offsets,
            },
        ))
    }

    /// Persists what the batch changed, the version counter and the applied offsets,
    /// atomically and durably, then clears the graph's dirty sets.
    pub fn commit(
        &self,
        graph: &mut Graph,
        version: u64,
        offsets: &HashMap<String, i64>,
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(se)?;
        {
            let mut ids = w.open_table(IDS).map_err(se)?;
            for key in &graph.dirty_ids {
                if let Some(rec) = graph.ids.get(key) {
                    let bytes = serde_json::to_vec(rec).map_err(se)?;
                    ids.insert(key.as_str(), bytes.as_slice()).map_err(se)?;
                } else {
                    ids.remove(key.as_str()).map_err(se)?;
                }
            }
            let mut profiles = w.open_table(PROFILES).map_err(se)?;
            for key in &graph.dirty_profiles {
                if let Some(p) = graph.profiles.get(key) {
                    let bytes = serde_json::to_vec(p).map_err(se)?;
                    profiles
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(se)?;
                } else {
                    profiles.remove(key.as_str()).map_err(se)?;
                }
            }
            let mut seen = w.open_table(SEEN).map_err(se)?;
            for fp in &graph.new_seen {
                seen.insert(*fp, ()).map_err(se)?;
            }
            w.open_table(META)
                .map_err(se)?
                .insert("version", version)
                .map_err(se)?;
            let mut offs = w.open_table(OFFSETS).map_err(se)?;
            for (k, v) in offsets {
                offs.insert(k.as_str(), *v).map_err(se)?;
            }
        }
        w.commit().map_err(se)?;
        graph.clear_dirty();
        Ok(())
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
            .process(&ev("1", &[(IdType::AnonymousId, "a1")]), &[]);
        loaded.graph.process(
            &ev(
                "2",
                &[(IdType::AnonymousId, "a1"), (IdType::Email, "x@y.io")],
            ),
            &[],
        );
        let mut offs = HashMap::new();
        offs.insert(offset_key("t", 0), 1);
        store.commit(&mut loaded.graph, 7, &offs).expect("commit");
        // work after the commit is lost on "crash"
        loaded
            .graph
            .process(&ev("3", &[(IdType::Email, "x@y.io")]), &[]);
        drop(store);
        let (_store, again) = Store::open(dir.path(), &cfg).expect("reopen");
        assert_eq!(again.version, 7);
        assert_eq!(again.offsets.get("t/0"), Some(&1));
        let p = again.graph.profile_of("email:x@y.io").expect("profile");
        assert_eq!(p.event_count, 2);
        assert_eq!(again.graph.partition(), loaded.graph.partition());
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
