//! `http-load`: a small HTTP load tool for the API benchmark (docs/benchmarks.md,
//! "HTTP API"). N concurrent clients (one reqwest client and connection pool each)
//! loop over a list of URLs, each from its own offset, until a duration or a number
//! of requests is reached. A request's latency runs from sending it to the last byte of
//! its body (a streamed CSV export counts in full); latencies go into an HDR
//! histogram (µs, 3 significant digits).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proc::{cpu_secs, SelfCpu};

#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub urls: Vec<String>,
    pub concurrency: usize,
    /// Stop after this long (whichever of duration and requests comes first).
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Requests per client sent before measuring (not in the figures).
    pub warmup: u64,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// The server under test, to report its CPU use.
    pub server_pid: Option<u32>,
}

/// CPU seconds per wall second (2.0 = both cores of this machine) while measuring.
#[derive(Debug, Serialize)]
pub struct Cpu {
    /// This load tool.
    pub load_tool: f64,
    /// The server under test (`--server-pid`).
    pub server: Option<f64>,
    pub clickhouse: f64,
    pub machine: f64,
    /// Everything else (Kafka included): should be ~0 for clean figures.
    pub other: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub urls: usize,
    pub requests: u64,
    /// 2xx answers whose body was read to the end.
    pub ok: u64,
    /// Non-2xx statuses and transport errors (`"503"`, `"timeout"`, `"connect"`, ...).
    pub errors: BTreeMap<String, u64>,
    pub secs: f64,
    pub requests_per_sec: f64,
    pub ms_min: f64,
    pub ms_mean: f64,
    pub ms_p50: f64,
    pub ms_p90: f64,
    pub ms_p99: f64,
    pub ms_p999: f64,
    pub ms_max: f64,
    /// The first measured request of the first client (a cold cache shows here).
    pub ms_first: f64,
    pub body_bytes: u64,
    pub bytes_per_response: f64,
    /// Newlines per 2xx body (for CSV: rows + the header line).
    pub lines_per_response: f64,
    /// An example of the first error seen, to tell what went wrong.
    pub first_error: Option<String>,
    pub cpu: Cpu,
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
    bytes: u64,
    lines: u64,
    first_ms: Option<f64>,
    first_error: Option<String>,
}

/// Parses `Name: value`.
pub fn parse_header(h: &str) -> Result<(String, String)> {
    let (k, v) = h
        .split_once(':')
        .with_context(|| format!("header {h:?}: expected 'Name: value'"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Reads URLs, one a line (blank lines and `#` comments skipped).
pub fn read_urls(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

pub async fn run(a: LoadArgs) -> Result<Report> {
    if a.urls.is_empty() {
        bail!("no URLs (--url or --urls-file)");
    }
    if a.duration.is_none() && a.requests.is_none() {
        bail!("give --duration-secs or --requests");
    }
    let concurrency = a.concurrency.max(1);
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &a.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .with_context(|| format!("header name {k:?}"))?,
            reqwest::header::HeaderValue::from_str(v)
                .with_context(|| format!("header value of {k}"))?,
        );
    }
    let urls = Arc::new(a.urls.clone());
    let issued = Arc::new(AtomicU64::new(0));
    let limit = a.requests.unwrap_or(u64::MAX);

    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .timeout(a.timeout)
                .pool_max_idle_per_host(1)
                .build()?,
        );
    }
    // every client warms up, then all start measuring together
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let duration = a.duration;
    let warmup = a.warmup;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let urls = urls.clone();
            let issued = issued.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut k = offset(i, concurrency, urls.len());
                for _ in 0..warmup {
                    let _ = one(&client, &urls[k % urls.len()]).await;
                    k += 1;
                }
                barrier.wait().await;
                let deadline = duration.map(|d| Instant::now() + d);
                let mut r = ClientResult {
                    hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
                    errors: BTreeMap::new(),
                    ok: 0,
                    bytes: 0,
                    lines: 0,
                    first_ms: None,
                    first_error: None,
                };
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    if issued.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                    let url = &urls[k % urls.len()];
                    k += 1;
                    let t = Instant::now();
                    let outcome = one(&client, url).await;
                    let us = t.elapsed().as_micros() as u64;
                    r.hist.saturating_record(us.max(1));
                    if r.first_ms.is_none() {
                        r.first_ms = Some(us as f64 / 1000.0);
                    }
                    match outcome {
                        Ok((bytes, lines)) => {
                            r.ok += 1;
                            r.bytes += bytes;
                            r.lines += lines;
                        }
                        Err(e) => {
                            *r.errors.entry(e.kind).or_default() += 1;
                            if r.first_error.is_none() {
                                r.first_error = Some(format!("{url}: {}", e.detail));
                            }
                        }
                    }
                }
                anyhow::Ok(r)
            })
        })
        .collect();

    barrier.wait().await;
    let start = Instant::now();
    let cpu = SelfCpu::start();
    let server_cpu = a.server_pid.and_then(cpu_secs);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut errors = BTreeMap::new();
    let (mut ok, mut bytes, mut lines) = (0, 0, 0);
    let mut first_ms = None;
    let mut first_error = None;
    for t in tasks {
        let r = t.await??;
        hist.add(&r.hist)?;
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        ok += r.ok;
        bytes += r.bytes;
        lines += r.lines;
        first_ms = first_ms.or(r.first_ms);
        first_error = first_error.or(r.first_error);
    }
    let secs = start.elapsed().as_secs_f64();
    let used = cpu.finish(secs);
    let server = match (server_cpu, a.server_pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => Some((after - before) / secs),
        _ => None,
    };
    let cpu = Cpu {
        load_tool: used.process,
        server,
        clickhouse: used.clickhouse,
        machine: used.machine,
        other: (used.other - server.unwrap_or(0.0)).max(0.0),
    };
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let requests = hist.len();
    Ok(Report {
        concurrency,
        urls: urls.len(),
        requests,
        ok,
        errors,
        secs,
        requests_per_sec: requests as f64 / secs,
        ms_min: hist.min() as f64 / 1000.0,
        ms_mean: hist.mean() / 1000.0,
        ms_p50: ms(0.5),
        ms_p90: ms(0.9),
        ms_p99: ms(0.99),
        ms_p999: ms(0.999),
        ms_max: hist.max() as f64 / 1000.0,
        ms_first: first_ms.unwrap_or(0.0),
        body_bytes: bytes,
        bytes_per_response: if ok > 0 {
            bytes as f64 / ok as f64
        } else {
            0.0
        },
        lines_per_response: if ok > 0 {
            lines as f64 / ok as f64
        } else {
            0.0
        },
        first_error,
        cpu,
    })
}

fn offset(i: usize, concurrency: usize, len: usize) -> usize {
    i * len / concurrency
}

struct Failure {
    kind: String,
    detail: String,
}

/// One request, body read to the end: (bytes, newlines) of a 2xx answer.
async fn one(client: &reqwest::Client, url: &str) -> Result<(u64, u64), Failure> {
    let transport = |e: reqwest::Error| Failure {
        kind: if e.is_timeout() {
            "timeout".into()
        } else if e.is_connect() {
            "connect".into()
        } else if e.is_body() || e.is_decode() {
            "body".into()
        } else {
            "request".into()
        },
        detail: chain(&e),
    };
    let mut resp = client.get(url).send().await.map_err(transport)?;
    let status = resp.status();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut head = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if !status.is_success() && head.len() < 300 {
            head.extend_from_slice(&chunk[..chunk.len().min(300)]);
        }
    }
    if !status.is_success() {
        return Err(Failure {
            kind: status.as_u16().to_string(),
            detail: format!(
                "{status}: {}",
                String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
    }
    Ok((bytes, lines))
}

/// An error with its causes (`error sending request: connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn print(r: &Report) {
    println!(
        "{} requests in {:.2} s ({:.1}/s) from {} clients over {} URLs: {} ok",
        r.requests, r.secs, r.requests_per_sec, r.concurrency, r.urls, r.ok
    );
    if !r.errors.is_empty() {
        let e: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("errors: {}", e.join(", "));
        if let Some(f) = &r.first_error {
            println!("first error: {f}");
        }
    }
    println!(
        "latency ms: min {:.2}  mean {:.2}  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (first {:.2})",
        r.ms_min, r.ms_mean, r.ms_p50, r.ms_p90, r.ms_p99, r.ms_p999, r.ms_max, r.ms_first
    );
    let c = &r.cpu;
    println!(
        "cpu cores: load tool {:.2}  server {}  clickhouse {:.2}  other {:.2}  machine {:.2}",
        c.load_tool,
        c.server.map_or("?".to_string(), |s| format!("{s:.2}")),
        c.clickhouse,
        c.other,
        c.machine
    );
    println!(
        "body: {} bytes in all, {:.0} bytes and {:.1} lines per response",
        r.body_bytes, r.bytes_per_response, r.lines_per_response
    );
}
