//! `socialcrm profile get|list`: unified profiles from ClickHouse.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use socialcrm_pipeline::rows::ProfileRow;
use socialcrm_schemas::Normalizer;

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

fn time(secs: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The CLI's JSON form of a stored profile row.
fn to_json(p: &ProfileRow) -> Value {
    let zip_u = |k: &[String], v: &[u64]| -> Value {
        k.iter()
            .zip(v)
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "customer_id": p.customer_id,
        "identifiers": p.identifier_types.iter().zip(&p.identifier_values)
            .map(|(t, v)| format!("{t}:{v}")).collect::<Vec<_>>(),
        "traits": serde_json::from_str::<Value>(&p.traits).unwrap_or(json!({})),
        "channels": p.channels,
        "sources": p.sources,
        "event_count": p.event_count,
        "event_counts": zip_u(&p.event_count_types, &p.event_count_values),
        "channel_counts": zip_u(&p.channel_count_keys, &p.channel_count_values),
        "first_seen": time(p.first_seen),
        "last_seen": time(p.last_seen),
        "order_count": p.order_count,
        "revenue": p.revenue_currencies.iter().zip(&p.revenue_amounts)
            .map(|(c, a)| (c.clone(), json!(a))).collect::<serde_json::Map<_, _>>(),
        "engagement_score": p.engagement_score,
        "influence_score": p.influence_score,
        "lifecycle_stage": p.lifecycle_stage,
        "score_components": serde_json::from_str::<Value>(&p.score_components).unwrap_or(json!({})),
        "merged_from": p.merged_from,
        "version": p.version,
    })
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
    let (t, v) = identifier.split_once(':').with_context(|| {
        format!("`{identifier}`: write identifiers as type:value, e.g. email:ann@example.com")
    })?;
    let normalizer = Normalizer::new(Some(&cfg.identity.default_phone_region))?;
    let id = normalizer
        .normalize(t, v)
        .map_err(|e| anyhow::anyhow!("`{identifier}`: {e}"))?;
    let client = cfg.clickhouse.client();
    let customer: Option<String> = client
        .query("SELECT customer_id FROM identities FINAL WHERE id_type = ? AND id_value = ? AND is_active = 1")
        .bind(&id.id_type)
        .bind(&id.value)
        .fetch_optional()
        .await
        .context("querying ClickHouse identities")?;
    let Some(mut customer) = customer else {
        return Ok(None);
    };
    // follow merges (identities are rewritten on merge, but a batch may be in flight)
    for _ in 0..8 {
        let p: Option<ProfileRow> = client
            .query("SELECT ?fields FROM profiles FINAL WHERE customer_id = ?")
            .bind(&customer)
            .fetch_optional()
            .await
            .context("querying ClickHouse profiles")?;
        match p {
            Some(p) if p.is_active == 0 && !p.merged_into.is_empty() => customer = p.merged_into,
            other => return Ok(other),
        }
    }
    bail!("merge chain of {customer} is longer than 8")
}

pub async fn run(cfg: &Config, cmd: ProfileCommand) -> Result<()> {
    match cmd {
        ProfileCommand::Get { identifier, json } => match get_profile(cfg, &identifier).await? {
            Some(p) if json => {
                println!("{}", serde_json::to_string_pretty(&to_json(&p))?);
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
                    println!("{}", to_json(p));
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
