//! `socialcrm profile get|list`: unified profiles from ClickHouse.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use socialcrm_pipeline::rows::ProfileRow;

use crate::api::queries::{profile_json, time};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The unified profile of an identifier, written `type:value` (e.g. `email:ann@example.com`).
    Get {
        identifier: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Live profiles, most active first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The CLI's text form of a stored profile row.
fn print_text(p: &ProfileRow) {
    println!("customer {}", p.customer_id);
    println!("  identifiers:");
    for (t, v) in p.identifier_types.iter().zip(&p.identifier_values) {
        println!("    {t}:{v}");
    }
    let counts: Vec<String> = p
        .event_count_types
        .iter()
        .zip(&p.event_count_values)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    let channels: Vec<String> = p
        .channel_count_keys
        .iter()
        .zip(&p.channel_count_values)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    println!("  events:      {} ({})", p.event_count, counts.join(", "));
    println!("  channels:    {}", channels.join(", "));
    println!("  sources:     {}", p.sources.join(", "));
    println!("  first seen:  {}", time(p.first_seen));
    println!("  last seen:   {}", time(p.last_seen));
    let revenue: Vec<String> = p
        .revenue_currencies
        .iter()
        .zip(&p.revenue_amounts)
        .map(|(c, a)| format!("{a:.2} {c}"))
        .collect();
    println!(
        "  orders:      {}{}",
        p.order_count,
        if revenue.is_empty() {
            String::new()
        } else {
            format!(" (revenue {})", revenue.join(", "))
        }
    );
    println!("  lifecycle:   {}", p.lifecycle_stage);
    let sc: Value = serde_json::from_str(&p.score_components).unwrap_or(json!({}));
    if let Some(run) = sc["run_id"].as_str() {
        println!(
            "  scores:      engagement {:.1}, influence {:.1}, RFM {} (run {run}; `socialcrm score explain` for why)",
            p.engagement_score,
            p.influence_score,
            sc["rfm_segment"].as_str().filter(|s| !s.is_empty()).unwrap_or("–"),
        );
    }
    if !p.traits.is_empty() {
        println!("  traits:      {}", p.traits);
    }
    if !p.merged_from.is_empty() {
        println!("  merged from: {}", p.merged_from.join(", "));
    }
}

/// Resolves `type:value` to its live profile (following merges).
pub async fn get_profile(cfg: &Config, identifier: &str) -> Result<Option<ProfileRow>> {
    crate::api::queries(cfg)?
        .lookup(identifier)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run(cfg: &Config, cmd: ProfileCommand) -> Result<()> {
    match cmd {
        ProfileCommand::Get { identifier, json } => match get_profile(cfg, &identifier).await? {
            Some(p) if json => {
                println!("{}", serde_json::to_string_pretty(&profile_json(&p))?);
                Ok(())
            }
            Some(p) => {
                print_text(&p);
                Ok(())
            }
            None => bail!("no profile has the identifier {identifier}"),
        },
        ProfileCommand::List { limit, json } => {
            let rows: Vec<ProfileRow> = cfg
                .clickhouse
                .client()
                .query(
                    "SELECT ?fields FROM profiles FINAL WHERE is_active = 1 ORDER BY event_count DESC, customer_id LIMIT ?",
                )
                .bind(limit)
                .fetch_all()
                .await
                .context("querying ClickHouse profiles")?;
            for p in &rows {
                if json {
                    println!("{}", profile_json(p));
                } else {
                    print_text(p);
                    println!();
                }
            }
            if !json {
                println!("{} profiles shown", rows.len());
            }
            Ok(())
        }
    }
}
