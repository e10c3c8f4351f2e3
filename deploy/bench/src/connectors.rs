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
    pub peak_rss_mib: u64,
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

/// Runs every connector in `kinds` against its fake with `objects` objects.
pub async fn run(
    brokers: &str,
    kinds: &[String],
    objects: usize,
    seed: u64,
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
        let t = Instant::now();
        let stats = registry::run(instance, None, true, &kafka, std::future::pending())
            .await
            .with_context(|| format!("{kind} connector run"))?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs(std::process::id()).unwrap_or(0.0) - cpu0;
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
            peak_rss_mib: vm_hwm_kb_self() / 1024,
        };
        eprintln!(
            "{:<12} {:>9} events in {:>6.2} s = {:>9.0} events/s ({} pages, {} rejected, {:.2} CPU s)",
            r.connector, r.events, r.secs, r.events_per_sec, r.pages, r.rejected, r.cpu_secs
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
