//! `socialcrm-bench`: load harness comparing the pipeline's throughput with the
//! limits of its plumbing (bare Kafka consume, bare ClickHouse insert) on the same
//! data, plus a collector → ClickHouse end-to-end run. Driven by `deploy/bench/run`;
//! what it measures and why: docs/benchmarks.md.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod ch;
mod connectors;
mod gen;
mod identity;
mod kafka;
mod proc;
mod redb_probe;
mod run;
mod segment;
mod stages;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "socialcrm-bench",
    about = "socialcrm load harness (docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The whole benchmark: pre-fill, (a) pipeline, (b1) bare consume, (b2) bare insert,
    /// (c) collector end to end; summary table + JSON; clean-up.
    Run(run::RunArgs),
    /// Phase b1 (run as its own process by `run`): read a topic with a bare
    /// StreamConsumer; prints a JSON report.
    BareConsume {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        expect: u64,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
    /// Phase b2 (run as its own process by `run`): build EventRows from a topic,
    /// insert them into a copy of the events table; prints a JSON report.
    BareInsert {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse_url: String,
        #[arg(long)]
        database: String,
        #[arg(long, default_value = "events_bare")]
        table: String,
        #[arg(long, default_value_t = 20_000)]
        batch: usize,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
    /// Time the pipeline's CPU stages one by one (library code, no I/O) on the
    /// generated data, batch after batch; for finding where pipeline time goes.
    Stages {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 20_000)]
        batch: usize,
        /// Scratch identity-store directory (deleted before and after).
        #[arg(long, default_value = "target/bench/stages-state")]
        state_dir: std::path::PathBuf,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Cost of one durable redb commit per batch, table by table, with the
    /// identity store's shapes and phase-a volumes (and an append-only `seen`).
    RedbProbe {
        #[arg(long, default_value_t = 50)]
        batches: usize,
        /// New event ids per batch.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Profiles in the store.
        #[arg(long, default_value_t = 76_923)]
        people: usize,
        /// Profiles rewritten per batch.
        #[arg(long, default_value_t = 5_100)]
        profiles: usize,
        /// New identifiers per batch.
        #[arg(long, default_value_t = 4_150)]
        new_ids: usize,
        #[arg(long, default_value_t = 650)]
        profile_bytes: usize,
        #[arg(long, default_value = "target/bench/redb-probe")]
        dir: std::path::PathBuf,
    },
    /// Mapping + produce throughput of the pull connectors against their local
    /// fake APIs (docs/benchmarks.md, "Connectors").
    Connectors {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Connectors to run (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mastodon,x,telegram,shopify,woocommerce"
        )]
        kinds: Vec<String>,
        /// Objects each fake API serves.
        #[arg(long, default_value_t = 200_000)]
        objects: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The identity writer alone, one thread: link-creating events, events of
    /// known identifiers, resident memory per identifier (docs/benchmarks.md).
    Identity {
        /// People (4 identifiers and 2 linking events each).
        #[arg(long, default_value_t = 250_000)]
        people: usize,
        /// Events of known identifiers after the graph is built.
        #[arg(long, default_value_t = 2_000_000)]
        known: usize,
    },
    /// Print N generated canonical events as JSON lines (to inspect the data).
    Sample {
        #[arg(long, default_value_t = 20)]
        events: usize,
        /// Size of the data set the sample is taken from.
        #[arg(long, default_value_t = 1_000_000)]
        of: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Print Segment messages instead of canonical events.
        #[arg(long)]
        segment: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Run(args) => run::run(args).await,
        Cmd::BareConsume {
            brokers,
            topic,
            group,
            expect,
            timeout_secs,
        } => {
            let r = kafka::bare_consume(
                &brokers,
                &topic,
                &group,
                expect,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::BareInsert {
            brokers,
            topic,
            clickhouse_url,
            database,
            table,
            batch,
            timeout_secs,
        } => {
            let cfg = ch::config(&clickhouse_url, &database);
            let r = ch::bare_insert(
                &brokers,
                &topic,
                &cfg,
                &table,
                batch,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Connectors {
            brokers,
            kinds,
            objects,
            seed,
            json,
        } => {
            let r = connectors::run(&brokers, &kinds, objects, seed).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(())
        }
        Cmd::Stages {
            events,
            seed,
            batch,
            state_dir,
            json,
        } => {
            let r =
                tokio::task::spawn_blocking(move || stages::run(events, seed, batch, &state_dir))
                    .await??;
            stages::print(&r);
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(())
        }
        Cmd::RedbProbe {
            batches,
            events,
            people,
            profiles,
            new_ids,
            profile_bytes,
            dir,
        } => {
            let r = tokio::task::spawn_blocking(move || {
                let r = redb_probe::run(
                    &dir,
                    batches,
                    events,
                    people,
                    profiles,
                    new_ids,
                    profile_bytes,
                );
                let _ = std::fs::remove_dir_all(&dir);
                r
            })
            .await??;
            redb_probe::print(&r);
            Ok(())
        }
        Cmd::Identity { people, known } => {
            let r = tokio::task::spawn_blocking(move || identity::run(people, known)).await??;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Sample {
            events,
            of,
            seed,
            segment,
        } => {
            let ds = gen::build(of, seed, gen::default_anchor_ms());
            let step = (of / events.max(1)).max(1);
            for i in (0..of).step_by(step).take(events) {
                let line = if segment {
                    serde_json::to_string(&ds.segment(i, "bench-c-"))?
                } else {
                    serde_json::to_string(&ds.canonical(i))?
                };
                println!("{line}");
            }
            eprintln!("{}", serde_json::to_string(&ds.stats)?);
            Ok(())
        }
    }
}
