//! Profile aggregates: what the pipeline knows about one customer, updated event by
//! event and combined on merges. Every update is commutative (sums, sets, min/max,
//! newest-trait-wins by event time), so the result does not depend on event order.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use socialcrm_schemas::messages::Profile;
use socialcrm_schemas::{CanonicalEvent, Identifier, SCHEMA_VERSION};

/// One trait value with the event time that set it (newest wins; ties by value text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    pub value: Value,
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
}

/// Persistent state of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub customer_id: String,
    /// Earliest event time seen: decides which profile survives a merge (oldest wins).
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub identifiers: BTreeSet<Identifier>,
    pub traits: BTreeMap<String, TraitValue>,
    pub sources: BTreeSet<String>,
    pub event_count: u64,
    pub event_counts: BTreeMap<String, u64>,
    pub channel_counts: BTreeMap<String, u64>,
    pub order_count: u64,
    pub revenue: BTreeMap<String, f64>,
    /// Retired customer ids absorbed by this profile.
    pub merged_from: BTreeSet<String>,
    /// Set when this profile was merged into another.
    pub merged_into: Option<String>,
    /// Scores of the newest applied scoring run (absent in stores written before scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<ProfileScores>,
    /// Linking events per day (days since 1970-01-01): the daily link cap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub link_days: BTreeMap<u32, u32>,
    /// Rules that refused links to this profile and ask for a human look
    /// (`profile_size_cap`, `link_rate`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub flags: BTreeSet<String>,
    /// Some link in this profile's cluster was refused: new links re-resolve the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflicted: bool,
    /// The one primary identifier all of this profile's events have, if there is
    /// only one: its contribution is the profile's aggregates and is not kept
    /// separately (docs/identity.md §1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sole_primary: Option<String>,
}

impl ProfileState {
    pub fn new(customer_id: String, at: DateTime<Utc>) -> Self {
        ProfileState {
            customer_id,
            first_seen: at,
            last_seen: at,
            identifiers: BTreeSet::new(),
            traits: BTreeMap::new(),
            sources: BTreeSet::new(),
            event_count: 0,
            event_counts: BTreeMap::new(),
            channel_counts: BTreeMap::new(),
            order_count: 0,
            revenue: BTreeMap::new(),
            merged_from: BTreeSet::new(),
            merged_into: None,
            scores: None,
            link_days: BTreeMap::new(),
            flags: BTreeSet::new(),
            conflicted: false,
            sole_primary: None,
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
    }

    pub fn is_active(&self) -> bool {
        self.merged_into.is_none()
    }

    /// Counts one (new, never seen) event.
    pub fn apply_event(&mut self, ev: &CanonicalEvent) {
        self.first_seen = self.first_seen.min(ev.occurred_at);
        self.last_seen = self.last_seen.max(ev.occurred_at);
        self.event_count += 1;
        *self.event_counts.entry(ev.event_type.clone()).or_default() += 1;
        *self
            .channel_counts
            .entry(ev.channel.as_str().to_string())
            .or_default() += 1;
        if !self.sources.contains(&ev.source) {
            self.sources.insert(ev.source.clone());
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
            event_counts: self.event_counts.clone(),
            channel_counts: self.channel_counts.clone(),
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
