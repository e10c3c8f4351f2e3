//! Phase c load generator: Segment `/v1/batch` calls from several concurrent clients.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::gen::Dataset;

/// One prepared HTTP body and the number of messages in it.
pub struct Call {
    pub messages: usize,
    pub body: Bytes,
}

/// Serialises every message into `/v1/batch` bodies of `per_call` messages, in time order.
pub fn prepare(ds: &Dataset, id_prefix: &str, per_call: usize) -> Result<Vec<Call>> {
    let n = ds.slots.len();
    let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut calls = Vec::with_capacity(n.div_ceil(per_call.max(1)));
    let mut i = 0;
    while i < n {
        let end = (i + per_call.max(1)).min(n);
        let batch: Vec<Value> = (i..end).map(|k| ds.segment(k, id_prefix)).collect();
        let body = serde_json::to_vec(&json!({"batch": batch, "sentAt": sent_at}))?;
        calls.push(Call {
            messages: end - i,
            body: Bytes::from(body),
        });
        i = end;
    }
    Ok(calls)
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SendReport {
    pub calls: u64,
    pub failed_calls: u64,
    pub retried_calls: u64,
    pub accepted_messages: u64,
    pub secs: f64,
    pub call_ms_p50: f64,
    pub call_ms_p99: f64,
    pub call_ms_max: f64,
    pub first_error: Option<String>,
}

/// Posts every call with `concurrency` clients pulling from one queue (so the
/// collector sees the messages roughly in time order). A 503 or a connection
/// error is retried (at most 3 times, 1 s apart); a 400 is counted as failed.
pub async fn send(
    url: String,
    write_key: String,
    calls: Arc<Vec<Call>>,
    concurrency: usize,
    deadline: Instant,
) -> SendReport {
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return SendReport {
                first_error: Some(format!("cannot build HTTP client: {e}")),
                ..SendReport::default()
            }
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, calls, next, accepted, failed, retried, first_error) = (
            client.clone(),
            calls.clone(),
            next.clone(),
            accepted.clone(),
            failed.clone(),
            retried.clone(),
            first_error.clone(),
        );
        let url = format!("{}/v1/batch", url.trim_end_matches('/'));
        let key = write_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = calls.get(i) else { break };
                let mut attempt = 0;
                let t = Instant::now();
                let outcome: Result<(), String> = loop {
                    if Instant::now() > deadline {
                        break Err("deadline passed".into());
                    }
                    let res = client
                        .post(&url)
                        .basic_auth(&key, None::<&str>)
                        .header("content-type", "application/json")
                        .body(call.body.clone())
                        .send()
                        .await;
                    let retry = match res {
                        Ok(r) if r.status().is_success() => break Ok(()),
                        Ok(r) if r.status().as_u16() == 503 => {
                            format!("503: {}", r.text().await.unwrap_or_default())
                        }
                        Ok(r) => {
                            let st = r.status();
                            break Err(format!("{st}: {}", r.text().await.unwrap_or_default()));
                        }
                        Err(e) => format!("request error: {e}"),
                    };
                    attempt += 1;
                    if attempt > 3 {
                        break Err(retry);
                    }
                    retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                };
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                match outcome {
                    Ok(()) => {
                        accepted.fetch_add(call.messages as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat: Vec<f64> = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            lat.extend(l);
        }
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round().max(0.0) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let first_error = first_error.lock().ok().and_then(|f| f.clone());
    SendReport {
        calls: calls.len() as u64,
        failed_calls: failed.load(Ordering::Relaxed),
        retried_calls: retried.load(Ordering::Relaxed),
        accepted_messages: accepted.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        call_ms_p50: q(0.5),
        call_ms_p99: q(0.99),
        call_ms_max: lat.last().copied().unwrap_or(0.0),
        first_error,
    }
}
