//! `socialcrm`: the one binary. Subcommands run each part (collector, pipeline),
//! set up storage (migrate) and answer marketers' questions (profile).

mod api;
mod commands;
mod config;
mod privacy;
mod telemetry;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Social CRM data-integration pipeline: connectors → Kafka → identity
/// resolution → unified profiles in ClickHouse.
#[derive(Debug, Parser)]
#[command(name = "socialcrm", version, about, long_about = None)]
struct Cli {
    /// Config file (TOML). Without one, the local defaults are used.
    #[arg(long, global = true, env = "SOCIALCRM_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the ClickHouse tables and views, and the Kafka topics. Idempotent.
    Migrate {
        /// Skip creating Kafka topics (ClickHouse only).
        #[arg(long)]
        no_kafka: bool,
    },
    /// Run the web collector (Segment HTTP Tracking API compatible).
    Collector,
    /// Run the pipeline: validate, resolve identities, write profiles.
    Pipeline {
        /// Exit after this many seconds without new events (0 = run until stopped;
        /// default: pipeline.exit_when_idle_secs of the config).
        #[arg(long)]
        exit_when_idle_secs: Option<u64>,
    },
    /// Show how far the pipeline is behind the events topic.
    Lag {
        /// Wait until the lag is zero.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Look up unified profiles.
    Profile {
        #[command(subcommand)]
        command: commands::profile::ProfileCommand,
    },
    /// Explain, unlink, split, simulate and rebuild identity resolution (docs/identity.md).
    Identity {
        #[command(subcommand)]
        command: commands::identity::IdentityCommandArgs,
    },
    /// Compute scores (engagement, influence, RFM, lifecycle) or explain them.
    Score {
        #[command(subcommand)]
        command: commands::score::ScoreCommand,
    },
    /// Run or list pull connectors (Mastodon, X, Telegram, Shopify, WooCommerce).
    Connector {
        #[command(subcommand)]
        command: commands::connector::ConnectorCommand,
    },
    /// Run the marketers' HTTP API and web page (docs/api.md).
    Serve,
    /// Segments (list generator): count, preview or export as CSV (docs/marketers.md).
    Segment {
        #[command(subcommand)]
        command: Box<commands::marketing::SegmentCommand>,
    },
    /// Leaderboards: top influencers and top advocates.
    Top {
        #[command(subcommand)]
        command: commands::marketing::TopCommand,
    },
    /// Reports: campaigns (UTM attribution, ROI), products, distributions.
    Report {
        #[command(subcommand)]
        command: commands::marketing::ReportCommand,
    },
    /// Send a JSONL file of Segment messages to a collector over HTTP, in batches.
    Replay(commands::replay::ReplayArgs),
    /// Erasure (with suppression) and right of access (docs/privacy.md).
    Privacy {
        #[command(subcommand)]
        command: commands::privacy::PrivacyCommand,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
    // a second signal, or a shutdown stuck for 30 s (e.g. a client library's
    // destructor), ends the process: state is safe at any point (crash-safe design)
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(30));
        eprintln!("shutdown took longer than 30 s; exiting");
        std::process::exit(1);
    });
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
    #[cfg(unix)]
    tokio::spawn(async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            std::process::exit(143);
        }
    });
}

fn main() {
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(run()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        },
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            1
        }
    };
    // exit without waiting for client libraries' destructors (librdkafka's consumer
    // close can block); everything that must be durable was flushed before this point
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let cfg = config::Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate { no_kafka } => commands::migrate(&cfg, no_kafka).await,
        Command::Collector => socialcrm_connectors::segment::serve(
            cfg.collector.clone(),
            &cfg.kafka,
            telemetry::metrics_router(telemetry::install()),
            shutdown_signal(),
            // SIGHUP: the file's [collector] keys and limits (docs/security.md)
            move || {
                config::Config::load(cli.config.as_deref())
                    .map(|c| c.collector)
                    .map_err(|e| format!("{e:#}"))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("collector: {e}")),
        Command::Pipeline {
            exit_when_idle_secs,
        } => {
            let mut pipeline = cfg.pipeline.clone();
            if let Some(secs) = exit_when_idle_secs {
                pipeline.exit_when_idle_secs = secs;
            }
            telemetry::spawn_metrics_server(&pipeline.metrics_listen, telemetry::install()).await?;
            let stats = socialcrm_pipeline::run(
                socialcrm_pipeline::run::Settings {
                    kafka: cfg.kafka.clone(),
                    clickhouse: cfg.clickhouse.clone(),
                    pipeline,
                    identity: cfg.identity.clone(),
                    scoring: cfg.scoring.clone(),
                    privacy: cfg.privacy.clone(),
                },
                shutdown_signal(),
            )
            .await?;
            tracing::info!(
                batches = stats.batches,
                accepted = stats.accepted,
                duplicates = stats.duplicates,
                rejected = stats.rejected,
                skipped_already_applied = stats.skipped_applied,
                retracted = stats.retracted,
                suppressed = stats.suppressed,
                "pipeline stopped"
            );
            Ok(())
        }
        Command::Lag { wait, timeout_secs } => commands::lag(&cfg, wait, timeout_secs).await,
        Command::Profile { command } => commands::profile::run(&cfg, command).await,
        Command::Serve => {
            api::serve(
                &cfg,
                telemetry::metrics_router(telemetry::install()),
                shutdown_signal(),
            )
            .await
        }
        Command::Segment { command } => commands::marketing::segment(&cfg, *command).await,
        Command::Top { command } => commands::marketing::top(&cfg, command).await,
        Command::Report { command } => commands::marketing::report(&cfg, command).await,
        Command::Replay(args) => commands::replay::run(&cfg, args).await,
        Command::Privacy { command } => commands::privacy::run(&cfg, command).await,
        Command::Score { command } => commands::score::run(&cfg, command).await,
        Command::Identity { command } => commands::identity::run(&cfg, command).await,
        Command::Connector { command } => {
            commands::connector::run(&cfg, command, shutdown_signal()).await
        }
    }
}
