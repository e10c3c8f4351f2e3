//! Profile aggregates: what the pipeline knows about one customer, updated event by
//! event and combined on merges. Every update is commutative (sums, sets, min/max,
//! newest-trait-wins by event time), so the result does not depend on event order.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::small::{VecMap, VecSet};
use socialcrm_schemas::messages::Profile;
use socialcrm_schemas::{CanonicalEvent, Identifier, SCHEMA_VERSION};

/// One trait value with the event time that set it (newest wins; ties by value text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    #[serde(with = "crate::codec::json_value")]
    pub value: Value,
    #[serde(with = "crate::codec::time")]
    pub at: DateTime<Utc>,
}

/// The scores of a customer from the newest scoring run the pipeline applied
/// (`socialcrm score run`, or the pipeline's own schedule). The full breakdown
/// stays in `crm.scores` / `crm.v_scores`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileScores {
    pub run_id: String,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub lifecycle_stage: String,
    pub rfm_segment: String,
    pub rfm: [u8; 3],
    pub top_categories: Vec<String>,
    pub top_channels: Vec<String>,
    /// Unix seconds of the newest incremental update (engagement, RFM, lifecycle and
    /// top channels recomputed from this profile's events against the run's
    /// distributions, `scoring::incremental`); absent: the values are the run's.
    #[serde(default)]
    pub incremental_at: Option<i64>,
}

/// Unix seconds of 2020-01-01: the origin of the decayed sums' exponents.
pub const DECAY_ORIGIN: i64 = 1_577_836_800;
/// Days of per-day event counts kept before a profile's newest event (the longest
/// `scoring.window_days` the incremental update supports).
pub const ACTIVITY_DAYS: u32 = 366;

static HALF_LIFE_BITS: AtomicU64 = AtomicU64::new(0);

/// The half-life (days) new events' decayed sums use: the pipeline sets
/// `scoring.half_life_days` at start; 30 when unset.
pub fn activity_half_life_days() -> f64 {
    match HALF_LIFE_BITS.load(Ordering::Relaxed) {
        0 => 30.0,
        b => f64::from_bits(b),
    }
}

/// Sets the half-life of the decayed sums (the pipeline, at start).
pub fn set_activity_half_life_days(days: f64) {
    if days.is_finite() && days > 0.0 {
        HALF_LIFE_BITS.store(days.to_bits(), Ordering::Relaxed);
    }
}

/// log2(2^a + 2^b), exact for far-apart exponents.
fn log2_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (1.0 + (lo - hi).exp2()).log2()
}

/// What the incremental score update needs about a profile's events, kept as
/// additive summaries so merges, splits and contributions stay exact
/// (docs/scoring.md, "Between runs").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Half-life (days) of `decayed`; `None` when sums built with different
    /// half-lives were added (then engagement waits for the next run).
    pub half_life_days: Option<f64>,
    /// Per event type: log2 Σ 2^((t − DECAY_ORIGIN) / half-life) over its events.
    #[serde(default)]
    pub decayed: VecMap<String, f64>,
    /// Events per day (days since 1970-01-01), the last `ACTIVITY_DAYS` days before
    /// the newest event.
    #[serde(default)]
    pub days: VecMap<u32, u32>,
    /// Newest event per channel (unix seconds).
    #[serde(default)]
    pub channel_last: VecMap<String, i64>,
    #[serde(default)]
    pub first_order_at: Option<i64>,
    #[serde(default)]
    pub last_order_at: Option<i64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            half_life_days: Some(activity_half_life_days()),
            decayed: VecMap::new(),
            days: VecMap::new(),
            channel_last: VecMap::new(),
            first_order_at: None,
            last_order_at: None,
        }
    }
}

impl Activity {
    /// Counts one event of `event_type` on `channel` at unix second `at`.
    pub fn add_event(&mut self, event_type: &str, channel: &str, at: i64) {
        if let Some(h) = self.half_life_days {
            let x = (at - DECAY_ORIGIN) as f64 / (h * 86_400.0);
            match self.decayed.get_mut(event_type) {
                Some(l) => *l = log2_add(*l, x),
                None => {
                    self.decayed.insert(event_type.to_string(), x);
                }
            }
        }
        *self.days.entry(day_of(at)).or_default() += 1;
        self.prune_days();
        match self.channel_last.get_mut(channel) {
            Some(t) => *t = (*t).max(at),
            None => {
                self.channel_last.insert(channel.to_string(), at);
            }
        }
        if event_type == "order" {
            self.first_order_at = Some(self.first_order_at.map_or(at, |f| f.min(at)));
            self.last_order_at = Some(self.last_order_at.map_or(at, |l| l.max(at)));
        }
    }

    /// Adds `other` (a merge, or a contribution).
    pub fn add(&mut self, other: &Activity) {
        if self.half_life_days != other.half_life_days {
            self.half_life_days = None;
        }
        if self.half_life_days.is_none() {
            self.decayed.clear();
        } else {
            for (t, l) in &other.decayed {
                let v = self.decayed.get(t).map_or(*l, |m| log2_add(*m, *l));
                self.decayed.insert(t.clone(), v);
            }
        }
        for (d, n) in &other.days {
            *self.days.entry(*d).or_default() += n;
        }
        self.prune_days();
        for (c, t) in &other.channel_last {
            let v = self.channel_last.get(c).map_or(*t, |m| (*m).max(*t));
            self.channel_last.insert(c.clone(), v);
        }
        self.first_order_at = min_opt(self.first_order_at, other.first_order_at);
        self.last_order_at = match (self.last_order_at, other.last_order_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Σ 2^(−age/half-life) of `event_type`'s events at unix second `now`.
    pub fn decayed_at(&self, event_type: &str, now: i64) -> Option<f64> {
        let h = self.half_life_days?;
        let l = self.decayed.get(event_type)?;
        Some((l - (now - DECAY_ORIGIN) as f64 / (h * 86_400.0)).exp2())
    }

    /// Events on days from the one holding `since` (unix seconds) on.
    pub fn events_since(&self, since: i64) -> u64 {
        self.days
            .range_from(&day_of(since))
            .map(|(_, n)| *n as u64)
            .sum()
    }

    fn prune_days(&mut self) {
        if let Some((&newest, _)) = self.days.last_key_value() {
            let keep_from = newest.saturating_sub(ACTIVITY_DAYS);
            self.days.drop_while(|d| *d < keep_from);
        }
    }
}

/// `*counts[key] += 1`, allocating the key only the first time it is counted.
fn bump(counts: &mut VecMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

fn day_of(unix_secs: i64) -> u32 {
    unix_secs.div_euclid(86_400).clamp(0, u32::MAX as i64) as u32
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Persistent state of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub customer_id: String,
    /// Earliest event time seen: decides which profile survives a merge (oldest wins).
    #[serde(with = "crate::codec::time")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "crate::codec::time")]
    pub last_seen: DateTime<Utc>,
    pub identifiers: VecSet<Identifier>,
    pub traits: VecMap<String, TraitValue>,
    pub sources: VecSet<String>,
    pub event_count: u64,
    pub event_counts: VecMap<String, u64>,
    pub channel_counts: VecMap<String, u64>,
    pub order_count: u64,
    pub revenue: VecMap<String, f64>,
    /// Retired customer ids absorbed by this profile.
    pub merged_from: VecSet<String>,
    /// Set when this profile was merged into another.
    pub merged_into: Option<String>,
    /// Scores of the newest applied scoring run (absent in stores written before scoring).
    #[serde(default)]
    pub scores: Option<Box<ProfileScores>>,
    /// Linking events per day (days since 1970-01-01): the daily link cap.
    #[serde(default)]
    pub link_days: VecMap<u32, u32>,
    /// Rules that refused links to this profile and ask for a human look
    /// (`profile_size_cap`, `link_rate`).
    #[serde(default)]
    pub flags: VecSet<String>,
    /// Some link in this profile's cluster was refused: new links re-resolve the cluster.
    #[serde(default)]
    pub conflicted: bool,
    /// The one primary identifier all of this profile's events have, if there is
    /// only one: its contribution is the profile's aggregates and is not kept
    /// separately (docs/identity.md §1).
    #[serde(default)]
    pub sole_primary: Option<String>,
    /// Summaries of the events for the incremental score update (absent in stores
    /// written before it: such profiles keep the run's scores until the next run).
    #[serde(default)]
    pub activity: Option<Activity>,
}

impl ProfileState {
    pub fn new(customer_id: String, at: DateTime<Utc>) -> Self {
        ProfileState {
            customer_id,
            first_seen: at,
            last_seen: at,
            identifiers: VecSet::new(),
            traits: VecMap::new(),
            sources: VecSet::new(),
            event_count: 0,
            event_counts: VecMap::new(),
            channel_counts: VecMap::new(),
            order_count: 0,
            revenue: VecMap::new(),
            merged_from: VecSet::new(),
            merged_into: None,
            scores: None,
            link_days: VecMap::new(),
            flags: VecSet::new(),
            conflicted: false,
            sole_primary: None,
            activity: Some(Activity::default()),
        }
    }

    /// Counts an event whose primary identifier is `primary`, keeping
    /// `sole_primary`.
    pub fn apply_event_of(&mut self, ev: &CanonicalEvent, primary: &str) {
        if self.event_count == 0 {
            self.sole_primary = Some(primary.to_string());
        } else if self.sole_primary.as_deref() != Some(primary) {
            self.sole_primary = None;
        }
        self.apply_event(ev);
    }

    /// Clears the event aggregates (before re-summing contributions).
    pub fn reset_aggregates(&mut self, first_seen: DateTime<Utc>) {
        self.first_seen = first_seen;
        self.last_seen = first_seen;
        self.traits.clear();
        self.sources.clear();
        self.event_count = 0;
        self.event_counts.clear();
        self.channel_counts.clear();
        self.order_count = 0;
        self.revenue.clear();
        self.activity = Some(Activity::default());
    }

    pub fn is_active(&self) -> bool {
        self.merged_into.is_none()
    }

    /// Counts one (new, never seen) event.
    pub fn apply_event(&mut self, ev: &CanonicalEvent) {
        self.first_seen = self.first_seen.min(ev.occurred_at);
        self.last_seen = self.last_seen.max(ev.occurred_at);
        self.event_count += 1;
        bump(&mut self.event_counts, &ev.event_type);
        bump(&mut self.channel_counts, ev.channel.as_str());
        if !self.sources.contains(&ev.source) {
            self.sources.insert(ev.source.clone());
        }
        if let Some(a) = self.activity.as_mut() {
            a.add_event(
                &ev.event_type,
                ev.channel.as_str(),
                ev.occurred_at.timestamp(),
            );
        }
        match ev.event_type.as_str() {
            "order" => {
                self.order_count += 1;
                if let Some(r) = &ev.revenue {
                    *self.revenue.entry(r.currency.clone()).or_default() += r.amount;
                }
            }
            "refund" => {
                if let Some(r) = &ev.revenue {
                    *self.revenue.entry(r.currency.clone()).or_default() -= r.amount.abs();
                }
            }
            _ => {}
        }
        for (k, v) in &ev.traits {
            self.set_trait(k, v, ev.occurred_at);
        }
    }

    fn set_trait(&mut self, key: &str, value: &Value, at: DateTime<Utc>) {
        if value.is_null() {
            return;
        }
        match self.traits.get(key) {
            Some(cur) if newer_or_equal(cur, at, value) => {}
            _ => {
                self.traits.insert(
                    key.to_string(),
                    TraitValue {
                        value: value.clone(),
                        at,
                    },
                );
            }
        }
    }

    /// Absorbs `other` (a merge): the union of identifiers and aggregates.
    pub fn absorb(&mut self, other: &ProfileState) {
        self.sole_primary = match (self.event_count, other.event_count) {
            (0, _) => other.sole_primary.clone(),
            (_, 0) => self.sole_primary.take(),
            _ if self.sole_primary == other.sole_primary => self.sole_primary.take(),
            _ => None,
        };
        self.identifiers.extend(other.identifiers.iter().cloned());
        self.add_aggregates(other);
        for (d, n) in &other.link_days {
            *self.link_days.entry(*d).or_default() += n;
        }
        self.flags.extend(other.flags.iter().cloned());
        self.conflicted |= other.conflicted;
        self.merged_from.insert(other.customer_id.clone());
        self.merged_from.extend(other.merged_from.iter().cloned());
    }

    /// Adds the event aggregates of `other` (a merge, or a contribution).
    pub fn add_aggregates(&mut self, other: &ProfileState) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for (k, t) in &other.traits {
            self.set_trait(k, &t.value, t.at);
        }
        self.sources.extend(other.sources.iter().cloned());
        self.event_count += other.event_count;
        for (k, n) in &other.event_counts {
            *self.event_counts.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.channel_counts {
            *self.channel_counts.entry(k.clone()).or_default() += n;
        }
        self.order_count += other.order_count;
        for (c, a) in &other.revenue {
            *self.revenue.entry(c.clone()).or_default() += a;
        }
        // a profile from an older store has no activity: neither has the sum
        self.activity = match (self.activity.take(), &other.activity) {
            (Some(mut a), Some(b)) => {
                a.add(b);
                Some(a)
            }
            (mine, None) if other.event_count == 0 => mine,
            _ => None,
        };
    }

    /// Lifecycle stage from order history (provisional rules until scoring lands):
    /// no order = prospect, 1 = new_customer, 2–4 = repeat, 5+ = loyal.
    pub fn lifecycle_stage(&self) -> &'static str {
        match self.order_count {
            0 => "prospect",
            1 => "new_customer",
            2..=4 => "repeat",
            _ => "loyal",
        }
    }

    /// `score_components` of the published profile: what the newest applied run
    /// said, and where the full breakdown is.
    fn score_summary(&self) -> Map<String, Value> {
        let Some(s) = &self.scores else {
            return Map::new();
        };
        let mut m = Map::new();
        m.insert("run_id".into(), Value::from(s.run_id.clone()));
        m.insert("rfm_segment".into(), Value::from(s.rfm_segment.clone()));
        m.insert("rfm".into(), Value::from(s.rfm.to_vec()));
        m.insert(
            "top_categories".into(),
            Value::from(s.top_categories.clone()),
        );
        m.insert("top_channels".into(), Value::from(s.top_channels.clone()));
        if let Some(at) = s.incremental_at {
            m.insert("incremental_at".into(), Value::from(at));
        }
        m.insert(
            "details".into(),
            Value::from("crm.v_scores, or socialcrm score explain <type:value>"),
        );
        m
    }

    /// The published form (`crm.profiles`).
    pub fn to_message(&self, version: u64, now: DateTime<Utc>) -> Profile {
        let traits: Map<String, Value> = self
            .traits
            .iter()
            .map(|(k, t)| (k.clone(), t.value.clone()))
            .collect();
        Profile {
            schema_version: SCHEMA_VERSION,
            customer_id: self.customer_id.clone(),
            version,
            identifiers: self.identifiers.iter().cloned().collect(),
            traits,
            channels: self.channel_counts.keys().cloned().collect(),
            sources: self.sources.iter().cloned().collect(),
            event_count: self.event_count,
            event_counts: self.event_counts.to_btree(),
            channel_counts: self.channel_counts.to_btree(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            order_count: self.order_count,
            revenue: self
                .revenue
                .iter()
                .map(|(c, a)| (c.clone(), (a * 100.0).round() / 100.0))
                .collect(),
            engagement_score: self.scores.as_ref().map_or(0.0, |s| s.engagement_score),
            influence_score: self.scores.as_ref().map_or(0.0, |s| s.influence_score),
            lifecycle_stage: self.scores.as_ref().map_or_else(
                || self.lifecycle_stage().to_string(),
                |s| s.lifecycle_stage.clone(),
            ),
            score_components: self.score_summary(),
            merged_from: self.merged_from.iter().cloned().collect(),
            updated_at: now,
            flags: self.flags.iter().cloned().collect(),
        }
    }
}

/// True when the current trait (set at `cur.at`) should be kept over `value` set at `at`.
fn newer_or_equal(cur: &TraitValue, at: DateTime<Utc>, value: &Value) -> bool {
    if cur.at != at {
        return cur.at > at;
    }
    // same instant: deterministic tie-break so order never matters
    let (a, b) = (cur.value.to_string(), value.to_string());
    a >= b
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialcrm_schemas::{Channel, IdType, Revenue};

    fn ev(t: &str, at: &str, traits: Value, revenue: Option<f64>) -> CanonicalEvent {
        CanonicalEvent {
            claimed: Vec::new(),
            schema_version: 1,
            event_id: format!("e-{t}-{at}"),
            source: "web".into(),
            channel: Channel::Web,
            event_type: t.into(),
            name: None,
            occurred_at: at.parse().expect("date"),
            received_at: at.parse().expect("date"),
            identifiers: vec![Identifier::new(IdType::Email, "a@b.co")],
            target: vec![],
            traits: traits.as_object().cloned().unwrap_or_default(),
            properties: Default::default(),
            revenue: revenue.map(|amount| Revenue {
                amount,
                currency: "EUR".into(),
            }),
            context: Default::default(),
        }
    }

    #[test]
    fn aggregates_do_not_depend_on_order() {
        let events = [
            ev("page", "2026-01-01T00:00:00Z", serde_json::json!({}), None),
            ev(
                "identify",
                "2026-01-02T00:00:00Z",
                serde_json::json!({"name": "Old"}),
                None,
            ),
            ev(
                "identify",
                "2026-01-05T00:00:00Z",
                serde_json::json!({"name": "New"}),
                None,
            ),
            ev(
                "order",
                "2026-01-03T00:00:00Z",
                serde_json::json!({}),
                Some(20.0),
            ),
            ev(
                "refund",
                "2026-01-04T00:00:00Z",
                serde_json::json!({}),
                Some(5.0),
            ),
        ];
        let build = |order: &[usize]| {
            let mut p = ProfileState::new("c_1".into(), events[order[0]].occurred_at);
            for i in order {
                p.apply_event(&events[*i]);
            }
            p
        };
        let a = build(&[0, 1, 2, 3, 4]);
        let b = build(&[4, 2, 3, 1, 0]);
        assert_eq!(a, b);
        assert_eq!(a.traits["name"].value, "New");
        assert_eq!(a.revenue["EUR"], 15.0);
        assert_eq!(a.order_count, 1);
        assert_eq!(a.lifecycle_stage(), "new_customer");
        assert_eq!(a.first_seen, events[0].occurred_at);
    }

    #[test]
    fn absorb_is_the_union() {
        let mut a = ProfileState::new("c_a".into(), "2026-01-01T00:00:00Z".parse().expect("d"));
        a.apply_event(&ev(
            "page",
            "2026-01-01T00:00:00Z",
            serde_json::json!({}),
            None,
        ));
        let mut b = ProfileState::new("c_b".into(), "2026-01-02T00:00:00Z".parse().expect("d"));
        b.apply_event(&ev(
            "order",
            "2026-01-02T00:00:00Z",
            serde_json::json!({"plan": "pro"}),
            Some(9.5),
        ));
        a.absorb(&b);
        assert_eq!(a.event_count, 2);
        assert_eq!(a.order_count, 1);
        assert_eq!(a.traits["plan"].value, "pro");
        assert!(a.merged_from.contains("c_b"));
    }
}
