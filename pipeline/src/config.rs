//! `[pipeline]` and `[identity]` sections of the config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[pipeline]`: how the consumer batches and where the identity writer keeps its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Kafka consumer group of the pipeline.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Static group membership id (`group.instance.id`): a restarted pipeline takes
    /// its partitions back at once instead of waiting for the session timeout.
    /// Default: `<group_id>-writer` (one identity writer per workspace).
    #[serde(default)]
    pub instance_id: String,
    /// Kafka session timeout: how long a vanished pipeline keeps its partitions.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    /// Directory of the identity writer's embedded store (one writer per directory).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// A batch is written when it holds this many messages...
    #[serde(default = "default_batch_max")]
    pub batch_max_events: usize,
    /// ...or when its first message has waited this long.
    #[serde(default = "default_batch_wait")]
    pub batch_max_wait_ms: u64,
    /// Longest wait between retries of ClickHouse/Kafka writes (retried forever).
    #[serde(default = "default_retry_max")]
    pub retry_max_interval_ms: u64,
    /// Address of the `/metrics` (Prometheus text) and `/health` endpoint; empty = off.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Stop after this many idle seconds with no message (0 = run forever; used by tools).
    #[serde(default)]
    pub exit_when_idle_secs: u64,
}

fn default_group() -> String {
    "socialcrm-pipeline".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_session_timeout() -> u64 {
    15_000
}
fn default_state_dir() -> String {
    ".local/state/pipeline".into()
}
fn default_batch_max() -> usize {
    // large inserts suit ClickHouse, and a profile touched several times in a
    // batch is written once: 50,000 wrote a backlog ~25 % faster than 20,000
    // for ~400 MiB more peak memory (docs/benchmarks.md)
    50_000
}
fn default_batch_wait() -> u64 {
    500
}
fn default_retry_max() -> u64 {
    10_000
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            group_id: default_group(),
            instance_id: String::new(),
            session_timeout_ms: default_session_timeout(),
            state_dir: default_state_dir(),
            batch_max_events: default_batch_max(),
            batch_max_wait_ms: default_batch_wait(),
            retry_max_interval_ms: default_retry_max(),
            metrics_listen: default_metrics_listen(),
            exit_when_idle_secs: 0,
        }
    }
}

impl PipelineConfig {
    /// The effective `group.instance.id`.
    pub fn instance_id(&self) -> String {
        if self.instance_id.trim().is_empty() {
            format!("{}-writer", self.group_id)
        } else {
            self.instance_id.clone()
        }
    }

    /// Pure checks, before anything touches the network.
    pub fn validate(&self) -> Result<(), String> {
        if self.group_id.trim().is_empty() {
            return Err("pipeline.group_id must not be empty".into());
        }
        if self.state_dir.trim().is_empty() {
            return Err("pipeline.state_dir must not be empty".into());
        }
        if !(1..=1_000_000).contains(&self.batch_max_events) {
            return Err("pipeline.batch_max_events must be between 1 and 1000000".into());
        }
        if self.batch_max_wait_ms == 0 {
            return Err("pipeline.batch_max_wait_ms must be > 0".into());
        }
        Ok(())
    }
}

/// `[identity]`: identity-resolution rules (DESIGN §5, docs/identity.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// ISO 3166 region (`US`, `DE`) for phone numbers without a country code; empty = reject them.
    #[serde(default)]
    pub default_phone_region: String,
    /// Extra values never linked, compared after normalisation (e.g. a shared
    /// `info@yourshop.com`), in addition to the built-in junk list.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Regular expressions over normalised values: a value that matches is never
    /// linked (e.g. `^info@`, `^test@`). Replaces the default list when set.
    #[serde(default = "default_blocked_patterns")]
    pub blocked_patterns: Vec<String>,
    /// A profile never grows beyond this many identifiers; links past it are
    /// rejected and the profile is flagged for review.
    #[serde(default = "default_max_ids")]
    pub max_identifiers_per_profile: usize,
    /// At most this many linking events (distinct identifier sets seen together)
    /// per profile and day; links past it are rejected and the profile flagged.
    #[serde(default = "default_max_links_per_day")]
    pub max_links_per_day: u32,
    /// Identifiers of one type a profile may hold (social and shop ids: per network
    /// or store). Types not named keep their default (docs/identity.md).
    #[serde(default)]
    pub limits: BTreeMap<String, usize>,
    /// Optional windows (days) for the limits: e.g. `{ email = 365 }` lets a
    /// profile gain at most `limits.email` addresses within any 365 days, by the
    /// addresses' first events, instead of over its whole life.
    #[serde(default)]
    pub limit_window_days: BTreeMap<String, u32>,
    /// Identifier types, strongest first. Types not named keep their default order
    /// after the named ones. The strongest identifier of an event decides which
    /// profile the event belongs to, and the weakest is dropped first from a link
    /// that breaks a rule.
    #[serde(default)]
    pub priority: Vec<String>,
    /// Claimed links (an identifier in a bio, a handle typed in a form) that are
    /// trusted enough to link: `"<actor type>><claimed type>"`, e.g. `"mastodon>x"`.
    /// Every other claim is only recorded as a candidate.
    #[serde(default)]
    pub trusted_claims: Vec<String>,
}

fn default_max_ids() -> usize {
    1000
}
fn default_max_links_per_day() -> u32 {
    100
}

/// Values matching these are never linked, unless `blocked_patterns` is set.
pub const DEFAULT_BLOCKED_PATTERNS: &[&str] =
    &[r"^(test|testing|noreply|no-reply|donotreply|do-not-reply|mailer-daemon)@"];

fn default_blocked_patterns() -> Vec<String> {
    DEFAULT_BLOCKED_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            default_phone_region: String::new(),
            blocked_values: Vec::new(),
            blocked_patterns: default_blocked_patterns(),
            max_identifiers_per_profile: default_max_ids(),
            max_links_per_day: default_max_links_per_day(),
            limits: BTreeMap::new(),
            limit_window_days: BTreeMap::new(),
            priority: Vec::new(),
            trusted_claims: Vec::new(),
        }
    }
}

impl IdentityConfig {
    /// Pure checks; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        crate::identity::Rules::new(self).map(|_| ())
    }
}
