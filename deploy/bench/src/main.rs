//! `socialcrm-bench`: load harness comparing the pipeline's throughput with the
//! limits of its plumbing (bare Kafka consume, bare ClickHouse insert) on the same
//! data, plus a collector → ClickHouse end-to-end run. Driven by `deploy/bench/run`;
//! what it measures and why: docs/benchmarks.md. The HTTP API benchmark (issue 6):
//! `api-load` (data), `api-urls` and `http-load` (the load tool), driven by
//! `deploy/bench/api`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod api_load;
mod ch;
mod connectors;
mod gen;
mod http_load;
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
        #[arg(long, default_value_t = 50_000)]
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
        /// Runs of every connector, round after round; with more than one, a
        /// summary gives each connector's median and range.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        rounds: u64,
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
    /// Fresh database for the HTTP API benchmark: drop, run the real migrations, fill
    /// identities, events, ledger, profiles and a scoring run server-side
    /// (INSERT ... SELECT FROM numbers), OPTIMIZE FINAL; prints timings and sizes.
    ApiLoad {
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse: String,
        #[arg(long, default_value = "crm_bench_api")]
        database: String,
        #[arg(long, default_value_t = 1_000_000)]
        profiles: u64,
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Unix seconds the data ends at (default: 00:00 UTC today).
        #[arg(long)]
        anchor: Option<i64>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Print N profile-lookup URLs of random existing identifiers (fixed seed),
    /// one a line: <base>/v1/profiles/lookup?id=<type:value, URL-encoded>.
    ApiUrls {
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse: String,
        #[arg(long, default_value = "crm_bench_api")]
        database: String,
        #[arg(long, default_value = "http://127.0.0.1:8089")]
        base: String,
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// HTTP load: C concurrent clients loop over the URLs (each from its own offset)
    /// until the duration or the request count is reached; latency to the last body
    /// byte in an HDR histogram; prints requests, errors by status, throughput and
    /// percentiles.
    HttpLoad {
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        #[arg(long)]
        duration_secs: Option<f64>,
        /// Total requests (all clients together).
        #[arg(long)]
        requests: Option<u64>,
        /// Requests per client before measuring.
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// `Name: value`, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// A URL, repeatable.
        #[arg(long = "url")]
        urls: Vec<String>,
        /// URLs one a line.
        #[arg(long)]
        urls_file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Pid of the server under test, to report its CPU use.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
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
            rounds,
            json,
        } => {
            let r = connectors::run(&brokers, &kinds, objects, seed, rounds as usize).await?;
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
        Cmd::ApiLoad {
            clickhouse,
            database,
            profiles,
            events,
            anchor,
            json,
        } => {
            let anchor = anchor.unwrap_or_else(|| {
                let now = chrono::Utc::now().timestamp();
                now - now.rem_euclid(86_400)
            });
            let r = api_load::load(&api_load::LoadArgs {
                clickhouse,
                database,
                profiles,
                events,
                anchor,
            })
            .await?;
            api_load::print(&r);
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(())
        }
        Cmd::ApiUrls {
            clickhouse,
            database,
            base,
            count,
            seed,
        } => {
            use std::io::Write;
            let urls = api_load::urls(&clickhouse, &database, &base, count, seed).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for u in urls {
                writeln!(out, "{u}")?;
            }
            out.flush()?;
            Ok(())
        }
        Cmd::HttpLoad {
            concurrency,
            duration_secs,
            requests,
            warmup,
            headers,
            mut urls,
            urls_file,
            timeout_secs,
            server_pid,
            json,
        } => {
            if let Some(f) = urls_file {
                urls.extend(http_load::read_urls(&f)?);
            }
            let headers = headers
                .iter()
                .map(|h| http_load::parse_header(h))
                .collect::<Result<Vec<_>>>()?;
            let r = http_load::run(http_load::LoadArgs {
                urls,
                concurrency,
                duration: duration_secs.map(Duration::from_secs_f64),
                requests,
                warmup,
                headers,
                timeout: Duration::from_secs(timeout_secs),
                server_pid,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                http_load::print(&r);
            }
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
