//! Inside the pipeline: runs the scoring job on its schedule (`scoring.interval_secs`)
//! and hands the scores of every newly completed run (`crm.score_runs`, whoever ran
//! it) to the identity writer, which stores them on the profiles and publishes the
//! changed profiles (ClickHouse `profiles`, Kafka `crm.profiles`).

use std::time::Duration;

use chrono::Utc;
use clickhouse::Row;
use serde::Deserialize;
use socialcrm_schemas::clickhouse_config::ClickHouseConfig;
use tokio::sync::{mpsc, watch};

use super::config::ScoringConfig;
use super::incremental::IncrementalModel;
use super::job::ModelRow;
use crate::profile::ProfileScores;
use crate::run::ScoreUpdate;

/// Scores handed over per message.
const CHUNK: usize = 50_000;

#[derive(Debug, Row, Deserialize)]
struct Latest {
    run_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct ScoreLine {
    customer_id: String,
    engagement_score: f64,
    influence_score: f64,
    lifecycle_stage: String,
    rfm_segment: String,
    rfm_r: u8,
    rfm_f: u8,
    rfm_m: u8,
    top_categories: Vec<String>,
    top_channels: Vec<String>,
}

/// Runs until `stop`: the schedule and the hand-over of new runs' scores.
pub async fn watch(
    ch: ClickHouseConfig,
    cfg: ScoringConfig,
    tx: mpsc::Sender<ScoreUpdate>,
    mut stop: watch::Receiver<bool>,
) {
    let client = ch.client();
    let poll = Duration::from_secs(cfg.apply_poll_secs.max(1));
    let every = (cfg.interval_secs > 0).then(|| Duration::from_secs(cfg.interval_secs));
    let mut next_job = every.map(|e| tokio::time::Instant::now() + e);
    let mut applied: Option<String> = None;
    loop {
        if let Some(at) = next_job {
            if tokio::time::Instant::now() >= at {
                tracing::info!("scheduled scoring run starting");
                match super::job::run(&ch, &cfg, Utc::now()).await {
                    Ok(r) => {
                        tracing::info!(run_id = %r.run_id, customers = r.customers, "scheduled scoring run done")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled scoring run failed; next attempt at the next interval")
                    }
                }
                next_job = every.map(|e| tokio::time::Instant::now() + e);
            }
        }
        match hand_over(&client, &tx, &mut applied).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read scores from ClickHouse; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn hand_over(
    client: &clickhouse::Client,
    tx: &mpsc::Sender<ScoreUpdate>,
    applied: &mut Option<String>,
) -> Result<(), clickhouse::error::Error> {
    let latest: Option<Latest> = client
        .query("SELECT max(run_id) AS run_id FROM score_runs")
        .fetch_optional()
        .await?;
    let Some(latest) = latest.filter(|l| !l.run_id.is_empty()) else {
        return Ok(());
    };
    if applied.as_deref() == Some(latest.run_id.as_str()) {
        return Ok(());
    }
    // the run's distributions first: profiles that events touch while its scores
    // are handed over are already rescored against them
    let model: Option<ModelRow> = client
        .query("SELECT ?fields FROM score_models WHERE run_id = ? LIMIT 1")
        .bind(&latest.run_id)
        .fetch_optional()
        .await?;
    match model.map(|m| serde_json::from_str::<IncrementalModel>(&m.model)) {
        Some(Ok(m)) => {
            if tx
                .send(ScoreUpdate::Model(std::sync::Arc::new(m)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        Some(Err(e)) => tracing::warn!(
            run_id = %latest.run_id, error = %e,
            "unreadable score model; incremental updates keep the previous run's"
        ),
        None => tracing::warn!(
            run_id = %latest.run_id,
            "the run has no score model (written by an older version); incremental updates keep the previous run's"
        ),
    }
    let mut cursor = client
        .query("SELECT ?fields FROM scores WHERE run_id = ?")
        .bind(&latest.run_id)
        .fetch::<ScoreLine>()?;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut n = 0usize;
    while let Some(l) = cursor.next().await? {
        n += 1;
        chunk.push((
            l.customer_id,
            ProfileScores {
                run_id: latest.run_id.clone(),
                engagement_score: l.engagement_score,
                influence_score: l.influence_score,
                lifecycle_stage: l.lifecycle_stage,
                rfm_segment: l.rfm_segment,
                rfm: [l.rfm_r, l.rfm_f, l.rfm_m],
                top_categories: l.top_categories,
                top_channels: l.top_channels,
                incremental_at: None,
            },
        ));
        if chunk.len() >= CHUNK
            && tx
                .send(ScoreUpdate::Scores(std::mem::take(&mut chunk)))
                .await
                .is_err()
        {
            return Ok(());
        }
    }
    if !chunk.is_empty() && tx.send(ScoreUpdate::Scores(chunk)).await.is_err() {
        return Ok(());
    }
    tracing::info!(run_id = %latest.run_id, scores = n, "scores of a completed run handed to the identity writer");
    *applied = Some(latest.run_id);
    Ok(())
}
