//! `socialcrm profile get|list`: unified profiles from ClickHouse.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
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

/// Columns of `profiles` read by the CLI.
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct ProfileView {
    pub customer_id: String,
    pub version: u64,
    pub is_active: u8,
    pub merged_into: String,
    pub identifier_types: Vec<String>,
    pub identifier_values: Vec<String>,
    pub traits: String,
    pub channels: Vec<String>,
    pub sources: Vec<String>,
    pub event_count: u64,
    pub event_count_types: Vec<String>,
    pub event_count_values: Vec<u64>,
    pub channel_count_keys: Vec<String>,
    pub channel_count_values: Vec<u64>,
    pub first_seen: u32,
    pub last_seen: u32,
    pub order_count: u64,
    pub revenue_currencies: Vec<String>,
    pub revenue_amounts: Vec<f64>,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub lifecycle_stage: String,
    pub merged_from: Vec<String>,
}

const COLUMNS: &str = "customer_id, version, is_active, merged_into, identifier_types, identifier_values, traits, channels, sources, event_count, event_count_types, event_count_values, channel_count_keys, channel_count_values, toUInt32(first_seen) AS first_seen, toUInt32(last_seen) AS last_seen, order_count, revenue_currencies, revenue_amounts, engagement_score, influence_score, lifecycle_stage, merged_from";

fn time(secs: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

impl ProfileView {
    pub fn to_json(&self) -> Value {
        let zip_u = |k: &[String], v: &[u64]| -> Value {
            k.iter()
                .zip(v)
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "customer_id": self.customer_id,
            "identifiers": self.identifier_types.iter().zip(&self.identifier_values)
                .map(|(t, v)| format!("{t}:{v}")).collect::<Vec<_>>(),
            "traits": serde_json::from_str::<Value>(&self.traits).unwrap_or(json!({})),
            "channels": self.channels,
            "sources": self.sources,
            "event_count": self.event_count,
            "event_counts": zip_u(&self.event_count_types, &self.event_count_values),
            "channel_counts": zip_u(&self.channel_count_keys, &self.channel_count_values),
            "first_seen": time(self.first_seen),
            "last_seen": time(self.last_seen),
            "order_count": self.order_count,
            "revenue": self.revenue_currencies.iter().zip(&self.revenue_amounts)
                .map(|(c, a)| (c.clone(), json!(a))).collect::<serde_json::Map<_, _>>(),
            "engagement_score": self.engagement_score,
            "influence_score": self.influence_score,
            "lifecycle_stage": self.lifecycle_stage,
            "merged_from": self.merged_from,
            "version": self.version,
        })
    }

    pub fn print_text(&self) {
        println!("customer {}", self.customer_id);
        println!("  identifiers:");
        for (t, v) in self.identifier_types.iter().zip(&self.identifier_values) {
            println!("    {t}:{v}");
        }
        let counts: Vec<String> = self
            .event_count_types
            .iter()
            .zip(&self.event_count_values)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let channels: Vec<String> = self
            .channel_count_keys
            .iter()
            .zip(&self.channel_count_values)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!(
            "  events:      {} ({})",
            self.event_count,
            counts.join(", ")
        );
        println!("  channels:    {}", channels.join(", "));
        println!("  sources:     {}", self.sources.join(", "));
        println!("  first seen:  {}", time(self.first_seen));
        println!("  last seen:   {}", time(self.last_seen));
        let revenue: Vec<String> = self
            .revenue_currencies
            .iter()
            .zip(&self.revenue_amounts)
            .map(|(c, a)| format!("{a:.2} {c}"))
            .collect();
        println!(
            "  orders:      {}{}",
            self.order_count,
            if revenue.is_empty() {
                String::new()
            } else {
                format!(" (revenue {})", revenue.join(", "))
            }
        );
        println!("  lifecycle:   {}", self.lifecycle_stage);
        if !self.traits.is_empty() {
            println!("  traits:      {}", self.traits);
        }
        if !self.merged_from.is_empty() {
            println!("  merged from: {}", self.merged_from.join(", "));
        }
    }
}

/// Resolves `type:value` to its live profile (following merges).
pub async fn get_profile(cfg: &Config, identifier: &str) -> Result<Option<ProfileView>> {
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
        let p: Option<ProfileView> = client
            .query(&format!(
                "SELECT {COLUMNS} FROM profiles FINAL WHERE customer_id = ?"
            ))
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
                println!("{}", serde_json::to_string_pretty(&p.to_json())?);
                Ok(())
            }
            Some(p) => {
                p.print_text();
                Ok(())
            }
            None => bail!("no profile has the identifier {identifier}"),
        },
        ProfileCommand::List { limit, json } => {
            let rows: Vec<ProfileView> = cfg
                .clickhouse
                .client()
                .query(&format!(
                    "SELECT {COLUMNS} FROM profiles FINAL WHERE is_active = 1 ORDER BY event_count DESC, customer_id LIMIT ?"
                ))
                .bind(limit)
                .fetch_all()
                .await
                .context("querying ClickHouse profiles")?;
            for p in &rows {
                if json {
                    println!("{}", p.to_json());
                } else {
                    p.print_text();
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
