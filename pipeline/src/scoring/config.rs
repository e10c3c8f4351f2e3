//! `[scoring]`: weights, half-lives and segment rules (docs/scoring.md explains
//! every default). A change takes effect on the next `socialcrm score run`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[scoring]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Half-life of an interaction's weight in the engagement score.
    #[serde(default = "default_half_life_days")]
    pub half_life_days: f64,
    /// Window for frequency and channel dispersion.
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Channels in the window that give the full dispersion component.
    #[serde(default = "default_dispersion_channels")]
    pub dispersion_full_channels: u32,
    /// Engagement weight of each event type; types not listed weigh `default_weight`.
    #[serde(default = "default_type_weights")]
    pub type_weights: BTreeMap<String, f64>,
    /// Weight of event types missing from `type_weights`.
    #[serde(default = "default_weight")]
    pub default_weight: f64,
    /// How much each component counts in the engagement score.
    #[serde(default)]
    pub engagement_mix: EngagementMix,
    /// How much each interaction type that *others* direct at a customer counts in
    /// amplification and as an edge weight of the interaction graph.
    #[serde(default = "default_amplification_weights")]
    pub amplification_weights: BTreeMap<String, f64>,
    /// How much each component counts in the influence score.
    #[serde(default)]
    pub influence_mix: InfluenceMix,
    /// Factor applied to each further network's reach (largest first): 1, f, f², ...
    #[serde(default = "default_reach_decay")]
    pub reach_network_decay: f64,
    /// PageRank damping.
    #[serde(default = "default_damping")]
    pub pagerank_damping: f64,
    /// PageRank stops when the L1 change of an iteration is below this.
    #[serde(default = "default_tolerance")]
    pub pagerank_tolerance: f64,
    #[serde(default = "default_max_iter")]
    pub pagerank_max_iterations: u32,
    /// RFM segments: the first rule whose ranges hold names the segment.
    #[serde(default = "default_rfm_segments")]
    pub rfm_segments: Vec<RfmRule>,
    #[serde(default)]
    pub lifecycle: LifecycleRules,
    /// Product categories and channels kept as affinities.
    #[serde(default = "default_top_n")]
    pub top_affinities: usize,
    /// Event types whose products count for category affinity, with weights.
    #[serde(default = "default_affinity_weights")]
    pub affinity_weights: BTreeMap<String, f64>,
    /// Rows written per ClickHouse insert by the scoring job.
    #[serde(default = "default_insert_batch")]
    pub insert_batch: usize,
    /// The pipeline runs the scoring job this often (0 = never; then run
    /// `socialcrm score run` from cron). The first run is one interval after start.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// How often the pipeline looks for a newly completed run to apply to profiles.
    #[serde(default = "default_apply_poll_secs")]
    pub apply_poll_secs: u64,
}

/// Engagement components' weights (they need not sum to 1; the score is a percentile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagementMix {
    #[serde(default = "w_interactions")]
    pub interactions: f64,
    #[serde(default = "w_recency")]
    pub recency: f64,
    #[serde(default = "w_frequency")]
    pub frequency: f64,
    #[serde(default = "w_monetary")]
    pub monetary: f64,
    #[serde(default = "w_dispersion")]
    pub dispersion: f64,
}

/// Influence components' weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluenceMix {
    #[serde(default = "w_reach")]
    pub reach: f64,
    #[serde(default = "w_amplification")]
    pub amplification: f64,
    #[serde(default = "w_centrality")]
    pub centrality: f64,
}

/// One RFM segment rule: inclusive quintile ranges of recency and of the
/// frequency/monetary average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmRule {
    pub name: String,
    /// `[min, max]` of R (5 = most recent).
    pub r: [u8; 2],
    /// `[min, max]` of FM = round((F + M) / 2).
    pub fm: [u8; 2],
}

/// Lifecycle stage thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRules {
    /// Orders from which a customer is `loyal` (2 up to this − 1: `repeat`).
    #[serde(default = "default_loyal_orders")]
    pub loyal_min_orders: u64,
    /// Purchase cadence assumed for customers with a single order.
    #[serde(default = "default_cadence_days")]
    pub default_cadence_days: f64,
    /// `at_risk` once the time since the last order exceeds this × the cadence.
    #[serde(default = "default_at_risk")]
    pub at_risk_factor: f64,
    /// `churned` once the time since the last order exceeds this × the cadence.
    #[serde(default = "default_churned")]
    pub churned_factor: f64,
    /// Shortest cadence used (a burst of orders on one day must not make a
    /// customer at risk the next week).
    #[serde(default = "default_min_cadence_days")]
    pub min_cadence_days: f64,
}

fn default_half_life_days() -> f64 {
    30.0
}
fn default_window_days() -> u32 {
    90
}
fn default_dispersion_channels() -> u32 {
    4
}
fn default_weight() -> f64 {
    1.0
}
fn default_type_weights() -> BTreeMap<String, f64> {
    [
        ("page", 1.0),
        ("screen", 1.0),
        ("track", 2.0),
        ("identify", 0.5),
        ("group", 0.5),
        ("alias", 0.0),
        ("post", 4.0),
        ("mention", 4.0),
        ("reply", 5.0),
        ("quote", 5.0),
        ("reshare", 4.0),
        ("like", 1.0),
        ("follow", 3.0),
        ("message", 4.0),
        ("order", 10.0),
        ("refund", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
fn default_amplification_weights() -> BTreeMap<String, f64> {
    [
        ("reply", 3.0),
        ("quote", 3.0),
        ("reshare", 4.0),
        ("like", 1.0),
        ("mention", 2.0),
        ("follow", 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
fn default_affinity_weights() -> BTreeMap<String, f64> {
    [("order", 3.0), ("track", 1.0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}
fn default_reach_decay() -> f64 {
    0.5
}
fn default_damping() -> f64 {
    0.85
}
fn default_tolerance() -> f64 {
    1e-6
}
fn default_max_iter() -> u32 {
    200
}
fn default_top_n() -> usize {
    3
}
fn default_insert_batch() -> usize {
    50_000
}
fn default_interval_secs() -> u64 {
    3600
}
fn default_apply_poll_secs() -> u64 {
    10
}
fn w_interactions() -> f64 {
    0.5
}
fn w_recency() -> f64 {
    0.15
}
fn w_frequency() -> f64 {
    0.15
}
fn w_monetary() -> f64 {
    0.1
}
fn w_dispersion() -> f64 {
    0.1
}
fn w_reach() -> f64 {
    0.4
}
fn w_amplification() -> f64 {
    0.35
}
fn w_centrality() -> f64 {
    0.25
}
fn default_loyal_orders() -> u64 {
    4
}
fn default_cadence_days() -> f64 {
    90.0
}
fn default_at_risk() -> f64 {
    1.5
}
fn default_churned() -> f64 {
    3.0
}
fn default_min_cadence_days() -> f64 {
    7.0
}

fn rule(name: &str, r: [u8; 2], fm: [u8; 2]) -> RfmRule {
    RfmRule {
        name: name.into(),
        r,
        fm,
    }
}

/// The default RFM grid, checked in this order (first match wins).
pub fn default_rfm_segments() -> Vec<RfmRule> {
    vec![
        rule("champions", [5, 5], [4, 5]),
        rule("champions", [4, 4], [5, 5]),
        rule("loyal", [3, 5], [3, 5]),
        rule("new", [5, 5], [1, 1]),
        rule("potential_loyalist", [4, 5], [2, 3]),
        rule("promising", [4, 4], [1, 1]),
        rule("cant_lose", [1, 1], [4, 5]),
        rule("at_risk", [1, 2], [3, 5]),
        rule("needs_attention", [3, 3], [2, 2]),
        rule("about_to_sleep", [3, 3], [1, 1]),
        rule("hibernating", [2, 2], [1, 2]),
        rule("lost", [1, 1], [1, 2]),
    ]
}

impl Default for EngagementMix {
    fn default() -> Self {
        EngagementMix {
            interactions: w_interactions(),
            recency: w_recency(),
            frequency: w_frequency(),
            monetary: w_monetary(),
            dispersion: w_dispersion(),
        }
    }
}

impl Default for InfluenceMix {
    fn default() -> Self {
        InfluenceMix {
            reach: w_reach(),
            amplification: w_amplification(),
            centrality: w_centrality(),
        }
    }
}

impl Default for LifecycleRules {
    fn default() -> Self {
        LifecycleRules {
            loyal_min_orders: default_loyal_orders(),
            default_cadence_days: default_cadence_days(),
            at_risk_factor: default_at_risk(),
            churned_factor: default_churned(),
            min_cadence_days: default_min_cadence_days(),
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            half_life_days: default_half_life_days(),
            window_days: default_window_days(),
            dispersion_full_channels: default_dispersion_channels(),
            type_weights: default_type_weights(),
            default_weight: default_weight(),
            engagement_mix: EngagementMix::default(),
            amplification_weights: default_amplification_weights(),
            influence_mix: InfluenceMix::default(),
            reach_network_decay: default_reach_decay(),
            pagerank_damping: default_damping(),
            pagerank_tolerance: default_tolerance(),
            pagerank_max_iterations: default_max_iter(),
            rfm_segments: default_rfm_segments(),
            lifecycle: LifecycleRules::default(),
            top_affinities: default_top_n(),
            affinity_weights: default_affinity_weights(),
            insert_batch: default_insert_batch(),
            interval_secs: default_interval_secs(),
            apply_poll_secs: default_apply_poll_secs(),
        }
    }
}

impl ScoringConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |v: f64, f: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("scoring.{f} must be a positive number"))
            }
        };
        let nonneg = |v: f64, f: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("scoring.{f} must be a number ≥ 0"))
            }
        };
        pos(self.half_life_days, "half_life_days")?;
        if self.window_days == 0 || self.window_days > crate::profile::ACTIVITY_DAYS {
            return Err(format!(
                "scoring.window_days must be 1 to {} (the days of activity profiles keep)",
                crate::profile::ACTIVITY_DAYS
            ));
        }
        if self.dispersion_full_channels == 0 {
            return Err("scoring.dispersion_full_channels must be at least 1".into());
        }
        for (k, v) in &self.type_weights {
            nonneg(*v, &format!("type_weights.{k}"))?;
        }
        nonneg(self.default_weight, "default_weight")?;
        for (k, v) in &self.amplification_weights {
            nonneg(*v, &format!("amplification_weights.{k}"))?;
        }
        for (k, v) in &self.affinity_weights {
            nonneg(*v, &format!("affinity_weights.{k}"))?;
        }
        let m = &self.engagement_mix;
        for (v, f) in [
            (m.interactions, "interactions"),
            (m.recency, "recency"),
            (m.frequency, "frequency"),
            (m.monetary, "monetary"),
            (m.dispersion, "dispersion"),
        ] {
            nonneg(v, &format!("engagement_mix.{f}"))?;
        }
        let i = &self.influence_mix;
        for (v, f) in [
            (i.reach, "reach"),
            (i.amplification, "amplification"),
            (i.centrality, "centrality"),
        ] {
            nonneg(v, &format!("influence_mix.{f}"))?;
        }
        if !(0.0..=1.0).contains(&self.reach_network_decay) {
            return Err("scoring.reach_network_decay must be within 0..=1".into());
        }
        if !(self.pagerank_damping > 0.0 && self.pagerank_damping < 1.0) {
            return Err("scoring.pagerank_damping must be within (0, 1)".into());
        }
        pos(self.pagerank_tolerance, "pagerank_tolerance")?;
        if self.pagerank_max_iterations == 0 {
            return Err("scoring.pagerank_max_iterations must be at least 1".into());
        }
        for (n, r) in self.rfm_segments.iter().enumerate() {
            let ok =
                |a: [u8; 2]| (1..=5).contains(&a[0]) && (1..=5).contains(&a[1]) && a[0] <= a[1];
            if r.name.trim().is_empty() || !ok(r.r) || !ok(r.fm) {
                return Err(format!(
                    "scoring.rfm_segments[{n}]: needs a name and ranges [min, max] within 1..=5"
                ));
            }
        }
        let l = &self.lifecycle;
        if l.loyal_min_orders < 2 {
            return Err("scoring.lifecycle.loyal_min_orders must be at least 2".into());
        }
        pos(l.default_cadence_days, "lifecycle.default_cadence_days")?;
        pos(l.min_cadence_days, "lifecycle.min_cadence_days")?;
        pos(l.at_risk_factor, "lifecycle.at_risk_factor")?;
        if l.churned_factor <= l.at_risk_factor {
            return Err(
                "scoring.lifecycle.churned_factor must be greater than at_risk_factor".into(),
            );
        }
        if self.apply_poll_secs == 0 {
            return Err("scoring.apply_poll_secs must be at least 1".into());
        }
        if self.insert_batch == 0 {
            return Err("scoring.insert_batch must be at least 1".into());
        }
        Ok(())
    }

    pub fn type_weight(&self, t: &str) -> f64 {
        self.type_weights
            .get(t)
            .copied()
            .unwrap_or(self.default_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        assert!(ScoringConfig::default().validate().is_ok());
        let c = ScoringConfig {
            half_life_days: 0.0,
            ..ScoringConfig::default()
        };
        assert!(c
            .validate()
            .expect_err("invalid")
            .contains("half_life_days"));
        let mut c = ScoringConfig::default();
        c.rfm_segments[0].r = [6, 2];
        assert!(c
            .validate()
            .expect_err("invalid")
            .contains("rfm_segments[0]"));
        let mut c = ScoringConfig::default();
        c.lifecycle.churned_factor = 1.0;
        assert!(c
            .validate()
            .expect_err("invalid")
            .contains("churned_factor"));
    }

    #[test]
    fn every_rfm_cell_has_a_segment() {
        let rules = default_rfm_segments();
        for r in 1..=5u8 {
            for fm in 1..=5u8 {
                assert!(
                    rules.iter().any(
                        |x| (x.r[0]..=x.r[1]).contains(&r) && (x.fm[0]..=x.fm[1]).contains(&fm)
                    ),
                    "R{r} FM{fm}"
                );
            }
        }
    }
}
