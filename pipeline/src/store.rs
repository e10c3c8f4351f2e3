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
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
const CONTRIB: TableDefinition<&str, &[u8]> = TableDefinition::new("contributions");
const WALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("walls");
/// The keyed tables, indexed by record tag.
const TABLES: [TableDefinition<&str, &[u8]>; 5] = [IDS, PROFILES, LINKS, CONTRIB, WALLS];
/// One blob per batch with the identifiers and profiles it changed: a batch writes
/// one sequential record instead of thousands of random B-tree updates. Every
/// [`COMPACT_EVERY`] batches the changelog is folded into `ids`/`profiles`, in the
/// same transaction as that batch.
const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog");
/// Batches kept in the changelog before it is folded into the tables.
pub const COMPACT_EVERY: usize = 32;
/// ... or bytes of changed values, whichever comes first.
const COMPACT_BYTES: usize = 256 * 1024 * 1024;
/// Layout of the store's tables. A store written with another layout is refused
/// at start instead of being misread (which could count events twice), except
/// [`JSON_FORMAT`], which is upgraded in place.
///
/// 4: records are postcard (binary); 3: the same records as JSON.
pub const FORMAT: u64 = 4;
/// The previous format, whose records are JSON: read once at start and rewritten
/// as [`FORMAT`] in one transaction (docs/operations.md, "Troubleshooting").
pub const JSON_FORMAT: u64 = 3;
const TAG_ID: u8 = 0;
const TAG_PROFILE: u8 = 1;
const TAG_LINK: u8 = 2;
const TAG_CONTRIB: u8 = 3;
const TAG_WALL: u8 = 4;
/// Fingerprints of counted events, one packed blob (16 bytes each) per batch
/// version: one B-tree insert per batch instead of one per event.
const SEEN: TableDefinition<u64, &[u8]> = TableDefinition::new("seen_batches");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OFFSETS: TableDefinition<&str, i64> = TableDefinition::new("offsets");
/// `pending`: what the batch in flight is about to write; `recovery`: what a
/// crashed batch may have written (see [`Intent`]).
const INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("intents");
/// Suppression hashes of erased identifiers → identifier type (docs/privacy.md).
/// Hashes only: the store keeps no value of an erased person.
const SUPPRESSED: TableDefinition<&str, &str> = TableDefinition::new("suppressed");

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
    #[error("identity store {path} has format {found}, this version reads format {FORMAT}: start with an empty state_dir (and a new consumer group) to rebuild it from the events topic")]
    Format { path: PathBuf, found: u64 },
    #[error("identity store {path} was built under other [privacy] hashing settings (salt, hash_identifier_types or hash_traits) than the config's: its identifiers would no longer match new events, and every person would be split in two. Restore the settings, or rebuild from crm.events with an empty state_dir, a new consumer group and a new ClickHouse database (docs/privacy.md)")]
    Privacy { path: PathBuf },
    #[error("identity store record {key}: {message}")]
    Decode { key: String, message: String },
}

fn se<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The open store plus what it holds besides the graph.
pub struct Store {
    db: Database,
    pub path: PathBuf,
    /// Latest encoded value of every key changed since the last compaction.
    pending: std::sync::Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Per tag: key -> latest encoded value (`None` = deleted).
    tables: [HashMap<String, Option<Vec<u8>>>; 5],
    batches: usize,
    bytes: usize,
}

impl Pending {
    fn add(&mut self, tag: u8, key: String, value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        if let Some(t) = self.tables.get_mut(tag as usize) {
            t.insert(key, value);
        }
    }
}

/// `[tag u8][key len u32][key][value len u32, u32::MAX = deleted][value]`, repeated.
fn encode_record(out: &mut Vec<u8>, tag: u8, key: &str, value: Option<&[u8]>) {
    out.push(tag);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    match value {
        Some(v) => {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

type Record<'a> = (u8, &'a str, Option<&'a [u8]>);

fn decode_records(mut b: &[u8]) -> Result<Vec<Record<'_>>, StoreError> {
    let bad = || StoreError::Db("corrupt changelog record".into());
    let mut out = Vec::new();
    let take_u32 = |b: &mut &[u8]| -> Option<u32> {
        let (n, rest) = b.split_at_checked(4)?;
        *b = rest;
        Some(u32::from_le_bytes(n.try_into().ok()?))
    };
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        let klen = take_u32(&mut b).ok_or_else(bad)? as usize;
        let (key, rest) = b.split_at_checked(klen).ok_or_else(bad)?;
        b = rest;
        let key = std::str::from_utf8(key).map_err(|_| bad())?;
        let vlen = take_u32(&mut b).ok_or_else(bad)?;
        let value = if vlen == u32::MAX {
            None
        } else {
            let (v, rest) = b.split_at_checked(vlen as usize).ok_or_else(bad)?;
            b = rest;
            Some(v)
        };
        out.push((tag, key, value));
    }
    Ok(out)
}

/// What one batch changed in the graph, detached from it: current values of the
/// identifiers and profiles it touched (`None` = deleted) and the new event fingerprints.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    pub ids: Vec<(String, Option<IdRecord>)>,
    pub profiles: Vec<(String, Option<std::sync::Arc<ProfileState>>)>,
    pub links: Vec<(u64, Option<crate::identity::Link>)>,
    pub contrib: Vec<(String, Option<std::sync::Arc<ProfileState>>)>,
    pub walls: Vec<(u64, Option<crate::identity::Wall>)>,
    pub seen: Vec<u128>,
    /// (retired, survivor, when) pairs of merges.
    pub aliases: Vec<(String, String, chrono::DateTime<chrono::Utc>)>,
    /// Primary identifiers whose events now belong to another customer.
    pub moved: Vec<(String, String)>,
    /// Suppression hashes added (hash, identifier type): erased identifiers.
    pub suppressed: Vec<(String, String)>,
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
        let mut json_records = false;
        let w = db.begin_write().map_err(db_err)?;
        {
            let fresh = w.list_tables().map_err(se)?.next().is_none();
            let mut meta = w.open_table(META).map_err(se)?;
            let found = meta.get("format").map_err(se)?.map(|v| v.value());
            match found {
                None if fresh => {
                    meta.insert("format", FORMAT).map_err(se)?;
                }
                Some(FORMAT) => {}
                Some(JSON_FORMAT) => json_records = true,
                other => {
                    return Err(StoreError::Format {
                        path: path.clone(),
                        found: other.unwrap_or(1),
                    })
                }
            }
            drop(meta);
            for t in TABLES {
                w.open_table(t).map_err(se)?;
            }
            w.open_table(CHANGELOG).map_err(se)?;
            w.open_table(SEEN).map_err(se)?;
            w.open_table(META).map_err(se)?;
            w.open_table(OFFSETS).map_err(se)?;
            w.open_table(SUPPRESSED).map_err(se)?;
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
        for (tag, t) in TABLES.iter().enumerate() {
            for item in r.open_table(*t).map_err(se)?.iter().map_err(se)? {
                let (k, v) = item.map_err(se)?;
                load_record(
                    &mut graph,
                    tag as u8,
                    k.value(),
                    Some(v.value()),
                    json_records,
                )?;
            }
        }
        let mut pending = Pending::default();
        for item in r.open_table(CHANGELOG).map_err(se)?.iter().map_err(se)? {
            let (_, blob) = item.map_err(se)?;
            for (tag, key, value) in decode_records(blob.value())? {
                load_record(&mut graph, tag, key, value, json_records)?;
                pending.add(tag, key.to_string(), value.map(<[u8]>::to_vec));
            }
            pending.batches += 1;
        }
        graph.index_links();
        for item in r.open_table(SEEN).map_err(se)?.iter().map_err(se)? {
            let (_, v) = item.map_err(se)?;
            for chunk in v.value().chunks_exact(16) {
                let mut b = [0u8; 16];
                b.copy_from_slice(chunk);
                graph.seen.insert(u128::from_le_bytes(b));
            }
        }
        for item in r.open_table(SUPPRESSED).map_err(se)?.iter().map_err(se)? {
            let (k, _) = item.map_err(se)?;
            graph.suppressed.insert(k.value().to_string());
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
        drop(r);
        if json_records {
            upgrade_from_json(&db, &graph, &path)?;
            pending = Pending::default();
        }
        Ok((
            Store {
                db,
                path,
                pending: std::sync::Mutex::new(pending),
            },
            Loaded {
                graph,
                version,
                offsets,
                recovery,
            },
        ))
    }

    /// Checks that the store was built under the same `[privacy]` hashing settings
    /// (`fingerprint`, 0 when nothing is hashed): its identifiers are hashes under
    /// those settings. A store that holds nothing yet takes the given settings, and
    /// so does one written before this check existed, when nothing is hashed.
    pub fn check_privacy(&self, fingerprint: u64, empty: bool) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(se)?;
        {
            let mut meta = w.open_table(META).map_err(se)?;
            let found = meta.get("privacy").map_err(se)?.map(|v| v.value());
            match found {
                Some(f) if f == fingerprint => return Ok(()),
                None if empty || fingerprint == 0 => {
                    meta.insert("privacy", fingerprint).map_err(se)?;
                }
                _ => {
                    return Err(StoreError::Privacy {
                        path: self.path.clone(),
                    })
                }
            }
        }
        w.commit().map_err(se)
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
            let mut records: Vec<(u8, String, Option<Vec<u8>>)> = Vec::with_capacity(
                delta.ids.len() + delta.profiles.len() + delta.links.len() + delta.contrib.len(),
            );
            fn enc<T: serde::Serialize>(v: &Option<T>) -> Result<Option<Vec<u8>>, StoreError> {
                v.as_ref().map(encode).transpose()
            }
            for (key, rec) in &delta.ids {
                records.push((TAG_ID, key.clone(), enc(rec)?));
            }
            for (key, p) in &delta.profiles {
                records.push((TAG_PROFILE, key.clone(), enc(&p.as_deref())?));
            }
            for (key, l) in &delta.links {
                records.push((TAG_LINK, u64_key(*key), enc(l)?));
            }
            for (key, c) in &delta.contrib {
                records.push((TAG_CONTRIB, key.clone(), enc(&c.as_deref())?));
            }
            for (key, w) in &delta.walls {
                records.push((TAG_WALL, u64_key(*key), enc(w)?));
            }
            let mut blob = Vec::new();
            for (tag, key, v) in &records {
                encode_record(&mut blob, *tag, key, v.as_deref());
            }
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| StoreError::Db("store state poisoned".into()))?;
            for (tag, key, v) in records {
                pending.add(tag, key, v);
            }
            pending.batches += 1;
            // an erasure folds at once: no older changelog blob keeps the erased values
            let erasure = !delta.suppressed.is_empty();
            if pending.batches >= COMPACT_EVERY || pending.bytes >= COMPACT_BYTES || erasure {
                // fold the changelog into the tables, in this same transaction
                for (tag, t) in TABLES.iter().enumerate() {
                    let mut table = w.open_table(*t).map_err(se)?;
                    for (k, v) in &pending.tables[tag] {
                        match v {
                            Some(v) => table.insert(k.as_str(), v.as_slice()).map(|_| ()),
                            None => table.remove(k.as_str()).map(|_| ()),
                        }
                        .map_err(se)?;
                    }
                }
                w.delete_table(CHANGELOG).map_err(se)?;
                w.open_table(CHANGELOG).map_err(se)?;
                *pending = Pending::default();
            } else {
                w.open_table(CHANGELOG)
                    .map_err(se)?
                    .insert(version, blob.as_slice())
                    .map_err(se)?;
            }
            drop(pending);
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
            if !delta.suppressed.is_empty() {
                let mut t = w.open_table(SUPPRESSED).map_err(se)?;
                for (hash, id_type) in &delta.suppressed {
                    t.insert(hash.as_str(), id_type.as_str()).map_err(se)?;
                }
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

/// The key of a record keyed by a number (links, walls): 16 hex digits.
fn u64_key(k: u64) -> String {
    format!("{k:016x}")
}

/// One record's value as the store keeps it ([`FORMAT`]: postcard).
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(se)
}

/// Rewrites every record of a [`JSON_FORMAT`] store, already loaded into `g`, as
/// [`FORMAT`], and folds its changelog, in one transaction: a crash leaves the
/// JSON store as it was, and the next start upgrades it again.
fn upgrade_from_json(db: &Database, g: &Graph, path: &Path) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut w = db.begin_write().map_err(db_err)?;
    w.set_durability(Durability::Immediate).map_err(se)?;
    {
        for t in TABLES {
            w.delete_table(t).map_err(se)?;
        }
        w.delete_table(CHANGELOG).map_err(se)?;
        w.open_table(CHANGELOG).map_err(se)?;
        let mut tables = TABLES
            .iter()
            .map(|t| w.open_table(*t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(se)?;
        let records = g
            .ids
            .iter()
            .map(|(k, v)| Ok((TAG_ID, k.clone(), encode(v)?)))
            .chain(
                g.profiles
                    .iter()
                    .map(|(k, v)| Ok((TAG_PROFILE, k.clone(), encode(&**v)?))),
            )
            .chain(
                g.links
                    .iter()
                    .map(|(k, v)| Ok((TAG_LINK, u64_key(*k), encode(v)?))),
            )
            .chain(
                g.contrib
                    .iter()
                    .map(|(k, v)| Ok((TAG_CONTRIB, k.clone(), encode(&**v)?))),
            )
            .chain(
                g.walls
                    .list
                    .iter()
                    .map(|(k, v)| Ok((TAG_WALL, u64_key(*k), encode(v)?))),
            );
        for r in records {
            let (tag, key, value): (u8, String, Vec<u8>) = r?;
            tables[tag as usize]
                .insert(key.as_str(), value.as_slice())
                .map_err(se)?;
        }
        drop(tables);
        w.open_table(META)
            .map_err(se)?
            .insert("format", FORMAT)
            .map_err(se)?;
    }
    w.commit().map_err(se)?;
    tracing::info!(
        store = %path.display(),
        identifiers = g.ids.len(),
        profiles = g.profiles.len(),
        secs = started.elapsed().as_secs_f64(),
        "identity store upgraded from format {JSON_FORMAT} (JSON records) to {FORMAT} (binary records)"
    );
    Ok(())
}

/// Applies one stored record (`None` = deleted) to the graph being loaded; `json`:
/// the record is of a [`JSON_FORMAT`] store.
fn load_record(
    g: &mut Graph,
    tag: u8,
    key: &str,
    value: Option<&[u8]>,
    json: bool,
) -> Result<(), StoreError> {
    fn decode<T: serde::de::DeserializeOwned>(
        key: &str,
        v: &[u8],
        json: bool,
    ) -> Result<T, StoreError> {
        let decoded = if json {
            serde_json::from_slice(v).map_err(|e| e.to_string())
        } else {
            postcard::from_bytes(v).map_err(|e| e.to_string())
        };
        decoded.map_err(|message| StoreError::Decode {
            key: key.to_string(),
            message,
        })
    }
    let hex_key = || {
        u64::from_str_radix(key, 16)
            .map_err(|_| StoreError::Db(format!("corrupt record key {key:?}")))
    };
    match (tag, value) {
        (TAG_ID, Some(v)) => {
            g.ids
                .insert(key.to_string(), decode::<IdRecord>(key, v, json)?);
        }
        (TAG_ID, None) => {
            g.ids.remove(key);
        }
        (TAG_PROFILE, Some(v)) => {
            g.profiles.insert(
                key.to_string(),
                std::sync::Arc::new(decode::<ProfileState>(key, v, json)?),
            );
        }
        (TAG_PROFILE, None) => {
            g.profiles.remove(key);
        }
        (TAG_LINK, Some(v)) => {
            g.links.insert(hex_key()?, decode(key, v, json)?);
        }
        (TAG_LINK, None) => {
            g.links.remove(&hex_key()?);
        }
        (TAG_CONTRIB, Some(v)) => {
            g.contrib.insert(
                key.to_string(),
                std::sync::Arc::new(decode::<ProfileState>(key, v, json)?),
            );
        }
        (TAG_CONTRIB, None) => {
            g.contrib.remove(key);
        }
        (TAG_WALL, Some(v)) => {
            g.walls.add(decode(key, v, json)?);
        }
        (TAG_WALL, None) => {
            g.walls.remove(hex_key()?);
        }
        (t, _) => return Err(StoreError::Db(format!("unknown record tag {t}"))),
    }
    Ok(())
}

fn read_intent(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Intent>, StoreError> {
    match t.get(key).map_err(se)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Decode {
                key: format!("intent {key}"),
                message: e.to_string(),
            }),
    }
}

fn db_err(e: redb::TransactionError) -> StoreError {
    StoreError::Db(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialcrm_schemas::{CanonicalEvent, IdType};
    use std::collections::BTreeMap;

    fn ev(id: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        crate::testing::event(id, "2026-01-01T00:00:00Z", ids)
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
    fn a_store_keeps_the_privacy_settings_it_was_built_with() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        {
            let (store, _) = Store::open(dir.path(), &cfg).expect("open");
            store
                .check_privacy(42, true)
                .expect("a new store takes them");
            store.check_privacy(42, false).expect("same settings");
            let e = store
                .check_privacy(0, false)
                .expect_err("hashing turned off");
            assert!(e.to_string().contains("[privacy]"), "{e}");
            assert!(store.check_privacy(43, false).is_err(), "another salt");
        }
        let (store, _) = Store::open(dir.path(), &cfg).expect("reopen");
        assert!(
            store.check_privacy(43, false).is_err(),
            "remembered across restarts"
        );
        store.check_privacy(42, false).expect("same settings");
        // a store with data from before the check: fine without hashing, refused with
        let dir2 = tempfile::tempdir().expect("tmp");
        let (old, _) = Store::open(dir2.path(), &cfg).expect("open");
        assert!(old.check_privacy(7, false).is_err());
        old.check_privacy(0, false).expect("no hashing, as before");
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

    /// `n` batches, each with a new visitor (with a trait) who then logs in with
    /// the shared address `same@x.io` (merges that move identifiers), one commit each.
    fn batches_of_visitors(
        store: &Store,
        g: &mut Graph,
        applied: &mut HashMap<String, i64>,
        n: usize,
    ) {
        for b in 0..n as u64 {
            let mut e = ev(
                &format!("a{b}"),
                &[(IdType::AnonymousId, &format!("anon{b}"))],
            );
            e.traits.insert(
                "plan".into(),
                serde_json::json!({"tier": b, "tags": ["x", null]}),
            );
            g.process(&e, &[]).expect("ok");
            g.process(
                &ev(
                    &format!("b{b}"),
                    &[
                        (IdType::AnonymousId, &format!("anon{b}")),
                        (IdType::Email, "same@x.io"),
                    ],
                ),
                &[],
            )
            .expect("ok");
            applied.insert(offset_key("t", 0), b as i64);
            store.commit(g, b + 1, applied).expect("commit");
        }
    }

    #[test]
    fn changelog_and_compaction_restore_the_same_graph() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        let (store, mut loaded) = Store::open(dir.path(), &cfg).expect("open");
        let mut applied = HashMap::new();
        // more batches than COMPACT_EVERY, with merges that delete nothing but move ids
        batches_of_visitors(&store, &mut loaded.graph, &mut applied, COMPACT_EVERY + 5);
        // a lone visitor (a sole primary, left implicit in the store), and an unlink
        // that re-sums profiles from the contributions
        let g = &mut loaded.graph;
        g.process(&ev("lone", &[(IdType::AnonymousId, "lone")]), &[])
            .expect("ok");
        g.unlink("anonymous_id:anon3", "cmd-1", chrono::Utc::now())
            .expect("unlink");
        let n = COMPACT_EVERY as u64 + 6;
        store.commit(g, n, &applied).expect("commit");
        let expected = loaded.graph.partition();
        let profiles: usize = loaded.graph.profiles.len();
        let contrib: Vec<(String, u64, BTreeMap<String, u64>)> = sorted_contrib(&loaded.graph);
        let cluster = loaded.graph.cluster(&["email:same@x.io".to_string()]);
        assert!(cluster.1.len() > COMPACT_EVERY);
        drop(store);
        let (_s, again) = Store::open(dir.path(), &cfg).expect("reopen");
        assert_eq!(again.graph.partition(), expected);
        assert_eq!(sorted_contrib(&again.graph), contrib);
        // the link index is rebuilt: the same cluster is reachable after a restart
        assert_eq!(
            again.graph.cluster(&["email:same@x.io".to_string()]),
            cluster
        );
        assert!(again
            .graph
            .profile_of("anonymous_id:lone")
            .is_some_and(|p| p.sole_primary.as_deref() == Some("anonymous_id:lone")));
        assert_eq!(again.graph.profiles.len(), profiles);
        assert_eq!(
            again
                .graph
                .profile_of("email:same@x.io")
                .map(|p| p.event_count),
            Some(2 * (COMPACT_EVERY as u64 + 5) - 1)
        );
        assert_eq!(again.graph.seen.len(), 2 * (COMPACT_EVERY + 5) + 1);
    }

    fn sorted_contrib(g: &Graph) -> Vec<(String, u64, BTreeMap<String, u64>)> {
        let mut v: Vec<_> = g
            .contrib
            .iter()
            .map(|(k, c)| (k.clone(), c.event_count, c.event_counts.to_btree()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn changelog_records_round_trip() {
        let mut b = Vec::new();
        encode_record(&mut b, TAG_ID, "email:a@b.co", Some(b"{}"));
        encode_record(&mut b, TAG_PROFILE, "c_1", None);
        let r = decode_records(&b).expect("decode");
        assert_eq!(
            r,
            vec![
                (TAG_ID, "email:a@b.co", Some(&b"{}"[..])),
                (TAG_PROFILE, "c_1", None)
            ]
        );
        assert!(decode_records(&b[..b.len() - 2]).is_err());
    }

    /// Rewrites a store's records as JSON and stamps it [`JSON_FORMAT`], as the
    /// previous version wrote it.
    fn downgrade_to_json(path: &Path) {
        fn to_json(tag: u8, v: &[u8]) -> Vec<u8> {
            fn re<T: serde::de::DeserializeOwned + serde::Serialize>(v: &[u8]) -> Vec<u8> {
                let t: T = postcard::from_bytes(v).expect("postcard record");
                serde_json::to_vec(&t).expect("json")
            }
            match tag {
                TAG_ID => re::<IdRecord>(v),
                TAG_PROFILE | TAG_CONTRIB => re::<ProfileState>(v),
                TAG_LINK => re::<crate::identity::Link>(v),
                TAG_WALL => re::<crate::identity::Wall>(v),
                t => panic!("tag {t}"),
            }
        }
        let db = Database::create(path.join("identity.redb")).expect("db");
        let w = db.begin_write().expect("w");
        for (tag, t) in TABLES.iter().enumerate() {
            let mut table = w.open_table(*t).expect("t");
            let all: Vec<(String, Vec<u8>)> = table
                .iter()
                .expect("iter")
                .map(|r| {
                    let (k, v) = r.expect("item");
                    (k.value().to_string(), v.value().to_vec())
                })
                .collect();
            for (k, v) in all {
                table
                    .insert(k.as_str(), to_json(tag as u8, &v).as_slice())
                    .expect("i");
            }
        }
        let mut log = w.open_table(CHANGELOG).expect("t");
        let all: Vec<(u64, Vec<u8>)> = log
            .iter()
            .expect("iter")
            .map(|r| {
                let (k, v) = r.expect("item");
                (k.value(), v.value().to_vec())
            })
            .collect();
        assert!(
            !all.is_empty(),
            "the test wants records in the changelog too"
        );
        for (version, blob) in all {
            let mut out = Vec::new();
            for (tag, key, value) in decode_records(&blob).expect("decode") {
                let json = value.map(|v| to_json(tag, v));
                encode_record(&mut out, tag, key, json.as_deref());
            }
            log.insert(version, out.as_slice()).expect("i");
        }
        drop(log);
        w.open_table(META)
            .expect("t")
            .insert("format", JSON_FORMAT)
            .expect("i");
        w.commit().expect("c");
    }

    #[test]
    fn a_json_store_of_the_previous_format_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = IdentityConfig::default();
        let (store, mut loaded) = Store::open(dir.path(), &cfg).expect("open");
        let mut applied = HashMap::new();
        // enough batches for records both in the tables and in the changelog
        batches_of_visitors(&store, &mut loaded.graph, &mut applied, COMPACT_EVERY + 3);
        let g = &mut loaded.graph;
        g.unlink("anonymous_id:anon2", "cmd-1", chrono::Utc::now())
            .expect("unlink");
        store
            .commit(g, COMPACT_EVERY as u64 + 4, &applied)
            .expect("commit");
        drop(store);
        let profiles = |g: &Graph| {
            let mut v: Vec<(String, ProfileState)> = g
                .profiles
                .iter()
                .map(|(k, p)| (k.clone(), (**p).clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let ids = |g: &Graph| {
            // the link index is rebuilt at load, in hash order
            let mut v: Vec<(String, IdRecord)> = g
                .ids
                .iter()
                .map(|(k, r)| {
                    let mut r = r.clone();
                    r.links.sort_unstable();
                    (k.clone(), r)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (want_profiles, want_ids, want_contrib, want_partition, want_walls, want_links) = (
            profiles(&loaded.graph),
            ids(&loaded.graph),
            sorted_contrib(&loaded.graph),
            loaded.graph.partition(),
            loaded.graph.walls.list.clone(),
            loaded.graph.links.len(),
        );
        assert!(want_profiles
            .iter()
            .any(|(_, p)| p.traits.contains_key("plan")));
        assert_eq!(want_walls.len(), 1);

        downgrade_to_json(dir.path());
        for round in ["upgrade", "reopen after the upgrade"] {
            let (_s, again) = Store::open(dir.path(), &cfg).expect(round);
            assert_eq!(profiles(&again.graph), want_profiles, "{round}");
            assert_eq!(ids(&again.graph), want_ids, "{round}");
            assert_eq!(sorted_contrib(&again.graph), want_contrib, "{round}");
            assert_eq!(again.graph.partition(), want_partition, "{round}");
            assert_eq!(again.graph.walls.list, want_walls, "{round}");
            assert_eq!(again.graph.links.len(), want_links, "{round}");
            assert_eq!(again.version, COMPACT_EVERY as u64 + 4, "{round}");
            assert_eq!(again.offsets, applied, "{round}");
            let r = _s.db.begin_read().expect("r");
            let format = r
                .open_table(META)
                .expect("t")
                .get("format")
                .expect("g")
                .map(|v| v.value());
            assert_eq!(format, Some(FORMAT), "{round}");
        }
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let db = Database::create(dir.path().join("identity.redb")).expect("db");
            let w = db.begin_write().expect("w");
            w.open_table(META)
                .expect("t")
                .insert("format", 1u64)
                .expect("i");
            w.commit().expect("c");
        }
        let err = Store::open(dir.path(), &IdentityConfig::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("has format 1"), "{err}");
        // and a fresh store is stamped and reopens
        let dir2 = tempfile::tempdir().expect("tmp");
        drop(Store::open(dir2.path(), &IdentityConfig::default()).expect("fresh"));
        assert!(Store::open(dir2.path(), &IdentityConfig::default()).is_ok());
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
