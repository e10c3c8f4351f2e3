//! The in-memory profile read model of `socialcrm serve` (`[api] read_model =
//! "memory"`, docs/api.md "Read model"): every live profile, the identifiers that
//! lead to it, the scores of its run and its recent events, so that a profile
//! lookup by identifier or customer id needs no ClickHouse query.
//!
//! It is complete, not a cache: [`ReadModel::bootstrap`] loads everything at start
//! (live profiles, active identities, the scores rows of each profile's run, the
//! newest `recent_events` events per primary identifier), and [`ReadModel::run`]
//! keeps it current by polling ClickHouse every `read_model_poll_ms`:
//! - `profiles.version` is a global batch counter, so `version > watermark` names the
//!   changed profiles; their rows, identities, scores and events are re-read in
//!   batches. Each change is read in the poll that first sees it and once more in the
//!   next one, because the pipeline writes a batch's tables in parallel: the second
//!   read picks up what had not landed yet.
//! - erasures delete rows by mutation, which versions cannot show: `crm.erasures` is
//!   polled, and the customers of a request the pipeline has applied are dropped
//!   (with their identifiers and events) and never served again, not even from the
//!   ClickHouse fallback, while the mutations run.
//!
//! Entries are immutable and compact: the profile row, the score row and the events
//! are postcard-encoded byte strings, decoded per request into the same structs the
//! ClickHouse path reads, and rendered by the same function
//! ([`super::queries::detail_json`]), so both paths give the same JSON.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clickhouse::Row;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use socialcrm_pipeline::rows::ProfileRow;
use socialcrm_pipeline::scoring::job::ScoreRow;
use socialcrm_schemas::retry::{retry, RetryPolicy, Retryable};

use super::queries::{
    detail_json, run_id_of, NameRow, QResult, Queries, QueryError, RecentEvent,
    RECENT_EVENT_COLUMNS,
};

/// Ids per batched point query (a few tens of KB of SQL, well under `max_query_size`).
const CHUNK: usize = 1000;

/// More changed profiles than this in one poll (a scoring run applied to everyone, a
/// rebuild): load the whole model again instead of re-reading them one batch at a time.
const RELOAD_ABOVE: usize = 100_000;

/// Longest merge chain followed (as the ClickHouse path does).
const MAX_HOPS: usize = 8;

/// One event as kept in the model: its primary identifier is an index into the
/// profile's identifiers.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    event_id: String,
    occurred_at: u32,
    primary: u16,
    source: String,
    channel: String,
    event_type: String,
    name: String,
    revenue_amount: f64,
    revenue_currency: String,
}

/// A live profile, ready to render.
struct Entry {
    /// The profile's identifiers (`type:value` as stored), in its order.
    keys: Box<[Arc<str>]>,
    /// postcard of the [`ProfileRow`].
    profile: Box<[u8]>,
    /// postcard of the [`ScoreRow`] of the profile's run, if there is one.
    scores: Option<Box<[u8]>>,
    /// postcard of the newest events (`Vec<StoredEvent>`, newest first).
    events: Box<[u8]>,
}

impl Entry {
    fn render(&self, recent: usize) -> Result<Value, postcard::Error> {
        let p: ProfileRow = postcard::from_bytes(&self.profile)?;
        let scores: Option<ScoreRow> = match &self.scores {
            Some(b) => Some(postcard::from_bytes(b)?),
            None => None,
        };
        let stored: Vec<StoredEvent> = postcard::from_bytes(&self.events)?;
        let events: Vec<RecentEvent> = stored
            .into_iter()
            .take(recent)
            .map(|e| RecentEvent {
                event_id: e.event_id,
                occurred_at: e.occurred_at,
                primary_id: self
                    .keys
                    .get(usize::from(e.primary))
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                source: e.source,
                channel: e.channel,
                event_type: e.event_type,
                name: e.name,
                revenue_amount: e.revenue_amount,
                revenue_currency: e.revenue_currency,
            })
            .collect();
        Ok(detail_json(&p, scores.as_ref(), &events))
    }
}

/// The maps a lookup reads.
#[derive(Default)]
struct Inner {
    /// Active identities: stored `type:value` → customer id.
    ids: FxHashMap<Arc<str>, Arc<str>>,
    /// Live profiles by customer id.
    live: FxHashMap<Arc<str>, Arc<Entry>>,
    /// Inactive profiles: customer id → the profile it was merged into ("" when it
    /// merged into nothing: retracted).
    retired: FxHashMap<Arc<str>, Arc<str>>,
    /// Customers of erasures in progress: never served, not even by the fallback.
    erased: FxHashSet<Arc<str>>,
}

/// What the model knows about a question.
enum Answer {
    /// The live profile.
    Found(Arc<Entry>),
    /// Known and not served: merged into nothing, or erased.
    Gone,
    /// Not in the model (yet): ask ClickHouse.
    Miss,
}

impl Inner {
    fn resolve(&self, customer_id: &str) -> Answer {
        let mut cid: &str = customer_id;
        for _ in 0..MAX_HOPS {
            if self.erased.contains(cid) {
                return Answer::Gone;
            }
            if let Some(e) = self.live.get(cid) {
                return Answer::Found(e.clone());
            }
            match self.retired.get(cid) {
                Some(next) if next.is_empty() => return Answer::Gone,
                Some(next) => cid = next,
                None => return Answer::Miss,
            }
        }
        Answer::Miss
    }

    /// The shared `Arc` of a customer id (one allocation per id in the maps).
    fn cid_arc(&self, cid: &str) -> Arc<str> {
        if let Some((k, _)) = self.live.get_key_value(cid) {
            return k.clone();
        }
        if let Some((k, _)) = self.retired.get_key_value(cid) {
            return k.clone();
        }
        Arc::from(cid)
    }

    /// Removes a live profile and the identifiers that lead to it.
    fn drop_live(&mut self, cid: &str) -> Option<Arc<Entry>> {
        let old = self.live.remove(cid)?;
        for k in old.keys.iter() {
            if self.ids.get(k).is_some_and(|c| &**c == cid) {
                self.ids.remove(k);
            }
        }
        Some(old)
    }

    /// Drops an erased customer and its identifiers. Whatever else still points at
    /// it (a retired id merged into it, a stray identity) resolves to it and stops
    /// there: `erased` while the erasure runs, then a miss that ClickHouse, where
    /// the rows are gone, answers with nothing.
    fn erase(&mut self, cid: &str) {
        self.drop_live(cid);
        self.retired.remove(cid);
    }
}

/// Health of the model, read without the lock.
#[derive(Default)]
struct Status {
    loaded: AtomicBool,
    /// Unix ms at which the last successful poll (or the bootstrap) started: the
    /// model holds everything ClickHouse held then.
    fresh_at_ms: AtomicU64,
    bootstrap_ms: AtomicU64,
    watermark: AtomicU64,
    profiles: AtomicU64,
    identifiers: AtomicU64,
    events: AtomicU64,
    polls_failed: AtomicU64,
}

/// The read model; share it with `Arc`.
pub struct ReadModel {
    inner: RwLock<Inner>,
    status: Status,
    q: Queries,
    recent: usize,
    poll: Duration,
}

impl Retryable for QueryError {
    fn is_retryable(&self) -> bool {
        matches!(self, QueryError::Storage(_))
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

fn encode<T: Serialize>(v: &T) -> QResult<Box<[u8]>> {
    postcard::to_allocvec(v)
        .map(Vec::into_boxed_slice)
        .map_err(|e| QueryError::Storage(format!("read model: cannot encode a row: {e}")))
}

fn key_of(t: &str, v: &str) -> String {
    format!("{t}:{v}")
}

#[derive(Debug, Row, Deserialize)]
struct IdentityLine {
    id_type: String,
    id_value: String,
    customer_id: String,
    is_active: u8,
}

#[derive(Debug, Row, Deserialize)]
struct Changed {
    customer_id: String,
    top: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ErasureLine {
    request_id: String,
    status: String,
    version: u64,
    customer_ids: Vec<String>,
}

fn in_list(n: usize) -> String {
    format!("({})", vec!["?"; n.max(1)].join(", "))
}

fn bind_all<S: AsRef<str>>(mut q: clickhouse::query::Query, v: &[S]) -> clickhouse::query::Query {
    if v.is_empty() {
        return q.bind("");
    }
    for s in v {
        q = q.bind(s.as_ref());
    }
    q
}

/// A live profile being put together (bootstrap and polls).
struct Builder {
    keys: Box<[Arc<str>]>,
    profile: Box<[u8]>,
    run_id: String,
    scores: Option<Box<[u8]>>,
    /// Events as they arrive (several primary identifiers, each newest first),
    /// postcard-encoded one after the other: a decoded event costs three times more
    /// memory, and a bootstrap holds millions.
    events: Vec<u8>,
}

impl Builder {
    fn new(p: &ProfileRow, keys: Box<[Arc<str>]>) -> QResult<Builder> {
        Ok(Builder {
            keys,
            profile: encode(p)?,
            run_id: run_id_of(p),
            scores: None,
            events: Vec::new(),
        })
    }

    fn push(&mut self, e: &StoredEvent) -> QResult<()> {
        let buf = std::mem::take(&mut self.events);
        self.events = postcard::to_extend(e, buf)
            .map_err(|e| QueryError::Storage(format!("read model: cannot encode an event: {e}")))?;
        Ok(())
    }

    /// The newest `recent` events over all identifiers, in the ClickHouse path's
    /// order (`occurred_at DESC, event_id DESC`).
    fn finish(self, recent: usize) -> QResult<(Entry, u64)> {
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut rest: &[u8] = &self.events;
        while !rest.is_empty() {
            let (e, r) = postcard::take_from_bytes::<StoredEvent>(rest).map_err(|e| {
                QueryError::Storage(format!("read model: cannot decode an event: {e}"))
            })?;
            events.push(e);
            rest = r;
        }
        events.sort_by(|a, b| {
            b.occurred_at
                .cmp(&a.occurred_at)
                .then_with(|| b.event_id.cmp(&a.event_id))
        });
        events.truncate(recent);
        let n = events.len() as u64;
        let entry = Entry {
            keys: self.keys,
            profile: self.profile,
            scores: self.scores,
            events: encode(&events)?,
        };
        Ok((entry, n))
    }
}

/// The keys of a profile row, sharing the `Arc`s already in `ids` where possible.
fn profile_keys(p: &ProfileRow, ids: &FxHashMap<Arc<str>, Arc<str>>) -> Box<[Arc<str>]> {
    p.identifier_types
        .iter()
        .zip(&p.identifier_values)
        .map(|(t, v)| {
            let k = key_of(t, v);
            match ids.get_key_value(k.as_str()) {
                Some((a, _)) => a.clone(),
                None => Arc::from(k),
            }
        })
        .collect()
}

/// Appends event lines to the builders of the profiles they belong to: `owner`
/// says which customer and which of its identifiers a primary id is.
fn add_event(
    builders: &mut FxHashMap<Arc<str>, Builder>,
    owner: &FxHashMap<Arc<str>, Arc<str>>,
    e: RecentEvent,
) -> QResult<()> {
    let Some(cid) = owner.get(e.primary_id.as_str()) else {
        return Ok(());
    };
    let Some(b) = builders.get_mut(cid) else {
        return Ok(());
    };
    let Some(i) = b.keys.iter().position(|k| **k == *e.primary_id) else {
        return Ok(());
    };
    b.push(&StoredEvent {
        event_id: e.event_id,
        occurred_at: e.occurred_at,
        primary: u16::try_from(i).unwrap_or(u16::MAX),
        source: e.source,
        channel: e.channel,
        event_type: e.event_type,
        name: e.name,
        revenue_amount: e.revenue_amount,
        revenue_currency: e.revenue_currency,
    })
}

/// Erasure requests by what the model must do about them.
#[derive(Default)]
struct Erasures {
    /// Applied by the pipeline, rows possibly still there: drop and hold.
    holding: Vec<(String, Vec<String>)>,
    /// Verified: every row is gone from ClickHouse.
    verified: Vec<(String, Vec<String>)>,
}

/// The newest status of each erasure request, with every customer id any of its
/// rows named.
fn fold_erasures(rows: Vec<ErasureLine>) -> Erasures {
    let mut by: FxHashMap<String, (u64, String, Vec<String>)> = FxHashMap::default();
    for r in rows {
        let e = by
            .entry(r.request_id)
            .or_insert_with(|| (0, String::new(), Vec::new()));
        if r.version >= e.0 {
            e.0 = r.version;
            e.1 = r.status;
        }
        for c in r.customer_ids {
            if !e.2.contains(&c) {
                e.2.push(c);
            }
        }
    }
    let mut out = Erasures::default();
    for (id, (_, status, cids)) in by {
        match status.as_str() {
            "applied" | "completed" | "failed" => out.holding.push((id, cids)),
            "verified" => out.verified.push((id, cids)),
            _ => {}
        }
    }
    out
}

impl ReadModel {
    /// An empty model (not loaded: every question goes to ClickHouse until
    /// [`ReadModel::bootstrap`] finishes).
    pub fn new(q: Queries, poll: Duration) -> ReadModel {
        let recent = usize::try_from(q.recent_events).unwrap_or(usize::MAX);
        ReadModel {
            inner: RwLock::new(Inner::default()),
            status: Status::default(),
            q,
            recent,
            poll,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.status.loaded.load(Ordering::Acquire)
    }

    /// `/health`'s view: loaded, lag, sizes.
    pub fn health(&self) -> Value {
        let s = &self.status;
        let loaded = self.is_loaded();
        let fresh = s.fresh_at_ms.load(Ordering::Relaxed);
        let lag_ms = if loaded {
            Some(now_ms().saturating_sub(fresh))
        } else {
            None
        };
        json!({
            "mode": "memory",
            "loaded": loaded,
            "lag_ms": lag_ms,
            "poll_ms": self.poll.as_millis() as u64,
            "bootstrap_ms": if loaded { Some(s.bootstrap_ms.load(Ordering::Relaxed)) } else { None },
            "version": s.watermark.load(Ordering::Relaxed),
            "profiles": s.profiles.load(Ordering::Relaxed),
            "identifiers": s.identifiers.load(Ordering::Relaxed),
            "events": s.events.load(Ordering::Relaxed),
            "polls_failed": s.polls_failed.load(Ordering::Relaxed),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // a panic while holding the lock leaves consistent maps (every write is a
        // plain insert or remove), so a poisoned lock is still usable
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, a: Answer) -> Option<Option<Value>> {
        match a {
            Answer::Found(e) => match e.render(self.recent) {
                Ok(v) => Some(Some(v)),
                Err(err) => {
                    tracing::warn!(error = %err, "read model: cannot decode an entry; asking ClickHouse");
                    None
                }
            },
            Answer::Gone => Some(None),
            Answer::Miss => None,
        }
    }

    /// The detail of the profile a stored identifier key leads to: `Some(answer)`
    /// when the model knows, `None` when ClickHouse must be asked.
    fn by_key(&self, key: &str) -> Option<Option<Value>> {
        if !self.is_loaded() {
            return None;
        }
        let a = {
            let inner = self.read();
            match inner.ids.get(key) {
                Some(cid) => inner.resolve(cid),
                None => Answer::Miss,
            }
        };
        self.answer(a)
    }

    fn by_customer_id(&self, cid: &str) -> Option<Option<Value>> {
        if !self.is_loaded() {
            return None;
        }
        let a = self.read().resolve(cid);
        self.answer(a)
    }

    /// The name and identifiers of live profile `cid` (exactly that id, as a
    /// `profiles` row by customer id), once the model is loaded.
    pub fn name(&self, cid: &str) -> Option<NameRow> {
        if !self.is_loaded() {
            return None;
        }
        let entry = self.read().live.get(cid)?.clone();
        let p: ProfileRow = postcard::from_bytes(&entry.profile).ok()?;
        Some(NameRow {
            customer_id: p.customer_id,
            display_name: p.display_name,
            identifier_types: p.identifier_types,
            identifier_values: p.identifier_values,
        })
    }

    /// Whether a customer's erasure is in progress (the ClickHouse fallback may still
    /// see its rows).
    fn is_erased(&self, cid: &str) -> bool {
        self.read().erased.contains(cid)
    }

    /// Loads the whole model, retrying while ClickHouse fails; then marks it loaded.
    /// The erasure requests verified before it started.
    pub async fn bootstrap(&self) -> Option<Vec<String>> {
        let policy = RetryPolicy::forever(Duration::from_secs(1), Duration::from_secs(30));
        let started = Instant::now();
        tracing::info!(
            "read model: bootstrap starting; lookups go to ClickHouse until it is loaded"
        );
        let loaded = match retry(&policy, "read_model_bootstrap", || self.load()).await {
            Ok(r) => r,
            Err(e) => {
                // only a permanent error ends the retries: stay on ClickHouse
                tracing::error!(error = %e, "read model: bootstrap failed; lookups stay on ClickHouse");
                return None;
            }
        };
        let max_version = loaded.max_version;
        *self.write() = loaded.inner;
        let ms = started.elapsed().as_millis() as u64;
        self.status.bootstrap_ms.store(ms, Ordering::Relaxed);
        self.status.watermark.store(max_version, Ordering::Relaxed);
        self.status.loaded.store(true, Ordering::Release);
        metrics::gauge!("socialcrm_api_read_model_loaded").set(1.0);
        tracing::info!(
            seconds = ms as f64 / 1000.0,
            profiles = self.status.profiles.load(Ordering::Relaxed),
            identifiers = self.status.identifiers.load(Ordering::Relaxed),
            events = self.status.events.load(Ordering::Relaxed),
            "read model loaded"
        );
        Some(loaded.verified)
    }

    /// Reads everything into a fresh [`Inner`].
    async fn load(&self) -> QResult<Loaded> {
        let started = Instant::now();
        let fresh_at = now_ms();
        let ch = &self.q.client;
        let mut inner = Inner::default();
        let er = fold_erasures(
            ch.query("SELECT request_id, status, version, customer_ids FROM erasures")
                .fetch_all()
                .await?,
        );
        for (_, cids) in &er.holding {
            inner
                .erased
                .extend(cids.iter().map(|c| Arc::<str>::from(c.as_str())));
        }

        // 1. profiles
        tracing::info!("read model: loading profiles");
        let mut builders: FxHashMap<Arc<str>, Builder> = FxHashMap::default();
        // every identifier key of a live profile, for sharing its Arc with `ids`
        let mut key_arcs: FxHashMap<Arc<str>, Arc<str>> = FxHashMap::default();
        let mut max_version = 0u64;
        let mut rows = 0u64;
        let mut cursor = ch
            .query("SELECT ?fields FROM profiles FINAL")
            .fetch::<ProfileRow>()?;
        while let Some(p) = cursor.next().await? {
            rows += 1;
            max_version = max_version.max(p.version);
            if inner.erased.contains(p.customer_id.as_str()) {
                continue;
            }
            let cid: Arc<str> = Arc::from(p.customer_id.as_str());
            if p.is_active == 0 {
                inner.retired.insert(cid, Arc::from(p.merged_into.as_str()));
                continue;
            }
            let keys = profile_keys(&p, &key_arcs);
            for k in keys.iter() {
                key_arcs.insert(k.clone(), cid.clone());
            }
            builders.insert(cid, Builder::new(&p, keys)?);
            progress("profiles", rows, 200_000, started);
        }
        tracing::info!(
            rows,
            live = builders.len(),
            seconds = started.elapsed().as_secs_f64(),
            "read model: profiles loaded"
        );

        // 2. active identities
        let mut rows = 0u64;
        let mut cursor = ch
            .query("SELECT id_type, id_value, customer_id, is_active FROM identities FINAL")
            .fetch::<IdentityLine>()?;
        while let Some(r) = cursor.next().await? {
            rows += 1;
            if r.is_active == 0 {
                continue;
            }
            let k = key_of(&r.id_type, &r.id_value);
            let key = match key_arcs.get_key_value(k.as_str()) {
                Some((a, _)) => a.clone(),
                None => Arc::from(k),
            };
            let cid = match builders.get_key_value(r.customer_id.as_str()) {
                Some((c, _)) => c.clone(),
                None => inner.cid_arc(&r.customer_id),
            };
            inner.ids.insert(key, cid);
        }
        drop(key_arcs);
        tracing::info!(
            rows,
            active = inner.ids.len(),
            seconds = started.elapsed().as_secs_f64(),
            "read model: identities loaded"
        );

        // 3. the scores of each profile's run
        let mut runs: Vec<String> = builders.values().map(|b| b.run_id.clone()).collect();
        runs.sort();
        runs.dedup();
        runs.retain(|r| !r.is_empty());
        let mut rows = 0u64;
        if !runs.is_empty() {
            let sql = format!(
                "SELECT ?fields FROM scores WHERE run_id IN {}",
                in_list(runs.len())
            );
            let mut cursor = bind_all(ch.query(&sql), &runs).fetch::<ScoreRow>()?;
            while let Some(s) = cursor.next().await? {
                rows += 1;
                if let Some(b) = builders.get_mut(s.customer_id.as_str()) {
                    if b.scores.is_none() && b.run_id == s.run_id {
                        b.scores = Some(encode(&s)?);
                    }
                }
            }
        }
        tracing::info!(
            rows,
            runs = runs.len(),
            seconds = started.elapsed().as_secs_f64(),
            "read model: scores loaded"
        );

        // 4. the newest events of every primary identifier
        let sql = format!(
            "SELECT {RECENT_EVENT_COLUMNS} FROM events_by_id FINAL \
             ORDER BY primary_id, occurred_at DESC, event_id DESC LIMIT ? BY primary_id"
        );
        let mut cursor = ch
            .query(&sql)
            .bind(self.q.recent_events)
            .fetch::<RecentEvent>()?;
        let mut rows = 0u64;
        while let Some(e) = cursor.next().await? {
            rows += 1;
            add_event(&mut builders, &inner.ids, e)?;
            progress("events", rows, 2_000_000, started);
        }
        tracing::info!(
            rows,
            seconds = started.elapsed().as_secs_f64(),
            "read model: events loaded"
        );

        let mut events = 0u64;
        inner.live.reserve(builders.len());
        for (cid, b) in builders {
            let (entry, n) = b.finish(self.recent)?;
            events += n;
            inner.live.insert(cid, Arc::new(entry));
        }
        self.status
            .profiles
            .store(inner.live.len() as u64, Ordering::Relaxed);
        self.status
            .identifiers
            .store(inner.ids.len() as u64, Ordering::Relaxed);
        self.status.events.store(events, Ordering::Relaxed);
        self.status.fresh_at_ms.store(fresh_at, Ordering::Relaxed);
        Ok(Loaded {
            inner,
            max_version,
            verified: er.verified.into_iter().map(|(id, _)| id).collect(),
        })
    }

    /// Bootstraps, then polls until the process ends.
    pub async fn run(self: Arc<Self>) {
        let Some(verified) = self.bootstrap().await else {
            return;
        };
        let mut w = Watermarks {
            low: self
                .status
                .watermark
                .load(Ordering::Relaxed)
                .saturating_sub(1),
            high: self.status.watermark.load(Ordering::Relaxed),
        };
        let mut done_erasures: FxHashSet<String> = verified.into_iter().collect();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = now_ms();
            match self.poll_once(&mut w, &mut done_erasures).await {
                Ok(()) => {
                    self.status.fresh_at_ms.store(started, Ordering::Relaxed);
                }
                Err(e) => {
                    self.status.polls_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "read model: poll failed; serving what it holds");
                }
            }
            let lag = now_ms().saturating_sub(self.status.fresh_at_ms.load(Ordering::Relaxed));
            metrics::gauge!("socialcrm_api_read_model_lag_seconds").set(lag as f64 / 1000.0);
            metrics::gauge!("socialcrm_api_read_model_profiles")
                .set(self.status.profiles.load(Ordering::Relaxed) as f64);
        }
    }

    /// One poll: erasures first, then changed profiles.
    async fn poll_once(
        &self,
        w: &mut Watermarks,
        done_erasures: &mut FxHashSet<String>,
    ) -> QResult<()> {
        let ch = &self.q.client;
        let er = fold_erasures(
            ch.query("SELECT request_id, status, version, customer_ids FROM erasures")
                .fetch_all()
                .await?,
        );
        {
            let mut inner = self.write();
            for (id, cids) in &er.holding {
                for c in cids {
                    if !inner.erased.contains(c.as_str()) {
                        tracing::info!(request = %id, customer = %c, "read model: erased customer dropped");
                        inner.erase(c);
                        inner.erased.insert(Arc::from(c.as_str()));
                    }
                }
            }
            // verified: the rows are gone from ClickHouse; nothing needs holding back
            for (id, cids) in &er.verified {
                if done_erasures.insert(id.clone()) {
                    for c in cids {
                        inner.erase(c);
                        inner.erased.remove(c.as_str());
                    }
                    tracing::info!(request = %id, customers = cids.len(), "read model: erasure verified");
                }
            }
        }

        let changed: Vec<Changed> = ch
            .query(
                "SELECT customer_id, max(version) AS top FROM profiles WHERE version > ? \
                 GROUP BY customer_id LIMIT ?",
            )
            .bind(w.low)
            .bind((RELOAD_ABOVE + 1) as u64)
            .fetch_all()
            .await?;
        let top = changed.iter().map(|c| c.top).max().unwrap_or(0);
        if changed.len() > RELOAD_ABOVE {
            tracing::info!(
                changed = changed.len(),
                "read model: many profiles changed; loading everything again"
            );
            let loaded = self.load().await?;
            let max_version = loaded.max_version;
            *self.write() = loaded.inner;
            done_erasures.extend(loaded.verified);
            w.low = max_version.saturating_sub(1);
            w.high = max_version;
            self.status.watermark.store(max_version, Ordering::Relaxed);
            return Ok(());
        }
        let mut cids: Vec<String> = {
            let inner = self.read();
            changed
                .into_iter()
                .map(|c| c.customer_id)
                .filter(|c| !inner.erased.contains(c.as_str()))
                .collect()
        };
        cids.sort();
        for chunk in cids.chunks(CHUNK) {
            self.refresh(chunk).await?;
        }
        if !cids.is_empty() {
            tracing::debug!(profiles = cids.len(), "read model: profiles refreshed");
        }
        // everything above `high` of the last poll is read again next time (see the
        // module doc); the oldest changes are settled
        w.low = w.high;
        w.high = w.high.max(top);
        self.status.watermark.store(w.high, Ordering::Relaxed);
        Ok(())
    }

    /// Re-reads some customers: their rows, the identities of their old and new
    /// identifiers, their scores and events; then swaps them in.
    async fn refresh(&self, cids: &[String]) -> QResult<()> {
        let ch = &self.q.client;
        let sql = format!(
            "SELECT ?fields FROM profiles FINAL WHERE customer_id IN {}",
            in_list(cids.len())
        );
        let rows: Vec<ProfileRow> = bind_all(ch.query(&sql), cids).fetch_all().await?;

        // builders of the live ones, and the keys whose owner may have changed
        let mut builders: FxHashMap<Arc<str>, Builder> = FxHashMap::default();
        let mut retired: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        let mut keys: FxHashSet<Arc<str>> = FxHashSet::default();
        let mut owner: FxHashMap<Arc<str>, Arc<str>> = FxHashMap::default();
        {
            let inner = self.read();
            for c in cids {
                if let Some(e) = inner.live.get(c.as_str()) {
                    keys.extend(e.keys.iter().cloned());
                }
            }
            for p in &rows {
                let cid = inner.cid_arc(&p.customer_id);
                if p.is_active == 0 {
                    retired.push((cid, Arc::from(p.merged_into.as_str())));
                    continue;
                }
                let ks = profile_keys(p, &inner.ids);
                for k in ks.iter() {
                    keys.insert(k.clone());
                    owner.insert(k.clone(), cid.clone());
                }
                builders.insert(cid, Builder::new(p, ks)?);
            }
        }
        let key_set = keys;
        let keys: Vec<Arc<str>> = key_set.iter().cloned().collect();

        // identities of those keys (by primary key: (id_type, id_value))
        let mut idents: Vec<IdentityLine> = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let pairs: Vec<(&str, &str)> = chunk.iter().filter_map(|k| k.split_once(':')).collect();
            if pairs.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT id_type, id_value, customer_id, is_active FROM identities FINAL \
                 WHERE (id_type, id_value) IN ({})",
                vec!["(?, ?)"; pairs.len()].join(", ")
            );
            let mut q = ch.query(&sql);
            for (t, v) in &pairs {
                q = q.bind(*t).bind(*v);
            }
            idents.extend(q.fetch_all::<IdentityLine>().await?);
        }

        // scores of each one's run
        let live: Vec<&str> = builders.keys().map(|c| &**c).collect();
        let mut runs: Vec<String> = builders.values().map(|b| b.run_id.clone()).collect();
        runs.sort();
        runs.dedup();
        runs.retain(|r| !r.is_empty());
        if !live.is_empty() && !runs.is_empty() {
            let sql = format!(
                "SELECT ?fields FROM scores WHERE customer_id IN {} AND run_id IN {}",
                in_list(live.len()),
                in_list(runs.len())
            );
            let scores: Vec<ScoreRow> = bind_all(bind_all(ch.query(&sql), &live), &runs)
                .fetch_all()
                .await?;
            for s in scores {
                if let Some(b) = builders.get_mut(s.customer_id.as_str()) {
                    if b.scores.is_none() && b.run_id == s.run_id {
                        b.scores = Some(encode(&s)?);
                    }
                }
            }
        }

        // events of their identifiers
        let primary: Vec<&str> = owner.keys().map(|k| &**k).collect();
        for chunk in primary.chunks(CHUNK) {
            let sql = format!(
                "SELECT {RECENT_EVENT_COLUMNS} FROM events_by_id FINAL WHERE primary_id IN {} \
                 ORDER BY primary_id, occurred_at DESC, event_id DESC LIMIT ? BY primary_id",
                in_list(chunk.len())
            );
            let lines: Vec<RecentEvent> = bind_all(ch.query(&sql), chunk)
                .bind(self.q.recent_events)
                .fetch_all()
                .await?;
            for e in lines {
                add_event(&mut builders, &owner, e)?;
            }
        }

        let mut entries: Vec<(Arc<str>, Entry, u64)> = Vec::with_capacity(builders.len());
        for (cid, b) in builders {
            let (e, n) = b.finish(self.recent)?;
            entries.push((cid, e, n));
        }

        let mut inner = self.write();
        let mut events_delta: i64 = 0;
        for p in &rows {
            if let Some(old) = inner.drop_live(&p.customer_id) {
                events_delta -= count_events(&old) as i64;
            }
        }
        for (cid, into) in retired {
            if inner.erased.contains(&*cid) {
                continue;
            }
            inner.retired.insert(cid, into);
        }
        for (cid, e, n) in entries {
            if inner.erased.contains(&*cid) {
                continue;
            }
            inner.retired.remove(&*cid);
            events_delta += n as i64;
            inner.live.insert(cid, Arc::new(e));
        }
        for r in &idents {
            let k = key_of(&r.id_type, &r.id_value);
            let key = match key_set.get(k.as_str()) {
                Some(a) => a.clone(),
                None => Arc::from(k),
            };
            if r.is_active == 1 && !inner.erased.contains(r.customer_id.as_str()) {
                let cid = inner.cid_arc(&r.customer_id);
                inner.ids.insert(key, cid);
            } else {
                inner.ids.remove(&key);
            }
        }
        // keys that have no identity row any more (deleted): no longer lead anywhere
        let have: FxHashSet<String> = idents
            .iter()
            .map(|r| key_of(&r.id_type, &r.id_value))
            .collect();
        for k in &keys {
            if !have.contains(&**k) {
                inner.ids.remove(k);
            }
        }
        let st = &self.status;
        st.profiles
            .store(inner.live.len() as u64, Ordering::Relaxed);
        st.identifiers
            .store(inner.ids.len() as u64, Ordering::Relaxed);
        let ev = st.events.load(Ordering::Relaxed) as i64 + events_delta;
        st.events.store(ev.max(0) as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Logs every `every` rows of a bootstrap step.
fn progress(what: &str, rows: u64, every: u64, started: Instant) {
    if rows.is_multiple_of(every) {
        tracing::info!(
            step = what,
            rows,
            seconds = started.elapsed().as_secs_f64(),
            "read model: loading"
        );
    }
}

fn count_events(e: &Entry) -> u64 {
    postcard::from_bytes::<Vec<StoredEvent>>(&e.events).map_or(0, |v| v.len() as u64)
}

/// What a full load produced.
struct Loaded {
    inner: Inner,
    /// The highest profile version read.
    max_version: u64,
    /// Erasure requests already verified (nothing of them was loaded).
    verified: Vec<String>,
}

/// Versions already read: `version > low` is read at each poll.
struct Watermarks {
    low: u64,
    high: u64,
}

/// Profile answers for the API: the read model when it knows, ClickHouse otherwise.
#[derive(Clone)]
pub struct Profiles {
    pub q: Queries,
    pub model: Option<Arc<ReadModel>>,
}

impl Profiles {
    /// The detail of the profile `type:value` leads to (merges followed), or `None`.
    pub async fn by_identifier(&self, identifier: &str) -> QResult<Option<Value>> {
        let id = self.q.stored_identifier(identifier)?;
        if let Some(m) = &self.model {
            if let Some(answer) = m.by_key(&id.key()) {
                metrics::counter!("socialcrm_api_read_model_answers_total", "from" => "memory")
                    .increment(1);
                return Ok(answer);
            }
        }
        let p = self.q.lookup(identifier).await?;
        self.detail(p).await
    }

    /// The detail of a customer id's live profile (merges followed), or `None`.
    pub async fn by_customer(&self, customer_id: &str) -> QResult<Option<Value>> {
        if let Some(m) = &self.model {
            if let Some(answer) = m.by_customer_id(customer_id) {
                metrics::counter!("socialcrm_api_read_model_answers_total", "from" => "memory")
                    .increment(1);
                return Ok(answer);
            }
        }
        let p = self.q.by_customer(customer_id).await?;
        self.detail(p).await
    }

    /// The ClickHouse path's answer, minus customers being erased.
    async fn detail(&self, p: Option<ProfileRow>) -> QResult<Option<Value>> {
        if self.model.is_some() {
            metrics::counter!("socialcrm_api_read_model_answers_total", "from" => "clickhouse")
                .increment(1);
        }
        let Some(p) = p else {
            return Ok(None);
        };
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.is_erased(&p.customer_id))
        {
            return Ok(None);
        }
        Ok(Some(self.q.profile_detail(&p).await?))
    }

    /// `/health`'s `read_model` object.
    pub fn health(&self) -> Value {
        match &self.model {
            Some(m) => m.health(),
            None => json!({"mode": "clickhouse", "loaded": false}),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(id: &str, status: &str, version: u64, cids: &[&str]) -> ErasureLine {
        ErasureLine {
            request_id: id.into(),
            status: status.into(),
            version,
            customer_ids: cids.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn erasures_are_held_from_applied_and_released_when_verified() {
        let e = fold_erasures(vec![
            line("r1", "requested", 1, &["c_1"]),
            line("r1", "applied", 2, &["c_1", "c_2"]),
            line("r2", "requested", 1, &["c_3"]),
            line("r3", "verified", 5, &["c_4"]),
            line("r3", "completed", 4, &[]),
        ]);
        assert_eq!(e.holding.len(), 1);
        assert_eq!(e.holding[0].0, "r1");
        assert_eq!(e.holding[0].1, vec!["c_1", "c_2"]);
        assert_eq!(e.verified.len(), 1);
        assert_eq!(e.verified[0].1, vec!["c_4"]);
    }

    fn entry(keys: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            keys: keys.iter().map(|k| Arc::<str>::from(*k)).collect(),
            profile: Box::new([]),
            scores: None,
            events: Box::new([]),
        })
    }

    #[test]
    fn merges_are_followed_and_erased_customers_are_gone() {
        let mut inner = Inner::default();
        inner.live.insert("c_a".into(), entry(&["email:a"]));
        inner.retired.insert("c_b".into(), "c_a".into());
        inner.retired.insert("c_x".into(), "".into());
        inner.ids.insert("email:a".into(), "c_a".into());
        inner.ids.insert("email:b".into(), "c_b".into());
        assert!(matches!(inner.resolve("c_b"), Answer::Found(_)));
        assert!(matches!(inner.resolve("c_x"), Answer::Gone));
        assert!(matches!(inner.resolve("c_new"), Answer::Miss));
        inner.erase("c_a");
        inner.erased.insert("c_a".into());
        assert!(matches!(inner.resolve("c_a"), Answer::Gone));
        assert!(matches!(inner.resolve("c_b"), Answer::Gone));
        assert!(!inner.ids.contains_key("email:a"));
        // once verified, the rows are gone from ClickHouse too: a miss
        inner.erased.remove("c_a");
        assert!(matches!(inner.resolve("c_b"), Answer::Miss));
    }

    #[test]
    fn a_chain_longer_than_the_limit_is_asked_of_clickhouse() {
        let mut inner = Inner::default();
        for i in 0..20 {
            inner
                .retired
                .insert(format!("c_{i}").into(), format!("c_{}", i + 1).into());
        }
        assert!(matches!(inner.resolve("c_0"), Answer::Miss));
    }

    #[test]
    fn events_keep_the_newest_over_all_identifiers() {
        let ev = |id: &str, at: u32, primary: u16| StoredEvent {
            event_id: id.into(),
            occurred_at: at,
            primary,
            source: "web".into(),
            channel: "web".into(),
            event_type: "page".into(),
            name: String::new(),
            revenue_amount: 0.0,
            revenue_currency: String::new(),
        };
        let mut b = Builder {
            keys: vec![Arc::<str>::from("email:a"), Arc::<str>::from("x:1")].into(),
            profile: Box::new([]),
            run_id: String::new(),
            scores: None,
            events: Vec::new(),
        };
        for e in [
            ev("e1", 10, 0),
            ev("e3", 30, 0),
            ev("e2", 30, 1),
            ev("e0", 5, 1),
        ] {
            b.push(&e).unwrap();
        }
        let (e, n) = b.finish(3).unwrap();
        assert_eq!(n, 3);
        let got: Vec<StoredEvent> = postcard::from_bytes(&e.events).unwrap();
        let ids: Vec<&str> = got.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e3", "e2", "e1"]);
    }
}
