//! `socialcrm connector run <instance>` and `socialcrm connector list`.

use std::future::Future;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Subcommand;

use socialcrm_schemas::suppression::{SuppressionHasher, SuppressionList};

use crate::config::Config;
use crate::telemetry;

#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Run one connector instance (`[connectors.<instance>]` in the config).
    Run {
        /// Instance name.
        instance: String,
        /// Backfill: pull history from this date (`2026-01-31`) or time (RFC 3339),
        /// replacing the stored cursors. Replays are harmless (deterministic event ids).
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Stop once every stream caught up, instead of polling forever.
        #[arg(long)]
        once: bool,
    },
    /// List the configured connector instances.
    List,
}

/// How often a running connector re-reads the suppression list.
const SUPPRESSION_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The suppression list of `crm.suppressions` (docs/privacy.md), loaded now and
/// then every [`SUPPRESSION_REFRESH`]. Best effort: when ClickHouse cannot be read
/// the connector runs on (with the last list) and the pipeline still drops the
/// events of erased people.
async fn suppression_list(cfg: &Config) -> SuppressionList {
    let list = SuppressionList::new(SuppressionHasher::new(&cfg.privacy));
    let ch = cfg.clickhouse.client();
    let refresh = |list: SuppressionList, ch: clickhouse::Client| async move {
        match list.load(&ch).await {
            Ok((hashes, other)) => {
                if other > 0 {
                    tracing::warn!(
                        other,
                        "crm.suppressions holds hashes made under another privacy.salt; they cannot match"
                    );
                }
                tracing::debug!(suppressed = hashes.len(), "suppression list loaded");
                list.replace(hashes);
                // lifted suppressions (docs/privacy.md): newer events pass again
                match list.load_lifts(&ch).await {
                    Ok(lifts) => list.replace_lifts(lifts),
                    Err(e) => tracing::warn!(error = %e,
                        "cannot read crm.suppression_lifts; lifted identifiers stay skipped here (the pipeline accepts their new events)"),
                }
            }
            Err(e) => tracing::warn!(error = %e,
                "cannot read crm.suppressions; erased people's events are not skipped here (the pipeline still drops them)"),
        }
    };
    refresh(list.clone(), ch.clone()).await;
    let (l, c) = (list.clone(), ch);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SUPPRESSION_REFRESH).await;
            refresh(l.clone(), c.clone()).await;
        }
    });
    list
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not a date (2026-01-31) or an RFC 3339 time"))
}

pub async fn run(
    cfg: &Config,
    cmd: ConnectorCommand,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut instances = cfg.connector_instances()?;
    match cmd {
        ConnectorCommand::List => {
            if instances.is_empty() {
                println!("no connectors configured (add [connectors.<name>] sections; see docs/connectors/)");
            }
            for (name, i) in &instances {
                println!(
                    "{name}\t{}\tstate {}\tmetrics {}",
                    i.config.kind(),
                    i.settings.state_dir,
                    if i.settings.metrics_listen.is_empty() {
                        "off"
                    } else {
                        &i.settings.metrics_listen
                    }
                );
            }
            Ok(())
        }
        ConnectorCommand::Run {
            instance,
            since,
            once,
        } => {
            let Some(inst) = instances.remove(&instance) else {
                let known: Vec<_> = instances.keys().cloned().collect();
                bail!(
                    "no connector instance `{instance}` in the config (configured: {}); add a [connectors.{instance}] section",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            };
            telemetry::spawn_metrics_server_for(
                &inst.settings.metrics_listen,
                &format!("connectors.{instance}.metrics_listen"),
                telemetry::install(),
            )
            .await?;
            cfg.kafka
                .check_access_async(socialcrm_schemas::kafka::ACCESS_CHECK_TIMEOUT)
                .await?;
            let suppression = suppression_list(cfg).await;
            let stats = socialcrm_connectors::registry::run_suppressed(
                inst,
                since,
                once,
                &cfg.kafka,
                Some(suppression),
                shutdown,
            )
            .await
            .with_context(|| format!("connector `{instance}` stopped"))?;
            println!(
                "connector {instance}: {} pages, {} events produced, {} objects rejected to the DLQ, {} events of erased people skipped, {} failed polls",
                stats.pages, stats.events, stats.rejected, stats.suppressed, stats.failed_polls
            );
            if once && stats.failed_polls > 0 {
                bail!(
                    "connector `{instance}`: {} poll(s) failed after retries (see the log); the sync is incomplete and resumes from the stored cursor next time",
                    stats.failed_polls
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_and_times() {
        assert_eq!(
            parse_since("2026-01-31").expect("date").to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-31T10:00:00+02:00")
                .expect("time")
                .to_rfc3339(),
            "2026-01-31T08:00:00+00:00"
        );
        assert!(parse_since("yesterday").is_err());
    }
}
