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
use super::model::{score_all, CustomerFacts, Scored, TypeAgg};
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
const SQL_SNAPSHOT: &str = include_str!("sql/snapshot.sql");
const SQL_AGGREGATES: &str = include_str!("sql/aggregates.sql");
const SQL_FOLLOWERS: &str = include_str!("sql/followers.sql");
const SQL_CATEGORIES: &str = include_str!("sql/categories.sql");
const SQL_EDGES: &str = include_str!("sql/edges.sql");
const SQL_LEADERBOARDS: &str = include_str!("sql/leaderboards.sql");

/// Customers kept per network in a run's influencer leaderboards
/// (`crm.influencer_ranks`); a longer top list is ranked from the run's scores.
pub const LEADERBOARD_ROWS: u64 = 1000;

/// The statement that fills a run's leaderboards in database `db`; its parameters
/// (`?`) are the run id and [`LEADERBOARD_ROWS`].
pub fn leaderboards_sql(db: &str) -> String {
    sql(SQL_LEADERBOARDS, db, "")
}

/// A query file for database `db` and snapshot table `snap`, without its comment lines.
fn sql(text: &str, db: &str, snap: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{snap}", snap)
        .replace("{db}", db)
}

// Rows are read borrowed from the response buffer: no allocation per row.
#[derive(Debug, Row, Deserialize)]
struct AggRow<'a> {
    customer_id: &'a str,
    event_type: &'a str,
    channel: &'a str,
    n: u64,
    decayed: f64,
    in_window: u64,
    first_at: u32,
    last_at: u32,
    revenue: f64,
}

#[derive(Debug, Row, Deserialize)]
struct FollowersRow<'a> {
    customer_id: &'a str,
    network: &'a str,
    followers: f64,
}

#[derive(Debug, Row, Deserialize)]
struct EdgeRow<'a> {
    src: &'a str,
    dst: &'a str,
    event_type: &'a str,
    network: &'a str,
    n: u64,
}

#[derive(Debug, Row, Deserialize)]
struct CategoryRow<'a> {
    customer_id: &'a str,
    event_type: &'a str,
    category: &'a str,
    n: u64,
}

/// Customers by id, in the order they were first seen (their index in the facts).
#[derive(Default)]
struct Customers {
    index: FxHashMap<Box<str>, u32>,
    facts: Vec<CustomerFacts>,
}

impl Customers {
    /// The index of customer `id`, added if new.
    fn idx(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i as usize;
        }
        let i = self.facts.len();
        self.facts.push(CustomerFacts {
            customer_id: id.to_string(),
            ..CustomerFacts::default()
        });
        self.index.insert(id.into(), i as u32);
        i
    }

    fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
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

/// The Memory table that holds a run's interaction graph beside its snapshot.
fn edges_table(snap: &str) -> String {
    format!("{snap}_edges")
}

/// Folds the per-customer aggregates, follower counts and product categories of
/// the snapshot into facts (customers in the order first seen).
async fn load_customer_facts(
    client: &clickhouse::Client,
    db: &str,
    snap: &str,
    now: DateTime<Utc>,
    cfg: &ScoringConfig,
) -> Result<(Customers, Interner), ScoringError> {
    let now_s = now.timestamp().max(0) as u32;
    let window_from = now_s.saturating_sub(cfg.window_days * 86_400);
    let hl_secs = cfg.half_life_days * 86_400.0;
    let mut customers = Customers::default();
    // event types, channels, networks and categories: few distinct values
    let mut names = Interner::default();
    let mut cursor = client
        .query(&sql(SQL_AGGREGATES, db, snap))
        .bind(now_s)
        .bind(hl_secs)
        .bind(window_from)
        .fetch::<AggRow<'_>>()
        .map_err(ch("per-customer aggregates"))?;
    while let Some(a) = cursor.next().await.map_err(ch("per-customer aggregates"))? {
        let i = customers.idx(a.customer_id);
        let f = &mut customers.facts[i];
        match a.event_type {
            "order" => {
                f.orders += a.n;
                f.monetary += a.revenue;
                f.first_order_at = Some(
                    f.first_order_at
                        .map_or(a.first_at as i64, |x| x.min(a.first_at as i64)),
                );
                f.last_order_at = Some(
                    f.last_order_at
                        .map_or(a.last_at as i64, |x| x.max(a.last_at as i64)),
                );
            }
            // refunds reduce monetary value whichever sign the source used
            "refund" => f.monetary -= a.revenue.abs(),
            _ => {}
        }
        let (t, c) = (names.id(a.event_type), names.id(a.channel));
        f.aggs.push(TypeAgg {
            event_type: names.name(t).clone(),
            channel: names.name(c).clone(),
            count: a.n,
            decayed: a.decayed,
            in_window: a.in_window,
            last_at: a.last_at as i64,
        });
    }

    tracing::info!(
        customers = customers.facts.len(),
        "scoring: per-customer aggregates read"
    );
    let mut cursor = client
        .query(&sql(SQL_FOLLOWERS, db, snap))
        .fetch::<FollowersRow<'_>>()
        .map_err(ch("followers"))?;
    while let Some(r) = cursor.next().await.map_err(ch("followers"))? {
        if let Some(i) = customers.get(r.customer_id) {
            customers.facts[i]
                .followers
                .push((r.network.to_string(), r.followers));
        }
    }

    let mut affinity = WeightOf::new(&cfg.affinity_weights);
    let mut cat_w: FxHashMap<(u32, u32), f64> = FxHashMap::default();
    let mut cursor = client
        .query(&sql(SQL_CATEGORIES, db, snap))
        .fetch::<CategoryRow<'_>>()
        .map_err(ch("product categories"))?;
    while let Some(r) = cursor.next().await.map_err(ch("product categories"))? {
        let t = names.id(r.event_type);
        let w = affinity.get(&names, t);
        if w <= 0.0 {
            continue;
        }
        if let Some(i) = customers.get(r.customer_id) {
            *cat_w.entry((i as u32, names.id(r.category))).or_default() += w * r.n as f64;
        }
    }
    for ((i, c), w) in cat_w {
        customers.facts[i as usize]
            .categories
            .push((names.name(c).to_string(), w));
    }

    tracing::info!("scoring: followers and categories read");
    Ok((customers, names))
}

/// Reads the facts of every customer as of `now`.
pub async fn load_facts(
    client: &clickhouse::Client,
    db: &str,
    snap: &str,
    now: DateTime<Utc>,
    cfg: &ScoringConfig,
) -> Result<(Vec<CustomerFacts>, usize, u32, f64), ScoringError> {
    // ClickHouse joins and groups the interaction graph into a Memory table of its
    // own while this process folds the other facts (the job would otherwise leave
    // a core idle in each phase)
    let edges_table = edges_table(snap);
    let materialize = client
        .query(&format!(
            "CREATE TABLE {edges_table} ENGINE = Memory AS {}",
            sql(SQL_EDGES, db, snap)
        ))
        .execute();
    let (materialized, folded) =
        tokio::join!(materialize, load_customer_facts(client, db, snap, now, cfg));
    materialized.map_err(ch("interaction graph"))?;
    tracing::info!("scoring: interaction graph grouped");
    let (mut customers, mut names) = folded?;
    let mut amplification = WeightOf::new(&cfg.amplification_weights);
    let mut cursor = client
        .query(&format!("SELECT * FROM {edges_table}"))
        .fetch::<EdgeRow<'_>>()
        .map_err(ch("interaction graph"))?;
    let mut graph_edges: Vec<(u32, u32, f64)> = Vec::new();
    let mut amp: FxHashMap<(u32, u32), f64> = FxHashMap::default();
    while let Some(e) = cursor.next().await.map_err(ch("interaction graph"))? {
        let t = names.id(e.event_type);
        let w = amplification.get(&names, t);
        if w <= 0.0 {
            continue;
        }
        let s = customers.idx(e.src) as u32;
        let d = customers.idx(e.dst) as u32;
        graph_edges.push((s, d, w * e.n as f64));
        *amp.entry((d, names.id(e.network))).or_default() += w * e.n as f64;
    }
    let mut facts = customers.facts;
    for ((i, net), a) in amp {
        facts[i as usize]
            .amplification
            .push((names.name(net).to_string(), a));
    }
    for f in facts.iter_mut() {
        f.followers.sort_by(|a, b| a.0.cmp(&b.0));
        f.amplification.sort_by(|a, b| a.0.cmp(&b.0));
        f.categories.sort_by(|a, b| a.0.cmp(&b.0));
    }
    tracing::info!(edges = graph_edges.len(), "scoring: interaction graph read");
    let (iterations, delta) = apply_pagerank(&mut facts, &graph_edges, cfg);
    Ok((facts, graph_edges.len(), iterations, delta))
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
    // one pass over v_events into a Memory table; the four fact queries read it
    let snap = format!("{db}.scoring_snapshot_{:08x}", rand_suffix());
    client
        .query(&sql(SQL_SNAPSHOT, db, &snap))
        .bind(now.timestamp().max(0) as u32)
        .execute()
        .await
        .map_err(ch("event snapshot"))?;
    tracing::info!(table = %snap, "scoring: event snapshot taken");
    let loaded = load_facts(&client, db, &snap, now, cfg).await;
    for table in [snap.clone(), edges_table(&snap)] {
        if let Err(e) = client
            .query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute()
            .await
        {
            tracing::warn!(table = %table, error = %e, "cannot drop a scoring scratch table; drop it by hand");
        }
    }
    let (facts, edges, iterations, delta) = loaded?;
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
    let (scored, model) = tokio::task::block_in_place(|| {
        let scored = score_all(&facts, now_s, cfg);
        let model = IncrementalModel::from_run(&run_id, now_s, cfg, &facts, &scored);
        (scored, model)
    });
    drop(facts);
    let compute_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let customers = scored.len();
    let at = now_s as u32;
    let mut it = scored.into_iter().peekable();
    let mut written = 0usize;
    while it.peek().is_some() {
        let mut insert = client
            .insert::<ScoreRow>("scores")
            .await
            .map_err(ch("insert scores"))?;
        for s in it.by_ref().take(cfg.insert_batch) {
            let row = Scored {
                run_id: run_id.clone(),
                scored_at: at,
                ..s
            };
            insert.write(&row).await.map_err(ch("insert scores"))?;
            written += 1;
        }
        insert.end().await.map_err(ch("insert scores"))?;
        tracing::info!(written, customers, "scores written");
    }
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
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() as u32
}
