//! `socialcrm-bench identity`: the identity writer alone (library code, one
//! thread, no I/O): events that create links, events whose identifiers are all
//! known, and resident memory per identifier (docs/benchmarks.md).

use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::Graph;
use socialcrm_schemas::{CanonicalEvent, IdType, Identifier};

#[derive(Debug, Serialize)]
pub struct Report {
    pub people: usize,
    pub identifiers: usize,
    pub profiles: usize,
    pub link_events: usize,
    pub link_events_per_sec: f64,
    pub known_events: usize,
    pub known_events_per_sec: f64,
    /// Resident memory grown while building the graph, per identifier.
    pub rss_bytes_per_identifier: f64,
    pub rss_graph_mib: f64,
}

/// Current resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn event(n: u64, at: DateTime<Utc>, ids: Vec<Identifier>) -> CanonicalEvent {
    CanonicalEvent::bare(format!("bench:{n}"), "web", "page", at, ids)
}

/// Times `process` over events made by `make`, in chunks (generation not timed).
fn timed(
    g: &mut Graph,
    total: usize,
    mut make: impl FnMut(usize) -> CanonicalEvent,
) -> Result<f64> {
    const CHUNK: usize = 100_000;
    let mut secs = 0.0;
    let mut done = 0;
    while done < total {
        let n = CHUNK.min(total - done);
        let evs: Vec<CanonicalEvent> = (done..done + n).map(&mut make).collect();
        let t = Instant::now();
        for e in &evs {
            g.process(e, &[])
                .map_err(|e| anyhow::anyhow!("unexpected refusal: {e}"))?;
        }
        secs += t.elapsed().as_secs_f64();
        // what a batch does after resolving: hand the changes to the writer
        let t = Instant::now();
        g.take_delta();
        secs += t.elapsed().as_secs_f64();
        done += n;
    }
    Ok(secs)
}

/// `people` people, each with a user id, an email and two browsers (4
/// identifiers, 2 linking events); then `known` events of known identifiers.
pub fn run(people: usize, known: usize) -> Result<Report> {
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    let mut g = Graph::new(&IdentityConfig::default());
    let before = rss_bytes();
    let link_events = people * 2;
    let link_secs = timed(&mut g, link_events, |i| {
        let p = i / 2;
        let at = t0 + Duration::seconds((i % 86_400) as i64);
        let ids = if i % 2 == 0 {
            vec![
                Identifier::new(IdType::UserId, format!("u{p}")),
                Identifier::new(IdType::Email, format!("p{p}@shop.io")),
                Identifier::new(IdType::AnonymousId, format!("a{p}-1")),
            ]
        } else {
            vec![
                Identifier::new(IdType::Email, format!("p{p}@shop.io")),
                Identifier::new(IdType::AnonymousId, format!("a{p}-2")),
            ]
        };
        event(i as u64, at, ids)
    })?;
    let grown = rss_bytes().saturating_sub(before);
    let identifiers = g.ids.len();
    let profiles = g.profiles.values().filter(|p| p.is_active()).count();
    let known_secs = timed(&mut g, known, |i| {
        let p = (i.wrapping_mul(7919)) % people.max(1);
        let at = t0 + Duration::seconds(86_400 + (i % 86_400) as i64);
        let ids = if i % 3 == 0 {
            vec![
                Identifier::new(IdType::UserId, format!("u{p}")),
                Identifier::new(IdType::AnonymousId, format!("a{p}-1")),
            ]
        } else {
            vec![Identifier::new(IdType::AnonymousId, format!("a{p}-2"))]
        };
        event((link_events + i) as u64, at, ids)
    })?;
    Ok(Report {
        people,
        identifiers,
        profiles,
        link_events,
        link_events_per_sec: link_events as f64 / link_secs.max(1e-9),
        known_events: known,
        known_events_per_sec: known as f64 / known_secs.max(1e-9),
        rss_bytes_per_identifier: grown as f64 / identifiers.max(1) as f64,
        rss_graph_mib: grown as f64 / (1024.0 * 1024.0),
    })
}
