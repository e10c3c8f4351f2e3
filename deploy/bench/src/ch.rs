//! ClickHouse side of the harness: counts, merge quiescence, the bare insert (phase b2).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use serde::Serialize;
use socialcrm_pipeline::identity::customer_id_for;
use socialcrm_pipeline::rows::EventRow;
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;
use socialcrm_schemas::{CanonicalEvent, Normalizer};

use crate::proc::{mem_kb, vm_hwm_kb_self, CpuUse, SelfCpu};

pub fn config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.to_string(),
        database: database.to_string(),
        ..ClickHouseConfig::default()
    }
}

pub async fn exec(cfg: &ClickHouseConfig, sql: &str) -> Result<()> {
    tokio::time::timeout(
        Duration::from_secs(120),
        cfg.client_without_database().query_raw(sql).execute(),
    )
    .await
    .with_context(|| format!("timeout: {sql}"))?
    .with_context(|| sql.to_string())
}

pub async fn scalar(cfg: &ClickHouseConfig, sql: &str) -> Result<u64> {
    let v: u64 = tokio::time::timeout(
        Duration::from_secs(30),
        cfg.client_without_database().query_raw(sql).fetch_one(),
    )
    .await
    .with_context(|| format!("timeout: {sql}"))?
    .with_context(|| sql.to_string())?;
    Ok(v)
}

pub async fn count(cfg: &ClickHouseConfig, table: &str) -> Result<u64> {
    scalar(
        cfg,
        &format!("SELECT count() FROM {}.{table}", cfg.database),
    )
    .await
}

/// Waits (bounded) until ClickHouse runs no merges, so one phase's background
/// work does not slow the next one. Returns the seconds waited.
pub async fn wait_merges_idle(cfg: &ClickHouseConfig, limit: Duration) -> f64 {
    let start = Instant::now();
    while start.elapsed() < limit {
        match scalar(cfg, "SELECT count() FROM system.merges").await {
            Ok(0) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => {
                eprintln!("[bench] cannot read system.merges: {e:#}");
                break;
            }
        }
    }
    start.elapsed().as_secs_f64()
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InsertReport {
    pub rows: u64,
    pub batches: u64,
    pub batch_size: usize,
    /// Reading the topic, parsing, building rows (not timed in rows_per_sec).
    pub build_secs: f64,
    /// The inserts only.
    pub insert_secs: f64,
    pub rows_per_sec: f64,
    pub batch_ms_p50: f64,
    pub batch_ms_max: f64,
    pub rss_before_insert_kb: u64,
    pub vm_hwm_kb: u64,
    /// During the inserts only.
    pub cpu: CpuUse,
}

/// Phase b2: the same rows the pipeline writes (parsed from the same topic bytes,
/// `EventRow::new`), inserted into a fresh copy of the events table in batches of
/// `batch` with the pipeline's client settings, one insert at a time like the pipeline.
pub async fn bare_insert(
    brokers: &str,
    topic: &str,
    cfg: &ClickHouseConfig,
    table: &str,
    batch: usize,
    timeout: Duration,
) -> Result<InsertReport> {
    let db = &cfg.database;
    exec(
        cfg,
        &format!("CREATE TABLE IF NOT EXISTS {db}.{table} AS {db}.events"),
    )
    .await?;

    let build_start = Instant::now();
    let brokers2 = brokers.to_string();
    let topic2 = topic.to_string();
    let rows: Vec<EventRow> = tokio::task::spawn_blocking(move || -> Result<Vec<EventRow>> {
        let normalizer = Normalizer::default();
        let now = Utc::now();
        let mut rows = Vec::new();
        crate::kafka::read_all(&brokers2, &topic2, timeout, |partition, offset, payload| {
            let (ev, _) = CanonicalEvent::parse_and_validate(payload, &normalizer, now)
                .map_err(|e| anyhow::anyhow!("event at {partition}/{offset}: {e}"))?;
            let cid = customer_id_for(&ev.partition_key(), 0);
            let version = (rows.len() / batch.max(1)) as u64 + 1;
            let primary = ev.partition_key();
            rows.push(EventRow::new(
                &ev, &cid, &primary, partition, offset, version, now,
            ));
            Ok(())
        })?;
        Ok(rows)
    })
    .await??;
    let build_secs = build_start.elapsed().as_secs_f64();
    let rss_before = mem_kb(std::process::id()).map_or(0, |m| m.1);

    let client = cfg.client();
    let deadline = Instant::now() + timeout;
    let cpu = SelfCpu::start();
    let start = Instant::now();
    let mut per_batch = Vec::new();
    for chunk in rows.chunks(batch.max(1)) {
        if Instant::now() > deadline {
            bail!("timeout inserting");
        }
        let t = Instant::now();
        let one = async {
            let mut insert = client.insert::<EventRow>(table).await?;
            for r in chunk {
                insert.write(r).await?;
            }
            insert.end().await
        };
        tokio::time::timeout(Duration::from_secs(120), one)
            .await
            .context("timeout: one insert took more than 120 s")??;
        per_batch.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let insert_secs = start.elapsed().as_secs_f64();
    let cpu = cpu.finish(insert_secs);
    let n = rows.len() as u64;
    let got = count(cfg, table).await?;
    if got != n {
        bail!("{db}.{table} holds {got} rows, {n} inserted");
    }
    per_batch.sort_by(f64::total_cmp);
    Ok(InsertReport {
        rows: n,
        batches: per_batch.len() as u64,
        batch_size: batch,
        build_secs,
        insert_secs,
        rows_per_sec: n as f64 / insert_secs,
        batch_ms_p50: per_batch.get(per_batch.len() / 2).copied().unwrap_or(0.0),
        batch_ms_max: per_batch.last().copied().unwrap_or(0.0),
        rss_before_insert_kb: rss_before,
        vm_hwm_kb: vm_hwm_kb_self(),
        cpu,
    })
}
