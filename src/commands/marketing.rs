//! `socialcrm segment|top|report`: the marketers' questions on the command line,
//! answered by the same queries as the HTTP API (`crate::api::queries`).

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api::filter::{order_by, SegmentFilter};
use crate::api::queries::{QueryError, CSV_HEADER};
use crate::config::Config;

/// Segment conditions (the same as the HTTP API's query parameters).
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Engagement score at least (0–100).
    #[arg(long)]
    engagement_min: Option<String>,
    #[arg(long)]
    engagement_max: Option<String>,
    #[arg(long)]
    influence_min: Option<String>,
    #[arg(long)]
    influence_max: Option<String>,
    /// Any of these lifecycle stages, comma-separated.
    #[arg(long)]
    lifecycle: Option<String>,
    /// Any of these RFM segments, comma-separated.
    #[arg(long)]
    rfm_segment: Option<String>,
    /// Used every one of these channels, comma-separated.
    #[arg(long)]
    channels: Option<String>,
    /// Any of these product categories among the top affinities, comma-separated.
    #[arg(long)]
    category: Option<String>,
    /// Has an identifier of this type (email, mastodon, x, ...).
    #[arg(long)]
    has_identifier: Option<String>,
    #[arg(long)]
    active_within_days: Option<String>,
    #[arg(long)]
    inactive_for_days: Option<String>,
    #[arg(long)]
    min_orders: Option<String>,
    /// Trait equals value, written name:value; repeat for several.
    #[arg(long = "trait")]
    traits: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<SegmentFilter> {
        let one = [
            ("engagement_min", &self.engagement_min),
            ("engagement_max", &self.engagement_max),
            ("influence_min", &self.influence_min),
            ("influence_max", &self.influence_max),
            ("lifecycle", &self.lifecycle),
            ("rfm_segment", &self.rfm_segment),
            ("channels", &self.channels),
            ("category", &self.category),
            ("has_identifier", &self.has_identifier),
            ("active_within_days", &self.active_within_days),
            ("inactive_for_days", &self.inactive_for_days),
            ("min_orders", &self.min_orders),
        ];
        let mut f = SegmentFilter::default();
        let pairs = one
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
            .chain(self.traits.iter().map(|t| ("trait", t.as_str())));
        for (k, v) in pairs {
            f.set(k, v)
                .map_err(|e| anyhow::anyhow!("--{}: {e}", k.replace('_', "-")))?;
        }
        Ok(f)
    }
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// How many live profiles match.
    Count {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// The first rows of the segment.
    Preview {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// engagement, influence, last_seen, orders or customer_id.
        #[arg(long)]
        sort: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every row of the segment as CSV, streamed (progress on stderr).
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// At most this many rows (default api.max_export_rows).
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        sort: Option<String>,
    },
}

/// Options of a leaderboard.
#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    /// Only customers present on this network (mastodon, x, telegram, ...).
    #[arg(long)]
    network: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Customers by influence score (newest scoring run).
    Influencers(LeaderboardArgs),
    /// Customers by weighted advocacy actions toward the brand.
    Advocates(LeaderboardArgs),
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Touches, first/last-touch orders and revenue, cost and ROI per UTM campaign.
    Campaigns {
        #[arg(long)]
        json: bool,
    },
    /// Best-selling products and categories.
    Products {
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Customers by channel, lifecycle stage and RFM segment.
    Distributions {
        #[arg(long)]
        json: bool,
    },
}

fn q_err(e: QueryError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn segment(cfg: &Config, cmd: SegmentCommand) -> Result<()> {
    let q = crate::api::queries(cfg)?;
    match cmd {
        SegmentCommand::Count { filter } => {
            let n = q.segment_count(&filter.filter()?).await.map_err(q_err)?;
            println!("{n}");
        }
        SegmentCommand::Preview {
            filter,
            limit,
            sort,
            json,
        } => {
            let f = filter.filter()?;
            let order = order_by(sort.as_deref()).map_err(anyhow::Error::msg)?;
            let (count, rows) =
                tokio::join!(q.segment_count(&f), q.segment_rows(&f, order, limit, 0));
            let (count, rows) = (count.map_err(q_err)?, rows.map_err(q_err)?);
            if json {
                for r in &rows {
                    println!("{}", r.to_json());
                }
                return Ok(());
            }
            println!("{count} profiles match; the first {}:", rows.len());
            println!(
                "{:<26} {:<24} {:<28} {:>6} {:>6}  {:<13} rfm",
                "customer_id", "name", "email", "engag", "infl", "lifecycle"
            );
            for r in &rows {
                println!(
                    "{:<26} {:<24} {:<28} {:>6.1} {:>6.1}  {:<13} {}",
                    r.customer_id,
                    cut(&r.display_name, 24),
                    cut(&r.email, 28),
                    r.engagement_score,
                    r.influence_score,
                    r.lifecycle_stage,
                    r.rfm_segment
                );
            }
        }
        SegmentCommand::Export {
            filter,
            output,
            limit,
            sort,
        } => {
            let f = filter.filter()?;
            let order = order_by(sort.as_deref()).map_err(anyhow::Error::msg)?;
            let limit = limit.unwrap_or(cfg.api.max_export_rows);
            let out: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut w = csv::Writer::from_writer(std::io::BufWriter::new(out));
            w.write_record(CSV_HEADER)?;
            let mut cursor = q.segment_cursor(&f, order, limit).map_err(q_err)?;
            let mut n = 0u64;
            let start = std::time::Instant::now();
            while let Some(r) = cursor
                .next()
                .await
                .context("reading the segment from ClickHouse")?
            {
                w.write_record(r.csv_record())?;
                n += 1;
                if n.is_multiple_of(100_000) {
                    eprintln!("{n} rows exported ({:.1} s)", start.elapsed().as_secs_f64());
                }
            }
            w.flush().context("writing the CSV")?;
            eprintln!(
                "{n} rows exported in {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub async fn top(cfg: &Config, cmd: TopCommand) -> Result<()> {
    let q = crate::api::queries(cfg)?;
    let (v, json, influencers) = match cmd {
        TopCommand::Influencers(a) => (
            q.top_influencers(a.network.as_deref(), a.limit, None).await,
            a.json,
            true,
        ),
        TopCommand::Advocates(a) => (
            q.top_advocates(a.network.as_deref(), a.limit).await,
            a.json,
            false,
        ),
    };
    let v = v.map_err(q_err)?;
    if json {
        return print_json(&v);
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    println!(
        "top {} ({}):",
        if influencers {
            "influencers"
        } else {
            "advocates"
        },
        v["network"].as_str().unwrap_or("all")
    );
    for it in &items {
        let handles: Vec<&str> = it["handles"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let figure = if influencers {
            format!(
                "influence {:>5.1}  reach {:.2}  amplification {:.2}",
                it["influence_score"].as_f64().unwrap_or(0.0),
                it["reach"].as_f64().unwrap_or(0.0),
                it["amplification"].as_f64().unwrap_or(0.0)
            )
        } else {
            format!(
                "advocacy {:>7.1}  actions {:>5}",
                it["advocacy"].as_f64().unwrap_or(0.0),
                it["actions"].as_u64().unwrap_or(0)
            )
        };
        println!(
            "{:>4}. {:<26} {:<24} {figure}  {}",
            it["rank"],
            it["customer_id"].as_str().unwrap_or(""),
            cut(it["name"].as_str().unwrap_or(""), 24),
            handles.join(" ")
        );
    }
    if items.is_empty() {
        println!("  (none: leaderboards need a completed scoring run and social activity)");
    }
    Ok(())
}

pub async fn report(cfg: &Config, cmd: ReportCommand) -> Result<()> {
    let q = crate::api::queries(cfg)?;
    match cmd {
        ReportCommand::Campaigns { json } => {
            let v = q.campaign_report().await.map_err(q_err)?;
            if json {
                return print_json(&v);
            }
            for c in v["campaigns"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{}: {} touches by {} customers (sources {}, mediums {})",
                    c["campaign"].as_str().unwrap_or(""),
                    c["touches"],
                    c["customers"],
                    c["sources"],
                    c["mediums"]
                );
                if let Some(rev) = c["revenue"].as_object() {
                    for (cur, r) in rev {
                        println!(
                            "    {cur}: first touch {} orders {:.2}, last touch {} orders {:.2}",
                            r["first_touch"]["orders"],
                            r["first_touch"]["revenue"].as_f64().unwrap_or(0.0),
                            r["last_touch"]["orders"],
                            r["last_touch"]["revenue"].as_f64().unwrap_or(0.0)
                        );
                    }
                }
                if c.get("cost").is_some() {
                    println!(
                        "    cost {} {}, ROI first touch {}, last touch {}",
                        c["cost"]["amount"],
                        c["cost"]["currency"].as_str().unwrap_or(""),
                        c["roi"]["first_touch"],
                        c["roi"]["last_touch"]
                    );
                }
            }
            if let Some(u) = v["unattributed_orders"]
                .as_object()
                .filter(|u| !u.is_empty())
            {
                for (cur, r) in u {
                    println!(
                        "(no campaign) {cur}: {} orders {:.2}",
                        r["last_touch"]["orders"],
                        r["last_touch"]["revenue"].as_f64().unwrap_or(0.0)
                    );
                }
            }
        }
        ReportCommand::Products { limit, json } => {
            let v = q.report_products(limit).await.map_err(q_err)?;
            if json {
                return print_json(&v);
            }
            for (title, key) in [("products", "products"), ("categories", "categories")] {
                println!("best-selling {title}:");
                for p in v[key].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  {:<30} {:<16} {:>10.2} {}  {} orders, {} units",
                        cut(
                            p["name"].as_str().or(p["category"].as_str()).unwrap_or(""),
                            30
                        ),
                        cut(p["category"].as_str().unwrap_or(""), 16),
                        p["revenue"].as_f64().unwrap_or(0.0),
                        p["currency"].as_str().unwrap_or(""),
                        p["orders"],
                        p["units"]
                    );
                }
            }
        }
        ReportCommand::Distributions { json } => {
            let v = q.report_distributions().await.map_err(q_err)?;
            if json {
                return print_json(&v);
            }
            for (title, key) in [
                ("customers by channel", "channels"),
                ("lifecycle stages", "lifecycle"),
                ("RFM segments", "rfm_segments"),
            ] {
                println!("{title}:");
                for r in v[key].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  {:<20} {}",
                        r["key"].as_str().unwrap_or(""),
                        r["customers"]
                    );
                }
            }
        }
    }
    Ok(())
}
