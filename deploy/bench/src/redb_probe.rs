//! `socialcrm-bench redb-probe`: what one durable redb commit per batch costs for
//! each table of the pipeline's identity store (pipeline/src/store.rs), with the
//! key/value shapes and per-batch volumes of phase a, and the cost of an
//! append-only alternative for the `seen` set. Isolates the store's share of the
//! pipeline's time and how it grows with the state.

use std::time::Instant;

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redb::{Database, Durability, TableDefinition};
use serde::Serialize;

const SEEN: TableDefinition<u128, ()> = TableDefinition::new("seen");
const SEEN_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("seen_log");
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
const IDS: TableDefinition<&str, &[u8]> = TableDefinition::new("ids");

#[derive(Debug, Serialize)]
pub struct ProbeResult {
    pub case: String,
    pub batches: usize,
    pub total_secs: f64,
    pub first_batch_ms: f64,
    pub last_batch_ms: f64,
    pub file_mib: f64,
}

fn run_case(
    dir: &std::path::Path,
    case: &str,
    batches: usize,
    mut f: impl FnMut(&redb::WriteTransaction, usize, &mut SmallRng) -> Result<()>,
) -> Result<ProbeResult> {
    let path = dir.join(format!("{case}.redb"));
    let _ = std::fs::remove_file(&path);
    let db = Database::create(&path)?;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut times = Vec::with_capacity(batches);
    let start = Instant::now();
    for b in 0..batches {
        let t = Instant::now();
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        f(&w, b, &mut rng)?;
        w.commit()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total_secs = start.elapsed().as_secs_f64();
    drop(db);
    let file_mib = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let _ = std::fs::remove_file(&path);
    Ok(ProbeResult {
        case: case.to_string(),
        batches,
        total_secs,
        first_batch_ms: times.first().copied().unwrap_or(0.0),
        last_batch_ms: times.last().copied().unwrap_or(0.0),
        file_mib,
    })
}

/// Per batch: `events` new event fingerprints, `profiles` of `people` profiles
/// rewritten (~`profile_bytes` of JSON each), `new_ids` new identifiers.
pub fn run(
    dir: &std::path::Path,
    batches: usize,
    events: usize,
    people: usize,
    profiles: usize,
    new_ids: usize,
    profile_bytes: usize,
) -> Result<Vec<ProbeResult>> {
    std::fs::create_dir_all(dir)?;
    let value = vec![b'x'; profile_bytes];
    let mut out = Vec::new();
    out.push(run_case(
        dir,
        "seen: one random u128 key per event",
        batches,
        |w, _, r| {
            let mut t = w.open_table(SEEN)?;
            for _ in 0..events {
                t.insert(r.random::<u128>(), ())?;
            }
            Ok(())
        },
    )?);
    out.push(run_case(
        dir,
        "seen: one blob per batch (append-only)",
        batches,
        |w, b, r| {
            let mut t = w.open_table(SEEN_LOG)?;
            let mut blob = Vec::with_capacity(events * 16);
            for _ in 0..events {
                blob.extend_from_slice(&r.random::<u128>().to_be_bytes());
            }
            t.insert(b as u64, blob.as_slice())?;
            Ok(())
        },
    )?);
    out.push(run_case(
        dir,
        "profiles: random rewrites of JSON values",
        batches,
        |w, _, r| {
            let mut t = w.open_table(PROFILES)?;
            for _ in 0..profiles {
                let k = format!(
                    "c_{:016x}",
                    r.random_range(0..people as u64)
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                );
                t.insert(k.as_str(), value.as_slice())?;
            }
            Ok(())
        },
    )?);
    out.push(run_case(
        dir,
        "ids: new identifiers",
        batches,
        |w, _, r| {
            let mut t = w.open_table(IDS)?;
            for _ in 0..new_ids {
                let k = format!("anonymous_id:{:032x}", r.random::<u128>());
                t.insert(
                    k.as_str(),
                    br#"{"customer_id":"c_0123456789abcdef","first_seen":"2026-10-01T10:00:00Z"}"#
                        .as_slice(),
                )?;
            }
            Ok(())
        },
    )?);
    out.push(run_case(
        dir,
        "empty commit (fsync only)",
        batches,
        |w, _, _| {
            w.open_table(IDS)?;
            Ok(())
        },
    )?);
    Ok(out)
}

pub fn print(rs: &[ProbeResult]) {
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>9}",
        "redb, one durable commit per batch", "total s", "1st ms", "last ms", "file MiB"
    );
    for r in rs {
        println!(
            "{:<44} {:>9.2} {:>10.1} {:>10.1} {:>9.0}",
            r.case, r.total_secs, r.first_batch_ms, r.last_batch_ms, r.file_mib
        );
    }
}
