//! `socialcrm replay`: sends a JSONL file of Segment messages to a collector over
//! HTTP in `/v1/batch` calls, as an SDK would. Used by the demo and load tests.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// JSONL file, one Segment message per line.
    #[arg(long)]
    pub file: PathBuf,
    /// Collector base URL (default: http://<collector.listen>).
    #[arg(long)]
    pub url: Option<String>,
    /// Write key (default: the first configured one: collector.write_keys, then collector.keys).
    #[arg(long, env = "SOCIALCRM_WRITE_KEY")]
    pub write_key: Option<String>,
    /// Messages per /v1/batch call.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
}

pub async fn run(cfg: &Config, args: ReplayArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut messages = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", args.file.display(), i + 1))?;
        messages.push(v);
    }
    let url = args
        .url
        .unwrap_or_else(|| format!("http://{}", cfg.collector.listen));
    let key = args
        .write_key
        .or_else(|| cfg.collector.resolved_keys().first().map(|k| k.key.clone()))
        .context("no write key: pass --write-key")?;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut sent = 0usize;
    for chunk in messages.chunks(args.batch_size.max(1)) {
        let body = json!({"batch": chunk, "sentAt": chrono::Utc::now().to_rfc3339()});
        let resp = client
            .post(format!("{url}/v1/batch"))
            .header("Authorization", &auth)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the collector at {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("collector answered {status} after {sent} messages: {text}");
        }
        sent += chunk.len();
    }
    println!(
        "sent {sent} messages to {url} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
