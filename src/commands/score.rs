//! `socialcrm score run` (full rescoring from ClickHouse) and `socialcrm score
//! explain <type:value>` (each component, its inputs and its contribution).

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;
use socialcrm_pipeline::scoring::job::{self, ScoreRow};

use crate::commands::profile::get_profile;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ScoreCommand {
    /// Score every customer now (PageRank and percentiles included) and write
    /// crm.scores; crm.v_scores then shows this run.
    Run {
        /// Score as of this time instead of now (RFC 3339), e.g. to reproduce a run.
        #[arg(long)]
        as_of: Option<DateTime<Utc>>,
        /// Print the run report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a customer's scores with every component, its inputs and contribution.
    Explain {
        /// Any identifier of the customer, `type:value`.
        identifier: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cfg: &Config, cmd: ScoreCommand) -> Result<()> {
    match cmd {
        ScoreCommand::Run { as_of, json } => {
            let now = as_of.unwrap_or_else(Utc::now);
            let r = job::run(&cfg.clickhouse, &cfg.scoring, now)
                .await
                .context("scoring run failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "scoring run {}: {} customers, {} interaction edges, PageRank {} iterations (L1 change {:.2e}); read {:.1} s, compute {:.1} s, write {:.1} s",
                    r.run_id, r.customers, r.edges, r.pagerank_iterations, r.pagerank_delta,
                    r.read_secs, r.compute_secs, r.write_secs
                );
            }
            Ok(())
        }
        ScoreCommand::Explain { identifier, json } => {
            let Some(p) = get_profile(cfg, &identifier).await? else {
                bail!("no profile has the identifier {identifier}");
            };
            let row: Option<ScoreRow> = cfg
                .clickhouse
                .client()
                .query("SELECT ?fields FROM v_scores WHERE customer_id = ? LIMIT 1")
                .bind(&p.customer_id)
                .fetch_optional()
                .await
                .context("querying ClickHouse v_scores")?;
            let Some(row) = row else {
                bail!(
                    "customer {} has no scores yet: run `socialcrm score run` (the newest completed run is shown)",
                    p.customer_id
                );
            };
            let comps: Value = serde_json::from_str(&row.components).unwrap_or(Value::Null);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "customer_id": row.customer_id,
                        "run_id": row.run_id,
                        "engagement_score": row.engagement_score,
                        "influence_score": row.influence_score,
                        "rfm_segment": row.rfm_segment,
                        "lifecycle_stage": row.lifecycle_stage,
                        "top_categories": row.top_categories,
                        "top_channels": row.top_channels,
                        "components": comps,
                    }))?
                );
            } else {
                print_explain(&row, &comps);
            }
            Ok(())
        }
    }
}

fn f(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            // + 0.0 turns -0 into 0
            let x = n.as_f64().unwrap_or(0.0) + 0.0;
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_explain(r: &ScoreRow, c: &Value) {
    let e = &c["engagement"];
    let i = &c["influence"];
    println!("customer {} (run {})", r.customer_id, r.run_id);
    println!(
        "engagement {:.1}/100  = percentile of raw {} among all customers",
        r.engagement_score,
        f(&e["raw"])
    );
    let it = &e["interactions"];
    println!(
        "  interactions  {} weighted & decayed (half-life {} days) → percentile {} × {} = {}",
        f(&it["weighted_decayed"]),
        f(&it["half_life_days"]),
        f(&it["percentile"]),
        f(&it["weight"]),
        f(&it["contribution"])
    );
    if let Some(by) = it["by_type"].as_object() {
        for (t, x) in by {
            println!(
                "      {t:<10} {} events, decayed {} × weight {} = {}",
                f(&x["count"]),
                f(&x["decayed"]),
                f(&x["type_weight"]),
                f(&x["weighted"])
            );
        }
    }
    let rc = &e["recency"];
    println!(
        "  recency       {} days since the last event → {} × {} = {}",
        f(&rc["days_since_last_event"]),
        f(&rc["score"]),
        f(&rc["weight"]),
        f(&rc["contribution"])
    );
    let fr = &e["frequency"];
    println!(
        "  frequency     {} events in {} days → percentile {} × {} = {}",
        f(&fr["events_in_window"]),
        f(&fr["window_days"]),
        f(&fr["percentile"]),
        f(&fr["weight"]),
        f(&fr["contribution"])
    );
    let m = &e["monetary"];
    println!(
        "  monetary      revenue {} → percentile {} × {} = {}",
        f(&m["revenue"]),
        f(&m["percentile"]),
        f(&m["weight"]),
        f(&m["contribution"])
    );
    let d = &e["dispersion"];
    println!(
        "  dispersion    {} channels (full at {}) → {} × {} = {}",
        f(&d["channels_in_window"]),
        f(&d["full_at"]),
        f(&d["score"]),
        f(&d["weight"]),
        f(&d["contribution"])
    );
    println!(
        "influence {:.1}/100  = percentile of raw {} among all customers",
        r.influence_score,
        f(&i["raw"])
    );
    for (name, key, what) in [
        ("reach", "reach", "value"),
        ("amplification", "amplification", "value"),
        ("centrality", "centrality", "pagerank"),
    ] {
        let x = &i[key];
        println!(
            "  {name:<13} {} → percentile {} × {} = {}",
            f(&x[what]),
            f(&x["percentile"]),
            f(&x["weight"]),
            f(&x["contribution"])
        );
    }
    if let Some(by) = i["by_network"].as_object() {
        for (n, x) in by {
            println!(
                "      {n:<10} followers {}, amplification {}",
                f(&x["followers"]),
                f(&x["amplification"])
            );
        }
    }
    let rfm = &c["rfm"];
    if r.rfm_r > 0 {
        println!(
            "RFM R{} F{} M{} (FM {}) → {}   (orders {}, revenue {})",
            r.rfm_r,
            r.rfm_f,
            r.rfm_m,
            f(&rfm["fm"]),
            r.rfm_segment,
            f(&rfm["orders"]),
            f(&rfm["monetary"])
        );
    } else {
        println!("RFM –   (no orders)");
    }
    println!(
        "lifecycle {}   ({})",
        r.lifecycle_stage,
        f(&c["lifecycle"]["why"]["rule"])
    );
    if !r.top_categories.is_empty() {
        println!("top categories {}", r.top_categories.join(", "));
    }
    if !r.top_channels.is_empty() {
        println!("top channels   {}", r.top_channels.join(", "));
    }
}
