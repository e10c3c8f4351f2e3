//! `socialcrm score run`: reads per-customer facts and the interaction graph from
//! ClickHouse, computes every score (model.rs, pagerank.rs), writes one row per
//! customer to `crm.scores` and a summary row to `crm.score_runs`. `crm.v_scores`
//! shows the newest completed run.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;

use super::config::ScoringConfig;
use super::incremental::IncrementalModel;
use super::model::{decay, CustomerFacts, Ranked, Scored, TypeAgg};
use super::pagerank::{pagerank, Graph};

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error("clickhouse ({what}): {source}")]
    ClickHouse {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("cannot encode score components: {0}")]
    Encode(#[from] serde_json::Error),
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> ScoringError {
    move |source| ScoringError::ClickHouse { what, source }
}

// The queries live in files so that the chDB compatibility test runs the same text.
const SQL_EVENTS: &str = include_str!("sql/events.sql");
const SQL_IDENTITIES: &str = include_str!("sql/identities.sql");
const SQL_LEADERBOARDS: &str = include_str!("sql/leaderboards.sql");

/// Customers kept per network in a run's influencer leaderboards
/// (`crm.influencer_ranks`); a longer top list is ranked from the run's scores.
pub const LEADERBOARD_ROWS: u64 = 1000;

/// The statement that fills a run's leaderboards in database `db`; its parameters
/// (`?`) are the run id and [`LEADERBOARD_ROWS`].
pub fn leaderboards_sql(db: &str) -> String {
    sql(SQL_LEADERBOARDS, db)
}

/// A query file for database `db`, without its comment lines.
fn sql(text: &str, db: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{db}", db)
}

/// One event as the run reads it (`sql/events.sql`), borrowed from the response
/// buffer.
#[derive(Debug, Row, Deserialize)]
pub struct EventFact<'a> {
    pub customer_id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub channel: &'a str,
    /// The source's prefix (`mastodon` of `mastodon:m.social`).
    pub network: &'a str,
    pub occurred_at: u32,
    pub revenue_amount: f64,
    /// -1: not given.
    pub followers_count: f64,
    #[serde(borrow)]
    pub categories: Vec<&'a str>,
    #[serde(borrow)]
    pub target_types: Vec<&'a str>,
    #[serde(borrow)]
    pub target_values: Vec<&'a str>,
}

#[derive(Debug, Row, Deserialize)]
struct IdentityRow<'a> {
    id_type: &'a str,
    id_value: &'a str,
    customer_id: &'a str,
}

/// A 128-bit fingerprint of an id within one run (xxh3 with a seed drawn per run):
/// the fold keys its tables by these instead of strings, so that a lookup touches
/// one slot of the table and not a string's heap copy. Two different ids of a run
/// share a fingerprint with a probability below 1e-20 even at a billion ids.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct Fp(u64, u64);

/// Fingerprints ids with one seed.
struct Fingerprints {
    seed: u64,
    buf: Vec<u8>,
}

impl Fingerprints {
    fn new(seed: u64) -> Self {
        Fingerprints {
            seed,
            buf: Vec::new(),
        }
    }

    fn of(&self, id: &str) -> Fp {
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(id.as_bytes(), self.seed);
        Fp(h as u64, (h >> 64) as u64)
    }

    /// An identifier: its type and value (a NUL between them cannot occur in a type).
    fn of_identifier(&mut self, id_type: &str, id_value: &str) -> Fp {
        self.buf.clear();
        self.buf.extend_from_slice(id_type.as_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(id_value.as_bytes());
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(&self.buf, self.seed ^ 0x5bd1_e995);
        Fp(h as u64, (h >> 64) as u64)
    }
}

/// Fingerprint → number, open addressing with linear probing, at most half full:
/// a lookup mostly reads one cache line (a general hash map reads its control
/// bytes and then the slot, two lines on a table this size).
struct FpTable {
    /// (key, value); value `EMPTY` marks a free slot
    slots: Vec<(Fp, u32)>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

impl FpTable {
    fn new() -> Self {
        FpTable {
            slots: vec![(Fp::default(), EMPTY); 1024],
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn get(&self, k: Fp) -> Option<u32> {
        let mask = self.mask();
        let mut s = k.0 as usize & mask;
        loop {
            let (key, v) = self.slots[s];
            if v == EMPTY {
                return None;
            }
            if key == k {
                return Some(v);
            }
            s = (s + 1) & mask;
        }
    }

    /// The value of `k`, or `make()` stored as its value.
    fn get_or_insert_with(&mut self, k: Fp, make: impl FnOnce() -> u32) -> u32 {
        let mask = self.mask();
        let mut s = k.0 as usize & mask;
        loop {
            let (key, v) = self.slots[s];
            if v == EMPTY {
                break;
            }
            if key == k {
                return v;
            }
            s = (s + 1) & mask;
        }
        let v = make();
        self.slots[s] = (k, v);
        self.len += 1;
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
        v
    }

    fn insert(&mut self, k: Fp, v: u32) {
        let mask = self.mask();
        let mut s = k.0 as usize & mask;
        while self.slots[s].1 != EMPTY && self.slots[s].0 != k {
            s = (s + 1) & mask;
        }
        if self.slots[s].1 == EMPTY {
            self.len += 1;
        }
        self.slots[s] = (k, v);
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![(Fp::default(), EMPTY); size]);
        let mask = self.mask();
        for (k, v) in old {
            if v != EMPTY {
                let mut s = k.0 as usize & mask;
                while self.slots[s].1 != EMPTY {
                    s = (s + 1) & mask;
                }
                self.slots[s] = (k, v);
            }
        }
    }
}

/// A customer's running aggregates for one event type and channel (`kind`).
#[derive(Clone, Copy, Default)]
struct Agg {
    kind: u32,
    count: u32,
    in_window: u32,
    last_at: u32,
    decayed: f64,
}

/// What the fold keeps per customer while it reads: compact, with the first
/// aggregates inline so that one event touches one place.
#[derive(Default)]
struct Acc {
    inline: [Agg; 4],
    n_inline: u8,
    /// an event of theirs was read (customers met only as identifier owners or
    /// targets have none)
    active: bool,
    orders: u32,
    first_order_at: u32,
    last_order_at: u32,
    monetary: f64,
    more: Vec<Agg>,
}

impl Acc {
    fn agg(&mut self, kind: u32) -> &mut Agg {
        let n = self.n_inline as usize;
        if let Some(k) = self.inline[..n].iter().position(|a| a.kind == kind) {
            return &mut self.inline[k];
        }
        if n < self.inline.len() {
            self.n_inline += 1;
            self.inline[n] = Agg {
                kind,
                ..Agg::default()
            };
            return &mut self.inline[n];
        }
        let k = match self.more.iter().position(|a| a.kind == kind) {
            Some(k) => k,
            None => {
                self.more.push(Agg {
                    kind,
                    ..Agg::default()
                });
                self.more.len() - 1
            }
        };
        &mut self.more[k]
    }

    fn aggs(&self) -> impl Iterator<Item = &Agg> {
        self.inline[..self.n_inline as usize]
            .iter()
            .chain(&self.more)
    }
}

/// Customers by id, numbered when first met: as an event's actor or as the owner
/// of an identifier.
struct Customers {
    index: FpTable,
    ids: Vec<Box<str>>,
    acc: Vec<Acc>,
}

impl Customers {
    fn new() -> Self {
        Customers {
            index: FpTable::new(),
            ids: Vec::new(),
            acc: Vec::new(),
        }
    }

    /// The number of customer `id` (fingerprint `fp`), added if new.
    fn idx(&mut self, fp: Fp, id: &str) -> usize {
        let (ids, acc) = (&mut self.ids, &mut self.acc);
        self.index.get_or_insert_with(fp, || {
            ids.push(id.into());
            acc.push(Acc::default());
            (ids.len() - 1) as u32
        }) as usize
    }
}

/// The few distinct event types, channels and networks of a run, each kept once
/// (shared by every customer's facts) with a number for cheap keys.
#[derive(Default)]
struct Interner {
    names: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, u32>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let name: Arc<str> = s.into();
        let i = self.names.len() as u32;
        self.names.push(name.clone());
        self.ids.insert(name, i);
        i
    }

    fn name(&self, i: u32) -> &Arc<str> {
        &self.names[i as usize]
    }
}

/// A per-name weight from the config, looked up once per distinct name.
struct WeightOf<'c> {
    weights: &'c std::collections::BTreeMap<String, f64>,
    cache: Vec<Option<f64>>,
}

impl<'c> WeightOf<'c> {
    fn new(weights: &'c std::collections::BTreeMap<String, f64>) -> Self {
        WeightOf {
            weights,
            cache: Vec::new(),
        }
    }

    fn get(&mut self, names: &Interner, i: u32) -> f64 {
        let i = i as usize;
        if self.cache.len() <= i {
            self.cache.resize(i + 1, None);
        }
        *self.cache[i].get_or_insert_with(|| {
            self.weights
                .get(&**names.name(i as u32))
                .copied()
                .unwrap_or(0.0)
        })
    }
}

/// One row of `crm.scores`.
pub type ScoreRow = Scored;

#[derive(Debug, Row, Serialize)]
struct RunRow {
    run_id: String,
    started_at: u32,
    finished_at: u32,
    as_of: u32,
    customers: u64,
    edges: u64,
    pagerank_iterations: u32,
    pagerank_delta: f64,
    seconds: f64,
    config: String,
}

/// One row of `crm.score_models`: the distributions of a run, for the pipeline's
/// incremental updates (`incremental::IncrementalModel`, JSON).
#[derive(Debug, Row, Serialize, Deserialize)]
pub struct ModelRow {
    pub run_id: String,
    pub as_of: u32,
    pub model: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub as_of: DateTime<Utc>,
    pub customers: usize,
    pub edges: usize,
    pub pagerank_iterations: u32,
    pub pagerank_delta: f64,
    pub read_secs: f64,
    pub compute_secs: f64,
    pub write_secs: f64,
}

/// Folds a run's events, one at a time and in any order, into every customer's
/// facts and the interaction graph: per customer, event type and channel the
/// count, decayed count, count in the window and newest time; orders and revenue;
/// the latest follower count per network; weighted product categories; and per
/// (actor, target's customer, event type, network) the number of interactions.
/// Interaction targets resolve through the identities given with
/// [`Fold::identity`] before the first event.
pub struct Fold<'c> {
    cfg: &'c ScoringConfig,
    now_s: i64,
    window_from: i64,
    fps: Fingerprints,
    customers: Customers,
    /// identifier → its customer's number
    owners: FpTable,
    names: Interner,
    affinity: WeightOf<'c>,
    amplification: WeightOf<'c>,
    /// (event type, channel) pairs of the aggregates, numbered
    agg_kinds: Pairs,
    /// (event type, network) pairs of the edges, numbered
    edge_kinds: Pairs,
    /// (customer, network) → (time, follower count) of the newest count
    followers: FxHashMap<(u32, u32), (u32, f64)>,
    /// (customer, category) → Σ affinity weight
    categories: FxHashMap<(u32, u32), f64>,
    /// one (actor, target, edge kind) per interaction; counted in `finish`
    interactions: Vec<(u32, u32, u32)>,
    events: u64,
}

/// Pairs of interned names, numbered in the order first seen.
#[derive(Default)]
struct Pairs {
    ids: FxHashMap<(u32, u32), u32>,
    list: Vec<(u32, u32)>,
}

impl Pairs {
    fn id(&mut self, pair: (u32, u32)) -> u32 {
        if let Some(&k) = self.ids.get(&pair) {
            return k;
        }
        let k = self.list.len() as u32;
        self.list.push(pair);
        self.ids.insert(pair, k);
        k
    }
}

/// The facts of a run and its interaction graph (customer indexes into the facts,
/// weighted; one entry per actor, target, event type and network).
pub struct Folded {
    pub facts: Vec<CustomerFacts>,
    pub edges: Vec<(u32, u32, f64)>,
}

impl<'c> Fold<'c> {
    /// A fold as of `now_s` whose fingerprints use `seed` (draw one per run).
    pub fn new(cfg: &'c ScoringConfig, now_s: i64, seed: u64) -> Self {
        Fold {
            cfg,
            now_s,
            window_from: now_s - cfg.window_days as i64 * 86_400,
            fps: Fingerprints::new(seed),
            customers: Customers::new(),
            owners: FpTable::new(),
            names: Interner::default(),
            affinity: WeightOf::new(&cfg.affinity_weights),
            amplification: WeightOf::new(&cfg.amplification_weights),
            agg_kinds: Pairs::default(),
            edge_kinds: Pairs::default(),
            followers: FxHashMap::default(),
            categories: FxHashMap::default(),
            interactions: Vec::new(),
            events: 0,
        }
    }

    /// Identifier `id_type:id_value` belongs to `customer_id` now.
    pub fn identity(&mut self, id_type: &str, id_value: &str, customer_id: &str) {
        let c = self.fps.of(customer_id);
        let i = self.customers.idx(c, customer_id) as u32;
        let id = self.fps.of_identifier(id_type, id_value);
        self.owners.insert(id, i);
    }

    pub fn identities(&self) -> usize {
        self.owners.len()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Customers met so far, as actors or as identifier owners.
    pub fn customers(&self) -> usize {
        self.customers.ids.len()
    }

    pub fn add(&mut self, e: &EventFact<'_>) {
        self.events += 1;
        let fp = self.fps.of(e.customer_id);
        let i = self.customers.idx(fp, e.customer_id);
        let t = self.names.id(e.event_type);
        let c = self.names.id(e.channel);
        let kind = self.agg_kinds.id((t, c));
        let at = e.occurred_at;
        let acc = &mut self.customers.acc[i];
        acc.active = true;
        match e.event_type {
            "order" => {
                if acc.orders == 0 {
                    (acc.first_order_at, acc.last_order_at) = (at, at);
                }
                acc.orders = acc.orders.saturating_add(1);
                acc.monetary += e.revenue_amount;
                acc.first_order_at = acc.first_order_at.min(at);
                acc.last_order_at = acc.last_order_at.max(at);
            }
            // refunds reduce monetary value whichever sign the source used
            "refund" => acc.monetary -= e.revenue_amount.abs(),
            _ => {}
        }
        let decayed = decay((self.now_s - at as i64) as f64, self.cfg.half_life_days);
        let a = acc.agg(kind);
        a.count = a.count.saturating_add(1);
        a.decayed += decayed;
        a.in_window += u32::from(at as i64 >= self.window_from);
        a.last_at = a.last_at.max(at);
        if e.followers_count >= 0.0 {
            let net = self.names.id(e.network);
            let newest = self
                .followers
                .entry((i as u32, net))
                .or_insert((at, e.followers_count));
            // the newest count; of two at the same second, the larger
            if (at, e.followers_count) > *newest {
                *newest = (at, e.followers_count);
            }
        }
        if !e.categories.is_empty() {
            let w = self.affinity.get(&self.names, t);
            if w > 0.0 {
                for cat in &e.categories {
                    let k = self.names.id(cat);
                    *self.categories.entry((i as u32, k)).or_default() += w;
                }
            }
        }
        if !e.target_types.is_empty() && self.amplification.get(&self.names, t) > 0.0 {
            let net = self.names.id(e.network);
            let kind = self.edge_kinds.id((t, net));
            for (tt, tv) in e.target_types.iter().zip(&e.target_values) {
                let id = self.fps.of_identifier(tt, tv);
                match self.owners.get(id) {
                    // an interaction with oneself is no edge
                    Some(d) if d as usize != i => self.interactions.push((i as u32, d, kind)),
                    Some(_) => {}
                    None => {} // nobody resolved this target to a profile
                }
            }
        }
    }

    /// The facts of the customers with an event or an interaction aimed at them
    /// (each customer's per-network lists sorted by name) and the weighted graph.
    pub fn finish(mut self) -> Folded {
        let Customers { ids, acc, .. } = self.customers;
        let mut interactions = self.interactions;
        let mut targeted = vec![false; ids.len()];
        for &(_, d, _) in &interactions {
            targeted[d as usize] = true;
        }
        // customers met only as identifier owners are left out; the others are
        // numbered anew
        let mut new_idx = vec![u32::MAX; ids.len()];
        let mut facts = Vec::new();
        for (i, (id, a)) in ids.into_iter().zip(acc).enumerate() {
            if !a.active && !targeted[i] {
                continue;
            }
            new_idx[i] = facts.len() as u32;
            let aggs = a
                .aggs()
                .map(|g| {
                    let (t, c) = self.agg_kinds.list[g.kind as usize];
                    TypeAgg {
                        event_type: self.names.name(t).clone(),
                        channel: self.names.name(c).clone(),
                        count: u64::from(g.count),
                        decayed: g.decayed,
                        in_window: u64::from(g.in_window),
                        last_at: i64::from(g.last_at),
                    }
                })
                .collect();
            let ordered = a.orders > 0;
            facts.push(CustomerFacts {
                customer_id: id.into(),
                aggs,
                orders: u64::from(a.orders),
                first_order_at: ordered.then_some(i64::from(a.first_order_at)),
                last_order_at: ordered.then_some(i64::from(a.last_order_at)),
                monetary: a.monetary,
                ..CustomerFacts::default()
            });
        }
        drop(targeted);
        for ((i, net), (_, n)) in self.followers {
            facts[new_idx[i as usize] as usize]
                .followers
                .push((self.names.name(net).to_string(), n));
        }
        for ((i, cat), w) in self.categories {
            facts[new_idx[i as usize] as usize]
                .categories
                .push((self.names.name(cat).to_string(), w));
        }
        let kind_w: Vec<f64> = self
            .edge_kinds
            .list
            .iter()
            .map(|&(t, _)| self.amplification.get(&self.names, t))
            .collect();
        // one edge per actor, target and kind, weighted by its interactions
        interactions.sort_unstable();
        let mut amp: FxHashMap<(u32, u32), f64> = FxHashMap::default();
        let mut edges: Vec<(u32, u32, f64)> = Vec::new();
        for run in interactions.chunk_by(|a, b| a == b) {
            let (s, d, kind) = run[0];
            let (s, d) = (new_idx[s as usize], new_idx[d as usize]);
            let w = kind_w[kind as usize] * run.len() as f64;
            edges.push((s, d, w));
            let net = self.edge_kinds.list[kind as usize].1;
            *amp.entry((d, net)).or_default() += w;
        }
        drop(interactions);
        for ((i, net), a) in amp {
            facts[i as usize]
                .amplification
                .push((self.names.name(net).to_string(), a));
        }
        for f in facts.iter_mut() {
            f.followers.sort_by(|a, b| a.0.cmp(&b.0));
            f.amplification.sort_by(|a, b| a.0.cmp(&b.0));
            f.categories.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Folded { facts, edges }
    }
}

/// Events between two progress lines of a run.
const PROGRESS_EVERY: u64 = 2_000_000;

/// Reads the facts of every customer as of `now` and their interaction graph, in
/// one pass over `v_events` that this process folds while ClickHouse streams it.
pub async fn load_facts(
    client: &clickhouse::Client,
    db: &str,
    now: DateTime<Utc>,
    cfg: &ScoringConfig,
) -> Result<Folded, ScoringError> {
    let now_s = now.timestamp().max(0);
    let mut fold = Fold::new(cfg, now_s, random_seed());
    let mut cursor = client
        .query(&sql(SQL_IDENTITIES, db))
        .fetch::<IdentityRow<'_>>()
        .map_err(ch("identities"))?;
    while let Some(r) = cursor.next().await.map_err(ch("identities"))? {
        fold.identity(r.id_type, r.id_value, r.customer_id);
    }
    tracing::info!(identifiers = fold.identities(), "scoring: identities read");
    let mut cursor = client
        .query(&sql(SQL_EVENTS, db))
        .bind(now_s as u32)
        .fetch::<EventFact<'_>>()
        .map_err(ch("events"))?;
    while let Some(e) = cursor.next().await.map_err(ch("events"))? {
        fold.add(&e);
        if fold.events().is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(
                events = fold.events(),
                customers = fold.customers(),
                "scoring: reading events"
            );
        }
    }
    tracing::info!(
        events = fold.events(),
        customers = fold.customers(),
        "scoring: events read"
    );
    Ok(fold.finish())
}

/// Runs PageRank over the nodes that have an edge and stores each node's rank.
pub fn apply_pagerank(
    facts: &mut [CustomerFacts],
    edges: &[(u32, u32, f64)],
    cfg: &ScoringConfig,
) -> (u32, f64) {
    // nodes of the graph: customers with at least one edge
    let mut node_of = vec![u32::MAX; facts.len()];
    let mut nodes: Vec<usize> = Vec::new();
    for &(s, d, _) in edges {
        for v in [s as usize, d as usize] {
            if node_of[v] == u32::MAX {
                node_of[v] = nodes.len() as u32;
                nodes.push(v);
            }
        }
    }
    let local: Vec<(u32, u32, f64)> = edges
        .iter()
        .map(|&(s, d, w)| (node_of[s as usize], node_of[d as usize], w))
        .collect();
    let g = Graph::from_edges(nodes.len(), &local);
    let pr = pagerank(
        &g,
        cfg.pagerank_damping,
        cfg.pagerank_tolerance,
        cfg.pagerank_max_iterations,
    );
    let n = nodes.len() as f64;
    for (k, &v) in nodes.iter().enumerate() {
        // scaled so that the average node has 1.0: comparable across graph sizes
        facts[v].pagerank = Some(pr.rank[k] * n);
    }
    (pr.iterations, pr.delta)
}

/// Inserts of a run's scores that run at once: ClickHouse parses each insert on
/// one thread, so two keep both cores of a small machine busy.
const INSERT_STREAMS: usize = 2;

/// Builds a run's rows and writes them to `crm.scores`, in inserts of `batch`
/// rows, from [`INSERT_STREAMS`] threads that each take a contiguous part of the
/// customers: one builds rows while another's insert is parsed, and only the rows
/// of the inserts in flight are held.
fn write_scores(
    client: &clickhouse::Client,
    ranked: &Ranked<'_>,
    run_id: &str,
    at: u32,
    batch: usize,
) -> Result<(), ScoringError> {
    let handle = tokio::runtime::Handle::current();
    let customers = ranked.len();
    let written = std::sync::atomic::AtomicUsize::new(0);
    let per = customers.div_ceil(INSERT_STREAMS).max(1);
    let batch = batch.max(1);
    std::thread::scope(|scope| {
        let streams: Vec<_> = (0..customers)
            .step_by(per)
            .map(|from| {
                let (handle, written) = (&handle, &written);
                scope.spawn(move || -> Result<(), ScoringError> {
                    let to = (from + per).min(customers);
                    for start in (from..to).step_by(batch) {
                        let rows: Vec<Scored> = (start..(start + batch).min(to))
                            .map(|i| Scored {
                                run_id: run_id.to_string(),
                                scored_at: at,
                                ..ranked.build(i)
                            })
                            .collect();
                        handle.block_on(async {
                            let mut insert = client
                                .insert::<ScoreRow>("scores")
                                .await
                                .map_err(ch("insert scores"))?;
                            for row in &rows {
                                insert.write(row).await.map_err(ch("insert scores"))?;
                            }
                            insert.end().await.map_err(ch("insert scores"))
                        })?;
                        let written = written
                            .fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed)
                            + rows.len();
                        tracing::info!(written, customers, "scores written");
                    }
                    Ok(())
                })
            })
            .collect();
        for stream in streams {
            match stream.join() {
                Ok(done) => done?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    })
}

/// One full scoring run as of `now`.
pub async fn run(
    chc: &ClickHouseConfig,
    cfg: &ScoringConfig,
    now: DateTime<Utc>,
) -> Result<RunReport, ScoringError> {
    let started = Utc::now();
    let client = chc.client();
    let db = chc.database.as_str();
    let t = Instant::now();
    let Folded {
        mut facts,
        edges: graph_edges,
    } = load_facts(&client, db, now, cfg).await?;
    let edges = graph_edges.len();
    tracing::info!(edges, "scoring: interaction graph built");
    let (iterations, delta) = apply_pagerank(&mut facts, &graph_edges, cfg);
    drop(graph_edges);
    let read_secs = t.elapsed().as_secs_f64();
    tracing::info!(
        customers = facts.len(),
        edges,
        read_secs,
        "scoring facts loaded"
    );
    let t = Instant::now();
    let now_s = now.timestamp().max(0);
    let run_id = format!(
        "{}-{:08x}",
        started.format("%Y%m%dT%H%M%S%.3fZ"),
        rand_suffix()
    );
    // ranking is the part every row needs; each row (with its components) is
    // built while the rows before it are written
    let (ranked, model) = tokio::task::block_in_place(|| {
        let ranked = Ranked::new(&facts, now_s, cfg);
        let model = IncrementalModel::from_ranked(&run_id, now_s, cfg, &facts, &ranked);
        (ranked, model)
    });
    let compute_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let customers = ranked.len();
    let at = now_s as u32;
    tokio::task::block_in_place(|| write_scores(&client, &ranked, &run_id, at, cfg.insert_batch))?;
    drop(ranked);
    drop(facts);
    // the leaderboards and the model of the incremental updates, before the run
    // counts as complete
    client
        .query(&leaderboards_sql(db))
        .bind(&run_id)
        .bind(LEADERBOARD_ROWS)
        .execute()
        .await
        .map_err(ch("insert influencer_ranks"))?;
    let mut insert = client
        .insert::<ModelRow>("score_models")
        .await
        .map_err(ch("insert score_models"))?;
    insert
        .write(&ModelRow {
            run_id: run_id.clone(),
            as_of: at,
            model: serde_json::to_string(&model)?,
        })
        .await
        .map_err(ch("insert score_models"))?;
    insert.end().await.map_err(ch("insert score_models"))?;
    let write_secs = t.elapsed().as_secs_f64();
    let finished = Utc::now();
    let mut insert = client
        .insert::<RunRow>("score_runs")
        .await
        .map_err(ch("insert score_runs"))?;
    insert
        .write(&RunRow {
            run_id: run_id.clone(),
            started_at: started.timestamp().max(0) as u32,
            finished_at: finished.timestamp().max(0) as u32,
            as_of: at,
            customers: customers as u64,
            edges: edges as u64,
            pagerank_iterations: iterations,
            pagerank_delta: delta,
            seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
            config: serde_json::to_string(cfg)?,
        })
        .await
        .map_err(ch("insert score_runs"))?;
    insert.end().await.map_err(ch("insert score_runs"))?;
    Ok(RunReport {
        run_id,
        as_of: now,
        customers,
        edges,
        pagerank_iterations: iterations,
        pagerank_delta: delta,
        read_secs,
        compute_secs,
        write_secs,
    })
}

fn rand_suffix() -> u32 {
    random_seed() as u32
}

/// A number that differs per call and per process (std's randomly keyed hasher).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: u32 = 86_400;

    fn ev<'a>(who: &'a str, t: &'a str, ch: &'a str, days_ago: u32) -> EventFact<'a> {
        EventFact {
            customer_id: who,
            event_type: t,
            channel: ch,
            network: if ch == "social" { "mastodon" } else { ch },
            occurred_at: NOW as u32 - days_ago * DAY,
            revenue_amount: 0.0,
            followers_count: -1.0,
            categories: Vec::new(),
            target_types: Vec::new(),
            target_values: Vec::new(),
        }
    }

    fn aimed<'a>(mut e: EventFact<'a>, handle: &'a str) -> EventFact<'a> {
        e.target_types = vec!["mastodon"];
        e.target_values = vec![handle];
        e
    }

    fn fold(events: &[EventFact<'_>], cfg: &ScoringConfig) -> Folded {
        let mut f = Fold::new(cfg, NOW, 7);
        f.identity("mastodon", "@carl@m.social", "c_carl");
        f.identity("mastodon", "@ann@m.social", "c_ann");
        // owns an identifier but has no event and nobody aims at them
        f.identity("email", "olga@x.io", "c_olga");
        for e in events {
            f.add(e);
        }
        f.finish()
    }

    fn facts_of<'f>(f: &'f Folded, who: &str) -> &'f CustomerFacts {
        f.facts
            .iter()
            .find(|c| c.customer_id == who)
            .unwrap_or_else(|| panic!("{who} not in the facts"))
    }

    fn world() -> Vec<EventFact<'static>> {
        let mut order = ev("c_ann", "order", "shop", 10);
        order.revenue_amount = 40.0;
        order.categories = vec!["shoes", "bags"];
        let mut order2 = ev("c_ann", "order", "shop", 40);
        order2.revenue_amount = 60.0;
        order2.categories = vec!["shoes"];
        let mut refund = ev("c_ann", "refund", "shop", 5);
        refund.revenue_amount = -15.0;
        let mut post = ev("c_carl", "post", "social", 2);
        post.followers_count = 120.0;
        let mut old_post = ev("c_carl", "post", "social", 20);
        old_post.followers_count = 90.0;
        vec![
            ev("c_ann", "page", "web", 0),
            ev("c_ann", "page", "web", 30),
            ev("c_ann", "page", "web", 200),
            order,
            order2,
            refund,
            post,
            old_post,
            aimed(ev("c_o1", "reshare", "social", 1), "@carl@m.social"),
            aimed(ev("c_o1", "reshare", "social", 3), "@carl@m.social"),
            aimed(ev("c_o1", "like", "social", 3), "@carl@m.social"),
            aimed(ev("c_o2", "reply", "social", 1), "@carl@m.social"),
            // to oneself, to nobody known, and of a type without amplification weight
            aimed(ev("c_carl", "mention", "social", 1), "@carl@m.social"),
            aimed(ev("c_o2", "mention", "social", 1), "@nobody@m.social"),
            aimed(ev("c_o2", "post", "social", 1), "@ann@m.social"),
        ]
    }

    #[test]
    fn aggregates_per_type_and_channel_with_decay_and_window() {
        let cfg = ScoringConfig::default();
        let f = fold(&world(), &cfg);
        let ann = facts_of(&f, "c_ann");
        let page = ann
            .aggs
            .iter()
            .find(|a| &*a.event_type == "page")
            .expect("page aggregate");
        assert_eq!(page.count, 3);
        // 0, 30 and 200 days old with a 30-day half-life
        let want = 1.0 + 0.5 + (-(200.0 / 30.0f64)).exp2();
        assert!((page.decayed - want).abs() < 1e-12, "{}", page.decayed);
        assert_eq!(
            page.in_window, 2,
            "the 200-day-old visit is outside 90 days"
        );
        assert_eq!(page.last_at, NOW);
        assert_eq!(ann.orders, 2);
        assert_eq!(
            ann.monetary,
            40.0 + 60.0 - 15.0,
            "a refund of -15 counts as 15"
        );
        assert_eq!(ann.first_order_at, Some(NOW - 40 * DAY as i64));
        assert_eq!(ann.last_order_at, Some(NOW - 10 * DAY as i64));
        // order weight 3 per mention of the category
        assert_eq!(
            ann.categories,
            vec![("bags".to_string(), 3.0), ("shoes".to_string(), 6.0)]
        );
        // the newest follower count, not the larger or the last read
        let carl = facts_of(&f, "c_carl");
        assert_eq!(carl.followers, vec![("mastodon".to_string(), 120.0)]);
        assert!(ann.followers.is_empty());
    }

    #[test]
    fn interactions_become_weighted_edges_to_the_target_owner() {
        let cfg = ScoringConfig::default();
        let f = fold(&world(), &cfg);
        let idx = |who: &str| {
            f.facts
                .iter()
                .position(|c| c.customer_id == who)
                .unwrap_or_else(|| panic!("{who}")) as u32
        };
        let mut edges: Vec<(u32, u32, f64)> = f.edges.clone();
        edges.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let mut want = vec![
            (idx("c_o1"), idx("c_carl"), 2.0 * 4.0), // two reshares
            (idx("c_o1"), idx("c_carl"), 1.0),       // one like: its own edge
            (idx("c_o2"), idx("c_carl"), 3.0),       // one reply
        ];
        want.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        assert_eq!(edges, want);
        assert_eq!(
            facts_of(&f, "c_carl").amplification,
            vec![("mastodon".to_string(), 12.0)]
        );
        assert!(
            f.facts.iter().all(|c| c.customer_id != "c_olga"),
            "an identifier owner without events or interactions is not scored"
        );
        // Ann is aimed at only by a post (no amplification weight): scored for her
        // own events, without amplification
        assert!(facts_of(&f, "c_ann").amplification.is_empty());
    }

    #[test]
    fn a_target_without_events_is_scored() {
        let cfg = ScoringConfig::default();
        let f = fold(
            &[aimed(ev("c_o1", "reply", "social", 1), "@ann@m.social")],
            &cfg,
        );
        let ann = facts_of(&f, "c_ann");
        assert!(ann.aggs.is_empty());
        assert_eq!(ann.amplification, vec![("mastodon".to_string(), 3.0)]);
        assert_eq!(f.facts.len(), 2);
    }

    #[test]
    fn the_order_of_events_does_not_matter() {
        let cfg = ScoringConfig::default();
        let canon = |mut f: Folded| {
            let mut facts: Vec<String> = f
                .facts
                .iter_mut()
                .map(|c| {
                    c.aggs.sort_by(|a, b| {
                        (&*a.event_type, &*a.channel).cmp(&(&*b.event_type, &*b.channel))
                    });
                    format!("{c:?}")
                })
                .collect();
            facts.sort();
            let names: Vec<&str> = f.facts.iter().map(|c| c.customer_id.as_str()).collect();
            let mut edges: Vec<(String, String, f64)> = f
                .edges
                .iter()
                .map(|&(s, d, w)| (names[s as usize].into(), names[d as usize].into(), w))
                .collect();
            edges.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            (facts, edges)
        };
        let events = world();
        let forward = canon(fold(&events, &cfg));
        let mut reversed: Vec<_> = world();
        reversed.reverse();
        assert_eq!(forward, canon(fold(&reversed, &cfg)));
        let mut rotated = world();
        rotated.rotate_left(5);
        assert_eq!(forward, canon(fold(&rotated, &cfg)));
    }

    #[test]
    fn fingerprint_table_finds_every_key_across_growth() {
        let fps = Fingerprints::new(99);
        let mut t = FpTable::new();
        for i in 0..50_000u32 {
            assert_eq!(t.get_or_insert_with(fps.of(&format!("c_{i}")), || i), i);
        }
        assert_eq!(t.len(), 50_000);
        for i in 0..50_000u32 {
            assert_eq!(t.get(fps.of(&format!("c_{i}"))), Some(i));
            // present: not inserted again
            assert_eq!(t.get_or_insert_with(fps.of(&format!("c_{i}")), || 7), i);
        }
        assert_eq!(t.get(fps.of("c_50000")), None);
        t.insert(fps.of("c_1"), 5);
        assert_eq!(t.get(fps.of("c_1")), Some(5));
        assert_eq!(t.len(), 50_000);
        // identifiers and customer ids of the same text are different keys
        let mut fps = Fingerprints::new(99);
        assert!(fps.of_identifier("c", "_1") != fps.of("c_1"));
        assert!(fps.of_identifier("email", "a@b.io") != fps.of_identifier("phone", "a@b.io"));
    }
}
