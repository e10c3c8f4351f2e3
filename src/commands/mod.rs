//! Subcommands that are not a long-running service.

pub mod connector;
pub mod identity;
pub mod marketing;
pub mod privacy;
pub mod profile;
pub mod replay;
pub mod score;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::config::Config;

/// `socialcrm migrate`.
pub async fn migrate(cfg: &Config, no_kafka: bool) -> Result<()> {
    // a wrong password or certificate fails here, naming [clickhouse]
    cfg.clickhouse.health_check().await?;
    let report = socialcrm_schemas::migrations::migrate(&cfg.clickhouse)
        .await
        .with_context(|| format!("migrating ClickHouse at {}", cfg.clickhouse.url))?;
    println!(
        "clickhouse {}: database `{}`: applied {:?}, already applied {:?}",
        cfg.clickhouse.url, cfg.clickhouse.database, report.applied, report.already
    );
    if !no_kafka {
        cfg.kafka
            .check_access_async(socialcrm_schemas::kafka::ACCESS_CHECK_TIMEOUT)
            .await?;
        let created = cfg
            .kafka
            .ensure_topics()
            .await
            .with_context(|| format!("creating Kafka topics on {}", cfg.kafka.brokers))?;
        println!(
            "kafka {}: topics created {:?} (others already existed)",
            cfg.kafka.brokers, created
        );
    }
    Ok(())
}

/// Total lag of the pipeline's consumer group on the events topic.
/// (partition, committed offset, high watermark).
type PartitionLag = (i32, i64, i64);

pub fn current_lag(cfg: &Config) -> Result<(i64, Vec<PartitionLag>)> {
    let consumer: BaseConsumer = cfg
        .kafka
        .client_config()
        .set("group.id", &cfg.pipeline.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka client")?;
    let topic = &cfg.kafka.topics.events;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .context("reading committed offsets")?;
    let mut total = 0;
    let mut rows = Vec::new();
    for p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .context("reading watermarks")?;
        // no commit yet: everything still retained is to do
        let done = committed
            .find_partition(topic, p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
            .unwrap_or(low)
            .max(low);
        let lag = (high - done).max(0);
        total += lag;
        rows.push((p, done, high));
    }
    Ok((total, rows))
}

/// `socialcrm lag [--wait]`.
pub async fn lag(cfg: &Config, wait: bool, timeout_secs: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        let c = cfg.clone();
        let (total, rows) = tokio::task::spawn_blocking(move || current_lag(&c)).await??;
        if !wait || total == 0 {
            for (p, done, high) in &rows {
                println!(
                    "partition {p}: committed {done} of {high} (lag {})",
                    high - done
                );
            }
            println!("total lag: {total}");
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(timeout_secs) {
            anyhow::bail!("pipeline still {total} events behind after {timeout_secs}s");
        }
        eprintln!("waiting for the pipeline: {total} events behind");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
