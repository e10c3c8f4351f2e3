//! `socialcrm privacy erase|erasures|unsuppress|lifts|export` (docs/privacy.md).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use socialcrm_pipeline::privacy::{ErasureRow, LiftRow};

use crate::config::Config;
use crate::privacy;

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Erase a person: their profile, identifiers, events, scores and the personal
    /// values of their ledger entries, from the identity writer, Kafka and every
    /// ClickHouse table; their identifiers are suppressed (until `privacy unsuppress`).
    Erase {
        /// Any identifier of the person (`type:value`) or their customer id (`c_…`).
        #[arg(required_unless_present = "resume")]
        subject: Option<String>,
        /// Who asks (recorded with the request).
        #[arg(long, default_value = "cli")]
        requested_by: String,
        /// Only show whom the subject resolves to; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Finish a request that did not reach `verified` (timed out, or failed).
        #[arg(long, value_name = "REQUEST_ID", conflicts_with = "subject")]
        resume: Option<String>,
        /// How long to wait for the pipeline, then for ClickHouse's mutations.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// List erasure requests and their status (requested, applied, completed,
    /// verified, failed), newest first.
    Erasures {
        #[arg(long)]
        json: bool,
    },
    /// Lift the suppression of an erased identifier from now on (the person came
    /// back and consented again): events that occur after the lift are accepted;
    /// older ones (replays, backfills) stay dropped and erased data stays erased.
    Unsuppress {
        /// The erased identifier (`type:value`), e.g. `email:ann@example.com`.
        subject: String,
        /// Why (recorded with who and when in crm.suppression_lifts).
        #[arg(long)]
        reason: String,
        /// Who asks (recorded with the lift).
        #[arg(long, default_value = "cli")]
        requested_by: String,
        /// How long to wait for the pipeline to apply the lift.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// List lifted suppressions (who, when, why, status), newest first.
    Lifts {
        #[arg(long)]
        json: bool,
    },
    /// Everything stored about a person, as JSON (right of access): profile,
    /// identifiers, events, identity-ledger entries, scores.
    Export {
        /// Any identifier of the person (`type:value`) or their customer id.
        subject: String,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
    },
}

fn show(r: &ErasureRow) {
    let t = |s: u32| {
        chrono::DateTime::from_timestamp(i64::from(s), 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    println!(
        "{}  {:<9}  requested {} by {}  customers {}  identifiers {}",
        r.request_id,
        r.status,
        t(r.requested_at),
        if r.requested_by.is_empty() {
            "?"
        } else {
            &r.requested_by
        },
        r.customer_ids.join(","),
        r.identifiers
    );
    println!("  {}  ({})", r.message, t(r.updated_at));
    for (i, table) in r.tables.iter().enumerate() {
        let before = r.rows_before.get(i).copied().unwrap_or(0);
        match r.rows_after.get(i) {
            Some(after) => println!("  {table:<17} {before:>8} rows -> {after}"),
            None => println!("  {table:<17} {before:>8} rows"),
        }
    }
}

fn show_lift(r: &LiftRow) {
    let at = chrono::DateTime::from_timestamp(i64::from(r.lifted_at), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    println!(
        "{}  {:<9}  {} {}  lifted {at} by {}: events that occur after it are accepted",
        r.request_id, r.status, r.id_type, r.hash, r.requested_by
    );
    println!("  reason: {}", r.reason);
}

pub async fn run(cfg: &Config, cmd: PrivacyCommand) -> Result<()> {
    match cmd {
        PrivacyCommand::Erase {
            subject,
            requested_by,
            dry_run,
            resume,
            wait_secs,
            json,
        } => {
            let wait = Duration::from_secs(wait_secs);
            let request_id = match (resume, subject) {
                (Some(id), _) => id,
                (None, Some(subject)) if dry_run => {
                    let q = crate::api::queries(cfg)?;
                    let s = privacy::resolve(cfg, &q, &subject).await?;
                    println!(
                        "{subject} resolves to {} with {} identifiers; nothing was changed",
                        if s.customer_ids.is_empty() {
                            "no profile".to_string()
                        } else {
                            format!("customer ids {}", s.customer_ids.join(", "))
                        },
                        s.keys.len()
                    );
                    return Ok(());
                }
                (None, Some(subject)) => {
                    let r = privacy::request(cfg, &subject, &requested_by).await?;
                    eprintln!(
                        "erasure {} requested: {} customer ids, {} identifiers; sent to {}",
                        r.request_id,
                        r.subject.customer_ids.len(),
                        r.subject.keys.len(),
                        cfg.kafka.topics.privacy_commands
                    );
                    r.request_id
                }
                (None, None) => {
                    bail!("give a subject (type:value or c_…) or --resume <request id>")
                }
            };
            let ch = cfg.clickhouse.client();
            if privacy::wait_applied(&ch, &request_id, wait)
                .await?
                .is_none()
            {
                bail!(
                    "the pipeline did not apply erasure {request_id} within {wait_secs} s; it stays queued on {} and applies when the pipeline runs: then run `socialcrm privacy erase --resume {request_id}`",
                    cfg.kafka.topics.privacy_commands
                );
            }
            eprintln!("applied by the identity writer; deleting from ClickHouse");
            let row = privacy::finish(cfg, &request_id, wait).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                show(&row);
            }
            if row.status != "verified" {
                bail!("erasure {request_id} is `{}`: {}", row.status, row.message);
            }
            Ok(())
        }
        PrivacyCommand::Erasures { json } => {
            let rows = privacy::list(cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no erasure requests");
            }
            if !json {
                for r in &rows {
                    show(r);
                }
            }
            Ok(())
        }
        PrivacyCommand::Unsuppress {
            subject,
            reason,
            requested_by,
            wait_secs,
            json,
        } => {
            let row = privacy::unsuppress(cfg, &subject, &requested_by, &reason).await?;
            eprintln!(
                "suppression lift {} requested; sent to {}",
                row.request_id, cfg.kafka.topics.privacy_commands
            );
            let ch = cfg.clickhouse.client();
            let Some(row) =
                privacy::wait_lift_applied(&ch, &row.request_id, Duration::from_secs(wait_secs))
                    .await?
                    .map(|applied| LiftRow {
                        reason: row.reason.clone(),
                        requested_by: row.requested_by.clone(),
                        ..applied
                    })
            else {
                bail!(
                    "the pipeline did not apply lift {} within {wait_secs} s; it stays queued on {} and applies when the pipeline runs (connectors see it within a minute)",
                    row.request_id,
                    cfg.kafka.topics.privacy_commands
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                show_lift(&row);
            }
            Ok(())
        }
        PrivacyCommand::Lifts { json } => {
            let rows = privacy::lifts(cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no lifted suppressions");
            }
            if !json {
                for r in &rows {
                    show_lift(r);
                }
            }
            Ok(())
        }
        PrivacyCommand::Export { subject, output } => {
            let v = privacy::export(cfg, &subject).await?;
            let text = serde_json::to_string_pretty(&v)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                    eprintln!("written to {}", path.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
    }
}
