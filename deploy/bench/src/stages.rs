//! `socialcrm-bench stages`: the CPU stages of the pipeline's batch loop
//! (pipeline/src/run.rs), timed one by one on the generated data with the
//! pipeline's own library code, single-threaded like the pipeline's loop. No
//! ClickHouse or Kafka I/O: this shows where the pipeline's own time goes and how
//! each stage scales with the state size (batch after batch).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::Graph;
use socialcrm_pipeline::rows::{EventRow, LedgerRow, ProfileRow};
use socialcrm_pipeline::store::{offset_key, Intent, Store};
use socialcrm_schemas::messages::IdentityAction;
use socialcrm_schemas::{CanonicalEvent, Normalizer};

use crate::gen;

#[derive(Debug, Default, Clone, Serialize)]
pub struct StageTimes {
    pub parse_validate: f64,
    pub graph_process: f64,
    pub event_rows: f64,
    pub profile_rows_and_json: f64,
    pub ledger_rows_and_json: f64,
    pub store_intent: f64,
    pub store_commit: f64,
    pub drop_batch: f64,
}

impl StageTimes {
    fn add(&mut self, o: &StageTimes) {
        self.parse_validate += o.parse_validate;
        self.graph_process += o.graph_process;
        self.event_rows += o.event_rows;
        self.profile_rows_and_json += o.profile_rows_and_json;
        self.ledger_rows_and_json += o.ledger_rows_and_json;
        self.store_intent += o.store_intent;
        self.store_commit += o.store_commit;
        self.drop_batch += o.drop_batch;
    }
    fn total(&self) -> f64 {
        self.parse_validate
            + self.graph_process
            + self.event_rows
            + self.profile_rows_and_json
            + self.ledger_rows_and_json
            + self.store_intent
            + self.store_commit
            + self.drop_batch
    }
}

#[derive(Debug, Serialize)]
pub struct StagesReport {
    pub events: usize,
    pub batch: usize,
    pub total: StageTimes,
    pub total_secs: f64,
    pub events_per_sec_cpu_only: f64,
    /// Per batch: [batch, seconds of each stage..., store file MiB].
    pub per_batch: Vec<(usize, StageTimes, f64)>,
    /// State at the end: identifiers, profiles, and the mean size of a profile
    /// as the store writes it (JSON).
    pub identifiers: usize,
    pub profiles: usize,
    pub avg_profile_json_bytes: usize,
    /// As the identity store keeps it (postcard, store format 4).
    pub avg_profile_stored_bytes: usize,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn run(
    events: usize,
    seed: u64,
    batch: usize,
    state_dir: &std::path::Path,
) -> Result<StagesReport> {
    eprintln!("[stages] generating {events} events");
    let ds = gen::build(events, seed, gen::default_anchor_ms());
    let payloads: Vec<Vec<u8>> = (0..events)
        .map(|i| serde_json::to_vec(&ds.canonical(i)))
        .collect::<Result<_, _>>()?;
    drop(ds);
    let _ = std::fs::remove_dir_all(state_dir);
    let cfg = IdentityConfig::default();
    let (store, loaded) = Store::open(state_dir, &cfg)?;
    let mut graph: Graph = loaded.graph;
    let normalizer = Normalizer::default();
    let mut total = StageTimes::default();
    let mut per_batch = Vec::new();
    let mut applied: HashMap<String, i64> = HashMap::new();
    let all = Instant::now();
    for (b, chunk) in payloads.chunks(batch.max(1)).enumerate() {
        let version = b as u64 + 1;
        let now = Utc::now();
        let mut t = StageTimes::default();

        let s = Instant::now();
        let parsed: Vec<_> = chunk
            .iter()
            .map(|p| CanonicalEvent::parse_and_validate(p, &normalizer, now))
            .collect();
        t.parse_validate = secs(s.elapsed());

        let s = Instant::now();
        let mut outcomes = Vec::with_capacity(parsed.len());
        for r in &parsed {
            outcomes.push(match r {
                Ok((ev, rejected)) => graph.process(ev, rejected).ok(),
                Err(_) => None,
            });
        }
        t.graph_process = secs(s.elapsed());

        let s = Instant::now();
        let mut rows = Vec::with_capacity(parsed.len());
        for (i, (r, o)) in parsed.iter().zip(&outcomes).enumerate() {
            if let (Ok((ev, _)), Some(o)) = (r, o) {
                let n = b * batch + i;
                rows.push(EventRow::new(
                    ev,
                    &o.customer_id,
                    &o.primary,
                    (n % 6) as i32,
                    (n / 6) as i64,
                    version,
                    now,
                ));
            }
        }
        t.event_rows = secs(s.elapsed());
        let outcomes: Vec<_> = outcomes.into_iter().flatten().collect();

        // profiles the batch touched (the pipeline's dirty set: the event's
        // customer and the profiles merged away)
        let s = Instant::now();
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        for o in &outcomes {
            touched.insert(o.customer_id.as_str());
            for l in &o.ledger {
                if l.action == IdentityAction::Merge {
                    if let Some(m) = &l.merged_customer_id {
                        touched.insert(m.as_str());
                    }
                }
            }
        }
        let profile_states: Vec<_> = touched
            .iter()
            .filter_map(|c| graph.profiles.get(*c))
            .collect();
        let profile_rows: Vec<ProfileRow> = profile_states
            .iter()
            .map(|p| ProfileRow::new(p, version, now))
            .collect();
        let mut profile_msgs = Vec::with_capacity(profile_states.len());
        for p in &profile_states {
            profile_msgs.push(serde_json::to_vec(&p.to_message(version, now))?);
        }
        t.profile_rows_and_json = secs(s.elapsed());

        let s = Instant::now();
        let ledger: Vec<_> = outcomes.iter().flat_map(|o| o.ledger.iter()).collect();
        let ledger_rows: Vec<LedgerRow> = ledger
            .iter()
            .enumerate()
            .map(|(i, m)| LedgerRow::new(m, version, i as u32))
            .collect();
        let mut ledger_msgs = Vec::with_capacity(ledger.len());
        for m in &ledger {
            ledger_msgs.push(serde_json::to_vec(m)?);
        }
        t.ledger_rows_and_json = secs(s.elapsed());

        let s = Instant::now();
        let mut intent = Intent {
            version,
            ..Intent::default()
        };
        intent
            .customer_ids
            .extend(profile_rows.iter().map(|r| r.customer_id.clone()));
        for p in 0..6 {
            intent
                .offsets
                .insert(offset_key("bench", p), ((b + 1) * batch / 6) as i64);
        }
        store.write_intent(&intent)?;
        t.store_intent = secs(s.elapsed());

        let s = Instant::now();
        for p in 0..6 {
            applied.insert(offset_key("bench", p), ((b + 1) * batch / 6) as i64);
        }
        drop(profile_states);
        drop(touched);
        store.commit(&mut graph, version, &applied)?;
        t.store_commit = secs(s.elapsed());

        let s = Instant::now();
        drop(rows);
        drop(profile_rows);
        drop(profile_msgs);
        drop(ledger_rows);
        drop(ledger_msgs);
        drop(outcomes);
        drop(parsed);
        t.drop_batch = secs(s.elapsed());

        let mib = std::fs::metadata(state_dir.join("identity.redb"))
            .map_or(0.0, |m| m.len() as f64 / 1048576.0);
        total.add(&t);
        per_batch.push((b + 1, t, mib));
    }
    let total_secs = secs(all.elapsed());
    let _ = std::fs::remove_dir_all(state_dir);
    let sizes = |enc: &dyn Fn(&socialcrm_pipeline::profile::ProfileState) -> usize| -> usize {
        graph.profiles.values().map(|p| enc(p)).sum::<usize>() / graph.profiles.len().max(1)
    };
    let json_bytes = sizes(&|p| serde_json::to_vec(p).map_or(0, |v| v.len()));
    let stored_bytes = sizes(&|p| postcard::to_allocvec(p).map_or(0, |v| v.len()));
    Ok(StagesReport {
        events,
        batch,
        events_per_sec_cpu_only: events as f64 / total.total(),
        total,
        total_secs,
        per_batch,
        identifiers: graph.ids.len(),
        profiles: graph.profiles.len(),
        avg_profile_json_bytes: json_bytes,
        avg_profile_stored_bytes: stored_bytes,
    })
}

pub fn print(r: &StagesReport) {
    let tt = r.total.total();
    let row = |name: &str, v: f64| {
        println!(
            "  {name:<34} {v:>8.2} s  {:>5.1} %  {:>6.1} µs/event",
            100.0 * v / tt,
            1e6 * v / r.events as f64
        );
    };
    println!(
        "pipeline CPU stages, {} events, batches of {} (single thread):",
        r.events, r.batch
    );
    row(
        "parse + validate (serde, normalise)",
        r.total.parse_validate,
    );
    row("identity graph + profile update", r.total.graph_process);
    row("EventRow::new (incl. JSON re-encode)", r.total.event_rows);
    row("profile rows + profile JSON", r.total.profile_rows_and_json);
    row("ledger rows + ledger JSON", r.total.ledger_rows_and_json);
    row("identity store intent (redb, fsync)", r.total.store_intent);
    row("identity store commit (redb, fsync)", r.total.store_commit);
    row("dropping the batch", r.total.drop_batch);
    println!(
        "  {:<34} {:>8.2} s  => {:.0} events/s before any ClickHouse/Kafka I/O",
        "total", tt, r.events_per_sec_cpu_only
    );
    println!(
        "  state at the end: {} identifiers, {} profiles, {} bytes per stored profile ({} as JSON)",
        r.identifiers, r.profiles, r.avg_profile_stored_bytes, r.avg_profile_json_bytes
    );
    println!("per batch (s): batch  parse  graph  rows  profiles  ledger  intent  commit  drop  store MiB");
    let n = r.per_batch.len();
    for (i, (b, t, mib)) in r.per_batch.iter().enumerate() {
        if i < 3 || i + 3 >= n || (i + 1).is_multiple_of(10) {
            println!(
                "  {b:>5}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}  {mib:.0}",
                t.parse_validate,
                t.graph_process,
                t.event_rows,
                t.profile_rows_and_json,
                t.ledger_rows_and_json,
                t.store_intent,
                t.store_commit,
                t.drop_batch
            );
        }
    }
}
