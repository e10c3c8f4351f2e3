//! Between scoring runs: engagement, RFM, lifecycle and top channels of a profile
//! recomputed from its own event summaries (`profile::Activity`) against the
//! distributions of the last run (docs/scoring.md, "Between runs").
//!
//! A run stores an [`IncrementalModel`] (`crm.score_models`): its as-of time, its
//! configuration, and the distributions the percentiles and quintiles were taken
//! over. The pipeline rescores every profile a batch of events touched with it, so
//! a new event moves the profile's scores within seconds. Influence (PageRank,
//! reach, amplification) and category affinities wait for the next run.

use serde::{Deserialize, Serialize};

use super::config::ScoringConfig;
use super::model::{
    decay, lifecycle, rfm_fm, rfm_segment, round3, top_n, CustomerFacts, Ranked, Scored,
};
use crate::profile::{ProfileScores, ProfileState, DECAY_ORIGIN};

const DAY: f64 = 86_400.0;

/// Points kept per distribution: exact up to this many distinct values, beyond
/// that a percentile is interpolated between neighbouring points (error below
/// 100 / `MAX_POINTS` percentile points).
pub const MAX_POINTS: usize = 2048;

/// A distribution of values as sorted points `[value, count < value, count ≤ value]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub n: u64,
    pub points: Vec<[f64; 3]>,
}

impl Dist {
    /// The distribution of `values` (NaN are ignored), at most `max_points` points;
    /// the smallest and largest value are always kept.
    pub fn from_values(values: &[f64], max_points: usize) -> Dist {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Dist::default();
        }
        let max_points = max_points.max(2);
        let mut picks: Vec<f64> = Vec::with_capacity(max_points.min(n));
        let mut distinct = sorted.clone();
        distinct.dedup();
        if distinct.len() <= max_points {
            picks = distinct;
        } else {
            for j in 0..max_points {
                let r = j * (n - 1) / (max_points - 1);
                let v = sorted[r];
                if picks.last() != Some(&v) {
                    picks.push(v);
                }
            }
        }
        let points = picks
            .into_iter()
            .map(|v| {
                let lt = sorted.partition_point(|x| *x < v);
                let le = sorted.partition_point(|x| *x <= v);
                [v, lt as f64, le as f64]
            })
            .collect();
        Dist {
            n: n as u64,
            points,
        }
    }

    /// The kept point `x` is (up to rounding: the pipeline sums decayed counts in
    /// another order than ClickHouse), if any.
    fn at(&self, x: f64) -> Option<&[f64; 3]> {
        let k = self.points.partition_point(|p| p[0] < x);
        [k.checked_sub(1), Some(k)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.points.get(i))
            .filter(|p| same(p[0], x))
            .min_by(|a, b| (a[0] - x).abs().total_cmp(&(b[0] - x).abs()))
    }

    /// Values ≤ `x` (exact at a kept point, interpolated between points).
    pub fn le(&self, x: f64) -> f64 {
        if let Some(p) = self.at(x) {
            return p[2];
        }
        let j = self.points.partition_point(|p| p[0] <= x);
        if j == 0 {
            return 0.0;
        }
        let a = self.points[j - 1];
        if j == self.points.len() {
            return a[2];
        }
        let b = self.points[j];
        a[2] + (b[1] - a[2]) * (x - a[0]) / (b[0] - a[0])
    }

    /// Values < `x`.
    pub fn lt(&self, x: f64) -> f64 {
        match self.at(x) {
            Some(p) => p[1],
            None => self.le(x),
        }
    }

    /// 0–100: the share of values ≤ `x`; 0 for `x` ≤ 0 (as `model::percentiles`).
    pub fn percentile(&self, x: f64) -> f64 {
        if x <= 0.0 || self.n == 0 {
            return 0.0;
        }
        100.0 * self.le(x) / self.n as f64
    }

    /// Quintile 1–5 by mid-rank percentile (as the run's RFM quintiles).
    /// With no values (a run without buyers), 3: where the run puts a value
    /// nobody differs from.
    pub fn quintile(&self, x: f64) -> u8 {
        if self.n == 0 {
            return 3;
        }
        let n = self.n as f64;
        let (lt, le) = (self.lt(x), self.le(x));
        let pct = (lt + (le - lt) / 2.0) / n;
        (1.0 + (5.0 * pct).floor()).clamp(1.0, 5.0) as u8
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9)
}

/// What a run leaves for the incremental update: one row of `crm.score_models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalModel {
    pub run_id: String,
    /// Unix seconds of the run's as-of time.
    pub as_of: i64,
    /// The run's configuration (weights, half-life, window, segment rules).
    pub config: ScoringConfig,
    /// Σ type weight × decayed count, at `as_of`.
    pub interactions: Dist,
    pub frequency: Dist,
    pub monetary: Dist,
    pub engagement_raw: Dist,
    /// Over customers with an order: last order time, orders, monetary value.
    pub buyer_last_order: Dist,
    pub buyer_orders: Dist,
    pub buyer_monetary: Dist,
}

impl IncrementalModel {
    /// The distributions of a run, from the facts and scores it computed.
    pub fn from_run(
        run_id: &str,
        as_of: i64,
        cfg: &ScoringConfig,
        facts: &[CustomerFacts],
        scored: &[Scored],
    ) -> IncrementalModel {
        let col = |g: fn(&Scored) -> f64| -> Vec<f64> { scored.iter().map(g).collect() };
        Self::from_columns(
            run_id,
            as_of,
            cfg,
            facts,
            &col(|s| s.frequency as f64),
            &col(|s| s.monetary),
            &col(|s| s.engagement_raw),
        )
    }

    /// The distributions of a run from its ranking, before its rows are built.
    pub fn from_ranked(
        run_id: &str,
        as_of: i64,
        cfg: &ScoringConfig,
        facts: &[CustomerFacts],
        ranked: &Ranked<'_>,
    ) -> IncrementalModel {
        Self::from_columns(
            run_id,
            as_of,
            cfg,
            facts,
            ranked.frequency(),
            ranked.monetary(),
            ranked.engagement_raw(),
        )
    }

    fn from_columns(
        run_id: &str,
        as_of: i64,
        cfg: &ScoringConfig,
        facts: &[CustomerFacts],
        frequency: &[f64],
        monetary: &[f64],
        engagement_raw: &[f64],
    ) -> IncrementalModel {
        let interactions: Vec<f64> = facts
            .iter()
            .map(|f| {
                f.aggs
                    .iter()
                    .map(|a| cfg.type_weight(&a.event_type) * a.decayed)
                    .sum()
            })
            .collect();
        let buyers: Vec<&CustomerFacts> = facts
            .iter()
            .filter(|f| f.orders > 0 && f.last_order_at.is_some())
            .collect();
        let d = |v: &[f64]| Dist::from_values(v, MAX_POINTS);
        IncrementalModel {
            run_id: run_id.to_string(),
            as_of,
            config: cfg.clone(),
            interactions: d(&interactions),
            frequency: d(frequency),
            monetary: d(monetary),
            engagement_raw: d(engagement_raw),
            buyer_last_order: d(&buyers
                .iter()
                .map(|f| f.last_order_at.unwrap_or(0) as f64)
                .collect::<Vec<_>>()),
            buyer_orders: d(&buyers.iter().map(|f| f.orders as f64).collect::<Vec<_>>()),
            buyer_monetary: d(&buyers
                .iter()
                .map(|f| f.monetary.max(0.0))
                .collect::<Vec<_>>()),
        }
    }

    /// The scores of `p` at unix second `now`: engagement, RFM, lifecycle and top
    /// channels from its own events; influence, categories and the run id from
    /// `prev` (the run's scores, or an earlier update). `None` when the profile
    /// has no event summaries (a store written before them).
    pub fn rescore(
        &self,
        p: &ProfileState,
        prev: Option<&ProfileScores>,
        now: i64,
    ) -> Option<ProfileScores> {
        let a = p.activity.as_ref()?;
        let cfg = &self.config;
        let orders = p.order_count;
        let monetary = p.revenue.values().sum::<f64>().max(0.0);

        // engagement: only when the decayed sums use the run's half-life
        let engagement_score = match a.half_life_days {
            Some(h) if (h - cfg.half_life_days).abs() < 1e-9 => {
                // each type's decayed count at as_of: ranks against the run's
                // values are the ranks now, since everyone decays alike
                let anchor = (self.as_of - DECAY_ORIGIN) as f64 / (h * DAY);
                let interactions: f64 = a
                    .decayed
                    .iter()
                    .map(|(t, l)| cfg.type_weight(t) * (l - anchor).exp2())
                    .sum();
                let last = a.channel_last.values().copied().max();
                let recency = last
                    .map(|l| 100.0 * decay((now - l) as f64, cfg.half_life_days))
                    .unwrap_or(0.0);
                let window_from = now - cfg.window_days as i64 * 86_400;
                let frequency = a.events_since(window_from) as f64;
                let channels = a
                    .channel_last
                    .values()
                    .filter(|t| **t >= window_from)
                    .count();
                let dispersion = 100.0
                    * (channels.min(cfg.dispersion_full_channels as usize)) as f64
                    / cfg.dispersion_full_channels as f64;
                let em = &cfg.engagement_mix;
                let raw = em.interactions * self.interactions.percentile(interactions)
                    + em.recency * recency
                    + em.frequency * self.frequency.percentile(frequency)
                    + em.monetary * self.monetary.percentile(monetary)
                    + em.dispersion * dispersion;
                round3(self.engagement_raw.percentile(raw))
            }
            _ => prev.map_or(0.0, |s| s.engagement_score),
        };

        let (r, f, m) = match a.last_order_at {
            Some(last) if orders > 0 => (
                self.buyer_last_order.quintile(last as f64),
                self.buyer_orders.quintile(orders as f64),
                self.buyer_monetary.quintile(monetary),
            ),
            _ => (0, 0, 0),
        };
        let facts = CustomerFacts {
            orders,
            first_order_at: a.first_order_at,
            last_order_at: a.last_order_at,
            ..CustomerFacts::default()
        };
        let (stage, _) = lifecycle(&facts, now, cfg);
        let top_channels = top_n(
            p.channel_counts
                .iter()
                .map(|(c, n)| (c.clone(), *n as f64))
                .collect(),
            cfg.top_affinities,
        );
        Some(ProfileScores {
            run_id: prev.map_or_else(|| self.run_id.clone(), |s| s.run_id.clone()),
            engagement_score,
            influence_score: prev.map_or(0.0, |s| s.influence_score),
            lifecycle_stage: stage,
            rfm_segment: rfm_segment(cfg, r, rfm_fm(r, f, m)),
            rfm: [r, f, m],
            top_categories: prev.map(|s| s.top_categories.clone()).unwrap_or_default(),
            top_channels,
            incremental_at: Some(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use proptest::prelude::*;
    use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier, Revenue};

    use super::super::model::score_all;
    use super::super::tests::fold_event;
    use super::*;

    /// 00:00 UTC, so the window's start falls on a day boundary (the profile keeps
    /// events per day).
    const AS_OF: i64 = 20_833 * 86_400;
    const TYPES: [(&str, Channel); 7] = [
        ("page", Channel::Web),
        ("track", Channel::Web),
        ("order", Channel::Shop),
        ("refund", Channel::Shop),
        ("mention", Channel::Social),
        ("like", Channel::Social),
        ("message", Channel::Support),
    ];

    /// (customer, type index, seconds before AS_OF, revenue cents)
    type Ev = (u8, u8, u32, u16);

    fn event(i: usize, e: &Ev) -> CanonicalEvent {
        let (t, ch) = TYPES[e.1 as usize % TYPES.len()];
        let at = chrono::Utc
            .timestamp_opt(AS_OF - e.2 as i64, 0)
            .single()
            .expect("time");
        CanonicalEvent {
            claimed: Vec::new(),
            schema_version: 1,
            event_id: format!("e{i}"),
            source: "test".into(),
            channel: ch,
            event_type: t.into(),
            name: None,
            occurred_at: at,
            received_at: at,
            identifiers: vec![Identifier::new(IdType::UserId, format!("u{}", e.0))],
            target: vec![],
            traits: Default::default(),
            properties: Default::default(),
            revenue: matches!(t, "order" | "refund").then(|| Revenue {
                amount: e.3 as f64 / 100.0,
                currency: "EUR".into(),
            }),
            context: Default::default(),
        }
    }

    /// The profiles the pipeline would hold, and the facts the scoring job's SQL
    /// would read, for the same events.
    fn world(events: &[Ev], cfg: &ScoringConfig) -> (Vec<ProfileState>, Vec<CustomerFacts>) {
        let mut profiles: BTreeMap<u8, ProfileState> = BTreeMap::new();
        let mut facts: BTreeMap<u8, CustomerFacts> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let ev = event(i, e);
            profiles
                .entry(e.0)
                .or_insert_with(|| ProfileState::new(format!("c{}", e.0), ev.occurred_at))
                .apply_event(&ev);
            let f = facts.entry(e.0).or_insert_with(|| CustomerFacts {
                customer_id: format!("c{}", e.0),
                ..Default::default()
            });
            let at = ev.occurred_at.timestamp();
            let (t, ch) = (ev.event_type.as_str(), ev.channel.as_str());
            let rev = ev.revenue.as_ref().map_or(0.0, |r| r.amount);
            fold_event(f, t, ch, at, rev, AS_OF, cfg);
            if t == "refund" {
                f.monetary -= rev.abs();
            }
        }
        (
            profiles.into_values().collect(),
            facts.into_values().collect(),
        )
    }

    fn run_scores(s: &Scored) -> ProfileScores {
        ProfileScores {
            run_id: "r1".into(),
            engagement_score: s.engagement_score,
            influence_score: s.influence_score,
            lifecycle_stage: s.lifecycle_stage.clone(),
            rfm_segment: s.rfm_segment.clone(),
            rfm: [s.rfm_r, s.rfm_f, s.rfm_m],
            top_categories: s.top_categories.clone(),
            top_channels: s.top_channels.clone(),
            incremental_at: None,
        }
    }

    fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
        // up to 400 days back: older than the window and than a few half-lives
        prop::collection::vec((0u8..40, 0u8..7, 0u32..400 * 86_400, 1u16..50_000), 1..300)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// With no event since the run, the incremental update gives back what the
        /// run computed: same formulas, same facts (kept another way).
        #[test]
        fn at_the_runs_time_the_update_agrees_with_the_run(events in arb_events()) {
            let cfg = ScoringConfig::default();
            let (profiles, facts) = world(&events, &cfg);
            let scored = score_all(&facts, AS_OF, &cfg);
            let model = IncrementalModel::from_run("r1", AS_OF, &cfg, &facts, &scored);
            for (p, s) in profiles.iter().zip(&scored) {
                prop_assert_eq!(&p.customer_id, &s.customer_id);
                let prev = run_scores(s);
                let got = model.rescore(p, Some(&prev), AS_OF).expect("activity");
                prop_assert!((got.engagement_score - s.engagement_score).abs() < 1e-6,
                    "{}: engagement {} vs run {}", s.customer_id, got.engagement_score, s.engagement_score);
                prop_assert_eq!(got.rfm, prev.rfm, "{}", s.customer_id);
                prop_assert_eq!(&got.rfm_segment, &prev.rfm_segment);
                prop_assert_eq!(&got.lifecycle_stage, &prev.lifecycle_stage);
                prop_assert_eq!(&got.top_channels, &prev.top_channels);
                prop_assert_eq!(got.influence_score, prev.influence_score);
                prop_assert_eq!(got.incremental_at, Some(AS_OF));
            }
        }

        /// A new interaction never lowers engagement; a new order makes R the top
        /// quintile and counts in the lifecycle.
        #[test]
        fn new_events_move_the_scores_up(events in arb_events(), who in 0u8..40, t in 0u8..7) {
            let cfg = ScoringConfig::default();
            let (profiles, facts) = world(&events, &cfg);
            let scored = score_all(&facts, AS_OF, &cfg);
            let model = IncrementalModel::from_run("r1", AS_OF, &cfg, &facts, &scored);
            let Some(i) = profiles.iter().position(|p| p.customer_id == format!("c{who}")) else {
                return Ok(());
            };
            let now = AS_OF + 3_600;
            let before = model.rescore(&profiles[i], None, now).expect("activity");
            let mut p = profiles[i].clone();
            let kind = TYPES[t as usize].0;
            if kind == "refund" {
                return Ok(());
            }
            p.apply_event(&event(9_999, &(who, t, 0, 1_000)).clone_at(now));
            let after = model.rescore(&p, None, now).expect("activity");
            prop_assert!(after.engagement_score >= before.engagement_score,
                "{kind}: {} < {}", after.engagement_score, before.engagement_score);
            if kind == "order" {
                let top = if model.buyer_last_order.n > 0 { 5 } else { 3 };
                prop_assert_eq!(after.rfm[0], top);
                prop_assert_ne!(&after.lifecycle_stage, "prospect");
            }
        }
    }

    trait At {
        fn clone_at(self, unix: i64) -> CanonicalEvent;
    }
    impl At for CanonicalEvent {
        fn clone_at(mut self, unix: i64) -> CanonicalEvent {
            let at = chrono::Utc.timestamp_opt(unix, 0).single().expect("time");
            self.occurred_at = at;
            self.received_at = at;
            self
        }
    }

    #[test]
    fn distributions_by_hand() {
        let d = Dist::from_values(&[1.0, 2.0, 2.0, 3.0, 10.0], 100);
        assert_eq!(d.n, 5);
        assert_eq!(d.le(2.0), 3.0);
        assert_eq!(d.lt(2.0), 1.0);
        assert_eq!(d.le(0.5), 0.0);
        assert_eq!(d.le(11.0), 5.0);
        // between 3 (≤: 4) and 10 (<: 4): nothing in between
        assert_eq!(d.le(5.0), 4.0);
        assert_eq!(d.percentile(2.0), 60.0);
        assert_eq!(d.percentile(0.0), 0.0);
        // mid-rank: (1 + 2/2) / 5 = 0.4 → quintile 3
        assert_eq!(d.quintile(2.0), 3);
        assert_eq!(d.quintile(10.0), 5);
        assert_eq!(d.quintile(1.0), 1);

        // more distinct values than points: interpolated, within one point's share
        let v: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let d = Dist::from_values(&v, 101);
        assert!(d.points.len() <= 101);
        for x in [17.0, 2_500.5, 7_777.0, 9_999.0] {
            let exact = v.iter().filter(|y| **y <= x).count() as f64;
            assert!(
                (d.le(x) - exact).abs() <= 100.0,
                "{x}: {} vs {exact}",
                d.le(x)
            );
        }
        assert_eq!(d.le(9_999.0), 10_000.0);
        assert_eq!(Dist::from_values(&[], 10).percentile(3.0), 0.0);
    }

    #[test]
    fn a_changed_half_life_keeps_the_runs_engagement() {
        let cfg = ScoringConfig::default();
        let events: Vec<Ev> = (0..20)
            .map(|i| (i % 4, i % 7, i as u32 * 86_400, 500))
            .collect();
        let (profiles, facts) = world(&events, &cfg);
        let scored = score_all(&facts, AS_OF, &cfg);
        let mut other = cfg.clone();
        other.half_life_days = 7.0;
        let model = IncrementalModel::from_run("r1", AS_OF, &other, &facts, &scored);
        let prev = ProfileScores {
            engagement_score: 42.0,
            ..run_scores(&scored[0])
        };
        let got = model
            .rescore(&profiles[0], Some(&prev), AS_OF)
            .expect("activity");
        assert_eq!(got.engagement_score, 42.0);
    }

    #[test]
    fn merged_activity_is_the_union() {
        let cfg = ScoringConfig::default();
        let events: Vec<Ev> = (0..30)
            .map(|i| (i % 2, i % 7, i as u32 * 40_000, 700))
            .collect();
        let (profiles, _) = world(&events, &cfg);
        let both: Vec<Ev> = events.iter().map(|e| (0, e.1, e.2, e.3)).collect();
        let (union, _) = world(&both, &cfg);
        let mut a = profiles[0].clone();
        a.absorb(&profiles[1]);
        let (x, y) = (
            a.activity.as_ref().expect("a"),
            union[0].activity.as_ref().expect("u"),
        );
        assert_eq!(x.days, y.days);
        assert_eq!(x.channel_last, y.channel_last);
        assert_eq!(
            (x.first_order_at, x.last_order_at),
            (y.first_order_at, y.last_order_at)
        );
        for (t, l) in &y.decayed {
            assert!((x.decayed[t] - l).abs() < 1e-9, "{t}");
        }
    }
}
