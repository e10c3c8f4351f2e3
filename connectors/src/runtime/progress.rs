//! Progress of a sync: a bar on a terminal (backfills with `--since`), log lines
//! every few seconds otherwise, so long runs are never silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    instance: String,
    since: Option<DateTime<Utc>>,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
    objects: u64,
    events: u64,
    /// Objects since the last caught-up (one sync).
    sync_objects: u64,
}

impl Progress {
    pub fn new(instance: &str, since: Option<DateTime<Utc>>) -> Progress {
        let bar = (since.is_some() && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(instance.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            instance: instance.to_string(),
            since,
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
            objects: 0,
            events: 0,
            sync_objects: 0,
        }
    }

    /// A page was produced and its cursor stored.
    pub fn page(
        &mut self,
        stream: &str,
        objects: u64,
        events: u64,
        total: Option<u64>,
        position: Option<DateTime<Utc>>,
    ) {
        self.objects += objects;
        self.events += events;
        self.sync_objects += objects;
        let pos = position.map(|p| p.format("%Y-%m-%d %H:%M").to_string());
        if let Some(b) = &self.bar {
            match total {
                Some(t) => {
                    b.set_length(t);
                    b.set_position(self.sync_objects.min(t));
                }
                None => {
                    // no total from the API: show the time covered since `--since`
                    if let (Some(since), Some(p)) = (self.since, position) {
                        let span = (Utc::now() - since).num_seconds().max(1) as u64;
                        b.set_length(span);
                        b.set_position(((p - since).num_seconds().max(0) as u64).min(span));
                    }
                }
            }
            b.set_message(format!(
                "{stream}: {} objects, {} events{}",
                self.objects,
                self.events,
                pos.as_deref()
                    .map(|p| format!(", at {p}"))
                    .unwrap_or_default()
            ));
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.events as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(connector = %self.instance, stream, objects = self.objects,
                events = self.events, total = ?total, position = ?pos,
                events_per_sec = rate.round() as u64, "sync progress");
        }
    }

    /// Every stream caught up.
    pub fn caught_up(&mut self) {
        if self.sync_objects > 0 || self.bar.is_some() {
            tracing::info!(connector = %self.instance, objects = self.objects,
                events = self.events, "caught up");
        }
        self.sync_objects = 0;
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
