//! `socialcrm-bench connectors`: mapping + produce throughput of each pull
//! connector. Each connector's fake API (`connectors/src/<name>/fake.rs`) serves N
//! generated objects locally, in the provider's documented format and page sizes;
//! the real connector (`registry::run`, `--once`) pulls, maps and produces them to
//! a fresh Kafka topic until caught up, with the connector's default page sizes.
//! Figure: events Kafka acknowledged ÷ wall time. The fake server runs in the
//! same process, so its CPU counts against us.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use socialcrm_connectors::registry::{self, Instance, SourceConfig};
use socialcrm_connectors::runtime::config::RuntimeSettings;
use socialcrm_connectors::testkit::FakeServer;
use socialcrm_connectors::{mastodon, shopify, telegram, woocommerce, x};
use socialcrm_schemas::kafka::{KafkaConfig, Topics};

use crate::kafka::{create_topics, delete_topics};
use crate::proc::{cpu_secs, vm_hwm_kb_self};

#[derive(Debug, Serialize)]
pub struct ConnectorResult {
    pub connector: String,
    pub objects: usize,
    pub events: u64,
    pub pages: u64,
    pub rejected: u64,
    pub secs: f64,
    pub events_per_sec: f64,
    pub cpu_secs: f64,
    /// CPU seconds the local Kafka broker used during the run (when its process
    /// was found on this machine).
    pub broker_cpu_secs: Option<f64>,
    /// Which of `--rounds` this run was (from 1).
    pub round: usize,
    pub peak_rss_mib: u64,
}

/// One connector over all rounds: medians and ranges, since single runs on a
/// small shared machine vary by ±30 % (docs/benchmarks.md, "Connectors").
#[derive(Debug, Serialize)]
pub struct ConnectorSummary {
    pub connector: String,
    pub rounds: usize,
    pub events_per_sec_median: f64,
    pub events_per_sec_min: f64,
    pub events_per_sec_max: f64,
    /// The process's CPU per event (the fake API's included), median.
    pub cpu_us_per_event_median: f64,
    pub broker_cpu_us_per_event_median: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: Vec<ConnectorResult>,
    pub summary: Vec<ConnectorSummary>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians per connector, in the order of `kinds`.
pub fn summarize(kinds: &[String], runs: &[ConnectorResult]) -> Vec<ConnectorSummary> {
    kinds
        .iter()
        .filter_map(|k| {
            let mine: Vec<&ConnectorResult> = runs.iter().filter(|r| &r.connector == k).collect();
            if mine.is_empty() {
                return None;
            }
            let rates: Vec<f64> = mine.iter().map(|r| r.events_per_sec).collect();
            let per_event = |secs: f64, r: &ConnectorResult| secs * 1e6 / (r.events.max(1) as f64);
            let broker: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.broker_cpu_secs.map(|b| per_event(b, r)))
                .collect();
            Some(ConnectorSummary {
                connector: k.clone(),
                rounds: mine.len(),
                events_per_sec_median: median(rates.clone()),
                events_per_sec_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                events_per_sec_max: rates.iter().copied().fold(0.0, f64::max),
                cpu_us_per_event_median: median(
                    mine.iter().map(|r| per_event(r.cpu_secs, r)).collect(),
                ),
                broker_cpu_us_per_event_median: (broker.len() == mine.len())
                    .then(|| median(broker)),
            })
        })
        .collect()
}

async fn fake(kind: &str, objects: usize, seed: u64) -> Result<(FakeServer, SourceConfig)> {
    Ok(match kind {
        "mastodon" => {
            let s = FakeServer::start(mastodon::fake::router(mastodon::fake::generate(
                objects, seed,
            )))
            .await;
            let mut c = mastodon::fake::test_config(&s.base_url);
            c.page_size = mastodon::config::default_page_size();
            let c = SourceConfig::Mastodon(c);
            (s, c)
        }
        "x" => {
            let s = FakeServer::start(x::fake::router(x::fake::generate(objects, seed))).await;
            let c = SourceConfig::X(x::fake::test_config(&s.base_url));
            (s, c)
        }
        "shopify" => {
            let s = FakeServer::start(shopify::fake::router(shopify::fake::generate(
                objects, seed,
            )))
            .await;
            // the connector's defaults (the tests' config uses smaller pages and
            // paged queries only): a first walk is a backfill, read through a bulk
            // operation (`bulk = "auto"`) in pages of `bulk_page_size` objects
            let mut c = shopify::fake::test_config(&s.base_url);
            c.page_size = shopify::config::default_page_size();
            c.bulk = shopify::config::BulkMode::default();
            c.bulk_page_size = shopify::config::default_bulk_page_size();
            let c = SourceConfig::Shopify(c);
            (s, c)
        }
        "telegram" => {
            let s = FakeServer::start(telegram::fake::router(telegram::fake::FakeData::generate(
                objects, seed,
            )))
            .await;
            let c = SourceConfig::Telegram(telegram::fake::test_config(&s.base_url));
            (s, c)
        }
        "woocommerce" => {
            let shop = woocommerce::fake::FakeShop::new(woocommerce::fake::FakeData::generate(
                objects, seed,
            ));
            let s = FakeServer::start(shop.router()).await;
            let c = SourceConfig::WooCommerce(woocommerce::fake::test_config(&s.base_url));
            (s, c)
        }
        other => bail!(
            "unknown connector `{other}` (known: {})",
            registry::KINDS.join(", ")
        ),
    })
}

/// Runs every connector in `kinds` against its fake with `objects` objects,
/// `rounds` times (round after round, so that a slow spell of the machine does not
/// fall on one connector's runs only).
pub async fn run(
    brokers: &str,
    kinds: &[String],
    objects: usize,
    seed: u64,
    rounds: usize,
) -> Result<Report> {
    let broker_pid = crate::proc::find_pid("kafka.Kafka");
    let mut runs = Vec::new();
    for round in 1..=rounds.max(1) {
        runs.extend(run_round(brokers, kinds, objects, seed, round, broker_pid).await?);
    }
    let summary = summarize(kinds, &runs);
    if rounds > 1 {
        for s in &summary {
            eprintln!(
                "{:<12} median {:>9.0} events/s (min {:.0}, max {:.0}, {} rounds); {:.1} µs CPU per event{}",
                s.connector,
                s.events_per_sec_median,
                s.events_per_sec_min,
                s.events_per_sec_max,
                s.rounds,
                s.cpu_us_per_event_median,
                s.broker_cpu_us_per_event_median
                    .map(|b| format!(" + {b:.1} µs in the broker"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(Report { runs, summary })
}

async fn run_round(
    brokers: &str,
    kinds: &[String],
    objects: usize,
    seed: u64,
    round: usize,
    broker_pid: Option<u32>,
) -> Result<Vec<ConnectorResult>> {
    let mut out = Vec::new();
    for kind in kinds {
        let tag = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
        let topics = Topics::with_prefix(&format!("bench.conn.{kind}.{tag}."));
        let kafka = KafkaConfig {
            brokers: brokers.to_string(),
            topics: topics.clone(),
            ..KafkaConfig::default()
        };
        create_topics(
            brokers,
            &[(topics.events.clone(), 6), (topics.dlq.clone(), 1)],
        )
        .await?;
        let state = tempfile_dir()?;
        let (server, config) = fake(kind, objects, seed).await?;
        let instance = Instance {
            name: format!("bench_{kind}"),
            settings: RuntimeSettings {
                state_dir: state.display().to_string(),
                metrics_listen: String::new(),
                poll_interval_secs: 1,
                ..RuntimeSettings::default()
            },
            config,
        };
        let cpu0 = cpu_secs(std::process::id()).unwrap_or(0.0);
        let broker0 = broker_pid.and_then(cpu_secs);
        let t = Instant::now();
        let stats = registry::run(instance, None, true, &kafka, std::future::pending())
            .await
            .with_context(|| format!("{kind} connector run"))?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs(std::process::id()).unwrap_or(0.0) - cpu0;
        let broker_cpu = broker0
            .zip(broker_pid.and_then(cpu_secs))
            .map(|(a, b)| b - a);
        drop(server);
        let _ = std::fs::remove_dir_all(&state);
        delete_topics(brokers, &[topics.events, topics.dlq]).await?;
        let r = ConnectorResult {
            connector: kind.clone(),
            objects,
            events: stats.events,
            pages: stats.pages,
            rejected: stats.rejected,
            secs,
            events_per_sec: stats.events as f64 / secs.max(1e-9),
            cpu_secs: cpu,
            broker_cpu_secs: broker_cpu,
            round,
            peak_rss_mib: vm_hwm_kb_self() / 1024,
        };
        eprintln!(
            "{:<12} {:>9} events in {:>6.2} s = {:>9.0} events/s ({} pages, {} rejected, {:.2} CPU s{})",
            r.connector,
            r.events,
            r.secs,
            r.events_per_sec,
            r.pages,
            r.rejected,
            r.cpu_secs,
            r.broker_cpu_secs
                .map(|b| format!(", broker {b:.2} CPU s"))
                .unwrap_or_default()
        );
        out.push(r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(out)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "socialcrm-bench-conn-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(connector: &str, round: usize, rate: f64, broker: Option<f64>) -> ConnectorResult {
        ConnectorResult {
            connector: connector.to_string(),
            objects: 10,
            events: 1_000,
            pages: 1,
            rejected: 0,
            secs: 1_000.0 / rate,
            events_per_sec: rate,
            cpu_secs: rate / 1e6,
            broker_cpu_secs: broker,
            round,
            peak_rss_mib: 1,
        }
    }

    #[test]
    fn summary_takes_medians_per_connector_in_the_asked_order() {
        let runs = vec![
            result("x", 1, 30.0, Some(0.002)),
            result("mastodon", 1, 10.0, None),
            result("x", 2, 50.0, Some(0.001)),
            result("mastodon", 2, 40.0, Some(0.003)),
            result("x", 3, 40.0, Some(0.004)),
        ];
        let kinds = vec![
            "mastodon".to_string(),
            "x".to_string(),
            "telegram".to_string(),
        ];
        let s = summarize(&kinds, &runs);
        assert_eq!(s.len(), 2, "a connector without runs has no summary");
        assert_eq!(s[0].connector, "mastodon");
        assert_eq!(s[0].rounds, 2);
        // an even count: the mean of the middle two
        assert_eq!(s[0].events_per_sec_median, 25.0);
        // a run without the broker's CPU leaves the broker's median out
        assert_eq!(s[0].broker_cpu_us_per_event_median, None);
        assert_eq!(s[1].connector, "x");
        assert_eq!(s[1].events_per_sec_median, 40.0);
        assert_eq!(
            (s[1].events_per_sec_min, s[1].events_per_sec_max),
            (30.0, 50.0)
        );
        // CPU per event: rate / 1e6 s over 1,000 events, in µs
        assert!((s[1].cpu_us_per_event_median - 0.04).abs() < 1e-9);
        assert_eq!(s[1].broker_cpu_us_per_event_median, Some(2.0));
    }
}
