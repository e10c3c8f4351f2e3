//! The score formulas (docs/scoring.md), as pure functions over per-customer
//! facts: engagement, influence, RFM, lifecycle and affinities. The scoring job
//! reads the facts from ClickHouse; tests build them by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::ScoringConfig;

const DAY: f64 = 86_400.0;

/// Events of one type on one channel for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeAgg {
    /// Shared: a run holds millions of these with a few distinct names.
    pub event_type: Arc<str>,
    pub channel: Arc<str>,
    pub count: u64,
    /// Σ 2^(−age/half-life) over the events (age at the scoring time).
    pub decayed: f64,
    /// Events within the window (`window_days`).
    pub in_window: u64,
    /// Unix seconds of the newest event.
    pub last_at: i64,
}

/// Everything the formulas need about one customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerFacts {
    pub customer_id: String,
    pub aggs: Vec<TypeAgg>,
    pub orders: u64,
    pub first_order_at: Option<i64>,
    pub last_order_at: Option<i64>,
    /// Order revenue minus refunds (reporting currency).
    pub monetary: f64,
    /// Latest follower count per network.
    pub followers: Vec<(String, f64)>,
    /// Weighted product-category counts.
    pub categories: Vec<(String, f64)>,
    /// Σ amplification weight of interactions others directed at this customer, per network.
    pub amplification: Vec<(String, f64)>,
    /// PageRank in the interaction graph (None: not in the graph).
    pub pagerank: Option<f64>,
}

/// The decay factor of an event `age_secs` old.
pub fn decay(age_secs: f64, half_life_days: f64) -> f64 {
    (-(age_secs.max(0.0)) / (half_life_days * DAY)).exp2()
}

/// Scores of one customer, with the components that explain them; also one row
/// of `crm.scores` (the job fills `run_id` and `scored_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Scored {
    pub customer_id: String,
    pub run_id: String,
    /// Unix seconds of the run's as-of time.
    pub scored_at: u32,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub engagement_raw: f64,
    pub influence_raw: f64,
    pub recency_days: f64,
    pub frequency: u64,
    pub monetary: f64,
    pub channels_in_window: u32,
    pub reach: f64,
    pub amplification: f64,
    pub pagerank: f64,
    pub rfm_r: u8,
    pub rfm_f: u8,
    pub rfm_m: u8,
    pub rfm_segment: String,
    pub lifecycle_stage: String,
    pub top_categories: Vec<String>,
    pub top_channels: Vec<String>,
    pub networks: Vec<String>,
    pub network_followers: Vec<f64>,
    pub network_amplification: Vec<f64>,
    /// The components as JSON text (encoded per customer so a million customers
    /// never hold a million JSON trees at once).
    pub components: String,
}

/// Maps each value to 0–100: the share of all values ≤ it; 0 stays 0.
pub fn percentiles(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    values
        .iter()
        .map(|&x| {
            if x <= 0.0 {
                0.0
            } else {
                let le = sorted.partition_point(|v| *v <= x);
                100.0 * le as f64 / n as f64
            }
        })
        .collect()
}

/// Quintile 1–5 of each value among `values` (higher value, higher quintile), by
/// mid-rank percentile: (values below + half the values equal) ÷ n, so ties share
/// a quintile and a value nobody differs from sits in the middle (3).
fn quintiles(values: &[f64]) -> Vec<u8> {
    let n = values.len().max(1) as f64;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    values
        .iter()
        .map(|&x| {
            let below = sorted.partition_point(|v| *v < x);
            let le = sorted.partition_point(|v| *v <= x);
            let pct = (below as f64 + (le - below) as f64 / 2.0) / n;
            (1.0 + (5.0 * pct).floor()).min(5.0) as u8
        })
        .collect()
}

/// Reach: log10(1 + followers) per network, largest first, each further network
/// counted with a factor `decay`^i (diminishing returns).
pub fn reach(followers: &[(String, f64)], decay: f64) -> f64 {
    let mut r: Vec<f64> = followers
        .iter()
        .map(|(_, f)| (1.0 + f.max(0.0)).log10())
        .collect();
    r.sort_by(|a, b| b.total_cmp(a));
    r.iter()
        .enumerate()
        .map(|(i, x)| x * decay.powi(i as i32))
        .sum()
}

/// Lifecycle stage and the facts that decided it.
pub fn lifecycle(f: &CustomerFacts, now: i64, cfg: &ScoringConfig) -> (String, Value) {
    let l = &cfg.lifecycle;
    let (Some(first), Some(last)) = (f.first_order_at, f.last_order_at) else {
        return ("prospect".into(), json!({"rule": "no orders"}));
    };
    if f.orders == 0 {
        return ("prospect".into(), json!({"rule": "no orders"}));
    }
    let cadence = if f.orders >= 2 {
        (((last - first) as f64 / DAY) / (f.orders - 1) as f64).max(l.min_cadence_days)
    } else {
        l.default_cadence_days
    };
    let since = ((now - last) as f64 / DAY).max(0.0);
    let (stage, rule) = if since > l.churned_factor * cadence {
        (
            "churned",
            format!(
                "{since:.1} days since the last order > {} × cadence {cadence:.1} days",
                l.churned_factor
            ),
        )
    } else if since > l.at_risk_factor * cadence {
        (
            "at_risk",
            format!(
                "{since:.1} days since the last order > {} × cadence {cadence:.1} days",
                l.at_risk_factor
            ),
        )
    } else if f.orders >= l.loyal_min_orders {
        (
            "loyal",
            format!("{} orders ≥ {}", f.orders, l.loyal_min_orders),
        )
    } else if f.orders >= 2 {
        ("repeat", format!("{} orders", f.orders))
    } else {
        ("new_customer", "1 order".to_string())
    };
    (
        stage.into(),
        json!({
            "orders": f.orders,
            "cadence_days": round3(cadence),
            "cadence_from": if f.orders >= 2 { "own orders" } else { "default_cadence_days" },
            "days_since_last_order": round3(since),
            "rule": rule,
        }),
    )
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The RFM segment of R and FM (`""` for R = 0: no orders).
pub fn rfm_segment(cfg: &ScoringConfig, r: u8, fm: u8) -> String {
    if r == 0 {
        return String::new();
    }
    cfg.rfm_segments
        .iter()
        .find(|s| (s.r[0]..=s.r[1]).contains(&r) && (s.fm[0]..=s.fm[1]).contains(&fm))
        .map(|s| s.name.clone())
        .unwrap_or_else(|| "unclassified".into())
}

/// FM = ⌈(F + M) / 2⌉ (0 when R is 0).
pub fn rfm_fm(r: u8, f: u8, m: u8) -> u8 {
    if r == 0 {
        0
    } else {
        (f as u32 + m as u32).div_ceil(2) as u8
    }
}

pub(crate) fn top_n(mut items: Vec<(String, f64)>, n: usize) -> Vec<String> {
    items.retain(|(_, w)| *w > 0.0);
    items.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    items.into_iter().take(n).map(|(k, _)| k).collect()
}

// The components of one customer as `crm.scores.components` holds them
// (docs/scoring.md, "Reading the components"). Fields are in alphabetical order,
// the order a JSON tree (serde_json's sorted map) writes them in: the text is the
// same as before these types existed (scoring::tests, components golden file).
#[derive(Serialize)]
struct Components<'a> {
    as_of: i64,
    engagement: Engagement<'a>,
    influence: Influence<'a>,
    lifecycle: LifecyclePart<'a>,
    rfm: Rfm<'a>,
}

#[derive(Serialize)]
struct Engagement<'a> {
    dispersion: Dispersion,
    frequency: Frequency,
    interactions: Interactions<'a>,
    monetary: Monetary,
    raw: f64,
    recency: Recency,
    score: f64,
}

#[derive(Serialize)]
struct Dispersion {
    channels_in_window: u32,
    contribution: f64,
    full_at: u32,
    score: f64,
    weight: f64,
}

#[derive(Serialize)]
struct Frequency {
    contribution: f64,
    events_in_window: f64,
    percentile: f64,
    weight: f64,
    window_days: u32,
}

#[derive(Serialize)]
struct Interactions<'a> {
    by_type: BTreeMap<&'a str, ByType>,
    contribution: f64,
    half_life_days: f64,
    percentile: f64,
    weight: f64,
    weighted_decayed: f64,
}

#[derive(Serialize)]
struct ByType {
    count: u64,
    decayed: f64,
    type_weight: f64,
    weighted: f64,
}

#[derive(Serialize)]
struct Monetary {
    contribution: f64,
    percentile: f64,
    revenue: f64,
    weight: f64,
}

#[derive(Serialize)]
struct Recency {
    contribution: f64,
    days_since_last_event: Option<f64>,
    score: f64,
    weight: f64,
}

#[derive(Serialize)]
struct Influence<'a> {
    amplification: Part,
    by_network: BTreeMap<&'a str, NetworkPart>,
    centrality: Centrality,
    raw: f64,
    reach: Part,
    score: f64,
}

/// A measured value, its percentile, weight and contribution (reach, amplification).
#[derive(Serialize)]
struct Part {
    contribution: f64,
    percentile: f64,
    value: f64,
    weight: f64,
}

#[derive(Serialize)]
struct NetworkPart {
    amplification: f64,
    followers: f64,
}

#[derive(Serialize)]
struct Centrality {
    contribution: f64,
    pagerank: Option<f64>,
    percentile: f64,
    weight: f64,
}

#[derive(Serialize)]
struct LifecyclePart<'a> {
    stage: &'a str,
    why: &'a Value,
}

#[derive(Serialize)]
struct Rfm<'a> {
    f: u8,
    fm: u8,
    last_order_at: Option<i64>,
    m: u8,
    monetary: f64,
    orders: u64,
    r: u8,
    segment: &'a str,
}

/// A run's customers ranked against each other (percentiles, RFM quintiles): the
/// row of each customer, with its components, is built from it on demand, so that a
/// run can write rows while it builds more.
pub struct Ranked<'a> {
    facts: &'a [CustomerFacts],
    now: i64,
    cfg: &'a ScoringConfig,
    interactions: Vec<f64>,
    frequency: Vec<f64>,
    monetary: Vec<f64>,
    reach_v: Vec<f64>,
    amp_v: Vec<f64>,
    p_int: Vec<f64>,
    p_freq: Vec<f64>,
    p_mon: Vec<f64>,
    p_reach: Vec<f64>,
    p_amp: Vec<f64>,
    p_pr: Vec<f64>,
    eng_raw: Vec<f64>,
    inf_raw: Vec<f64>,
    /// (recency days, recency score, channels in the window, dispersion score)
    parts: Vec<(Option<f64>, f64, u32, f64)>,
    eng_score: Vec<f64>,
    inf_score: Vec<f64>,
    rfm: Vec<(u8, u8, u8)>,
}

impl<'a> Ranked<'a> {
    /// Ranks every customer of the workspace at time `now` (unix seconds).
    pub fn new(facts: &'a [CustomerFacts], now: i64, cfg: &'a ScoringConfig) -> Self {
        let n = facts.len();
        let mut interactions = Vec::with_capacity(n);
        let mut frequency = Vec::with_capacity(n);
        let mut monetary = Vec::with_capacity(n);
        let mut reach_v = Vec::with_capacity(n);
        let mut amp_v = Vec::with_capacity(n);
        let mut pr_v = Vec::with_capacity(n);
        for f in facts {
            interactions.push(
                f.aggs
                    .iter()
                    .map(|a| cfg.type_weight(&a.event_type) * a.decayed)
                    .sum::<f64>(),
            );
            frequency.push(f.aggs.iter().map(|a| a.in_window).sum::<u64>() as f64);
            monetary.push(f.monetary.max(0.0));
            reach_v.push(reach(&f.followers, cfg.reach_network_decay));
            amp_v.push(f.amplification.iter().map(|(_, a)| a.max(0.0)).sum::<f64>());
            pr_v.push(f.pagerank.unwrap_or(0.0));
        }
        let p_int = percentiles(&interactions);
        let p_freq = percentiles(&frequency);
        let p_mon = percentiles(&monetary);
        let p_reach = percentiles(&reach_v);
        let p_amp = percentiles(&amp_v);
        let p_pr = percentiles(&pr_v);

        let em = &cfg.engagement_mix;
        let im = &cfg.influence_mix;
        let mut eng_raw = Vec::with_capacity(n);
        let mut inf_raw = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for (i, f) in facts.iter().enumerate() {
            let last = f.aggs.iter().map(|a| a.last_at).max();
            let recency_days = last.map(|l| ((now - l) as f64 / DAY).max(0.0));
            let recency = recency_days
                .map(|d| 100.0 * decay(d * DAY, cfg.half_life_days))
                .unwrap_or(0.0);
            let channels: BTreeSet<&str> = f
                .aggs
                .iter()
                .filter(|a| a.in_window > 0)
                .map(|a| &*a.channel)
                .collect();
            let dispersion = 100.0
                * (channels.len().min(cfg.dispersion_full_channels as usize)) as f64
                / cfg.dispersion_full_channels as f64;
            let e = em.interactions * p_int[i]
                + em.recency * recency
                + em.frequency * p_freq[i]
                + em.monetary * p_mon[i]
                + em.dispersion * dispersion;
            let inf = im.reach * p_reach[i] + im.amplification * p_amp[i] + im.centrality * p_pr[i];
            eng_raw.push(e);
            inf_raw.push(inf);
            parts.push((recency_days, recency, channels.len() as u32, dispersion));
        }
        let eng_score = percentiles(&eng_raw);
        let inf_score = percentiles(&inf_raw);

        // RFM over customers with at least one order
        let buyers: Vec<usize> = (0..n)
            .filter(|&i| facts[i].orders > 0 && facts[i].last_order_at.is_some())
            .collect();
        let rq = quintiles(
            &buyers
                .iter()
                .map(|&i| facts[i].last_order_at.unwrap_or(0) as f64)
                .collect::<Vec<_>>(),
        );
        let fq = quintiles(
            &buyers
                .iter()
                .map(|&i| facts[i].orders as f64)
                .collect::<Vec<_>>(),
        );
        let mq = quintiles(&buyers.iter().map(|&i| monetary[i]).collect::<Vec<_>>());
        let mut rfm = vec![(0u8, 0u8, 0u8); n];
        for (k, &i) in buyers.iter().enumerate() {
            rfm[i] = (rq[k], fq[k], mq[k]);
        }
        Ranked {
            facts,
            now,
            cfg,
            interactions,
            frequency,
            monetary,
            reach_v,
            amp_v,
            p_int,
            p_freq,
            p_mon,
            p_reach,
            p_amp,
            p_pr,
            eng_raw,
            inf_raw,
            parts,
            eng_score,
            inf_score,
            rfm,
        }
    }

    /// Customers ranked.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Events in the window per customer (the run's frequency column).
    pub fn frequency(&self) -> &[f64] {
        &self.frequency
    }

    /// Net revenue per customer, at least 0 (the run's monetary column).
    pub fn monetary(&self) -> &[f64] {
        &self.monetary
    }

    /// Engagement before its percentile, per customer.
    pub fn engagement_raw(&self) -> &[f64] {
        &self.eng_raw
    }

    /// The row of customer `i`, with its components.
    pub fn build(&self, i: usize) -> Scored {
        let Ranked {
            facts,
            now,
            cfg,
            interactions,
            frequency,
            monetary,
            reach_v,
            amp_v,
            p_int,
            p_freq,
            p_mon,
            p_reach,
            p_amp,
            p_pr,
            eng_raw,
            inf_raw,
            parts,
            eng_score,
            inf_score,
            rfm,
        } = self;
        let (now, em, im) = (*now, &cfg.engagement_mix, &cfg.influence_mix);
        let f = &facts[i];
        let (recency_days, recency, channels_n, dispersion) = parts[i];
        let (r, fr, m) = rfm[i];
        let fm = rfm_fm(r, fr, m);
        let segment = rfm_segment(cfg, r, fm);
        let (stage, stage_why) = lifecycle(f, now, cfg);

        let mut channel_counts: BTreeMap<&str, f64> = BTreeMap::new();
        let mut by_type: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for a in &f.aggs {
            *channel_counts.entry(&a.channel).or_default() += a.count as f64;
            let e = by_type.entry(&a.event_type).or_default();
            e.0 += a.count;
            e.1 += a.decayed;
        }
        let top_channels = top_n(
            channel_counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            cfg.top_affinities,
        );
        let top_categories = top_n(f.categories.clone(), cfg.top_affinities);

        let mut networks: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (net, fol) in &f.followers {
            networks.entry(net.clone()).or_default().0 = *fol;
        }
        for (net, a) in &f.amplification {
            networks.entry(net.clone()).or_default().1 += *a;
        }

        let part = |value: f64, percentile: f64, weight: f64| Part {
            contribution: round3(weight * percentile),
            percentile: round3(percentile),
            value: round3(value),
            weight,
        };
        let components = Components {
            as_of: now,
            engagement: Engagement {
                dispersion: Dispersion {
                    channels_in_window: channels_n,
                    contribution: round3(em.dispersion * dispersion),
                    full_at: cfg.dispersion_full_channels,
                    score: round3(dispersion),
                    weight: em.dispersion,
                },
                frequency: Frequency {
                    contribution: round3(em.frequency * p_freq[i]),
                    events_in_window: frequency[i],
                    percentile: round3(p_freq[i]),
                    weight: em.frequency,
                    window_days: cfg.window_days,
                },
                interactions: Interactions {
                    by_type: by_type
                        .iter()
                        .map(|(t, (c, d))| {
                            let w = cfg.type_weight(t);
                            (
                                *t,
                                ByType {
                                    count: *c,
                                    decayed: round3(*d),
                                    type_weight: w,
                                    weighted: round3(w * d),
                                },
                            )
                        })
                        .collect(),
                    contribution: round3(em.interactions * p_int[i]),
                    half_life_days: cfg.half_life_days,
                    percentile: round3(p_int[i]),
                    weight: em.interactions,
                    weighted_decayed: round3(interactions[i]),
                },
                monetary: Monetary {
                    contribution: round3(em.monetary * p_mon[i]),
                    percentile: round3(p_mon[i]),
                    revenue: round3(monetary[i]),
                    weight: em.monetary,
                },
                raw: round3(eng_raw[i]),
                recency: Recency {
                    contribution: round3(em.recency * recency),
                    days_since_last_event: recency_days.map(round3),
                    score: round3(recency),
                    weight: em.recency,
                },
                score: round3(eng_score[i]),
            },
            influence: Influence {
                amplification: part(amp_v[i], p_amp[i], im.amplification),
                by_network: networks
                    .iter()
                    .map(|(k, (fol, a))| {
                        (
                            k.as_str(),
                            NetworkPart {
                                amplification: round3(*a),
                                followers: *fol,
                            },
                        )
                    })
                    .collect(),
                centrality: Centrality {
                    contribution: round3(im.centrality * p_pr[i]),
                    pagerank: f.pagerank,
                    percentile: round3(p_pr[i]),
                    weight: im.centrality,
                },
                raw: round3(inf_raw[i]),
                reach: part(reach_v[i], p_reach[i], im.reach),
                score: round3(inf_score[i]),
            },
            lifecycle: LifecyclePart {
                stage: &stage,
                why: &stage_why,
            },
            rfm: Rfm {
                f: fr,
                fm,
                last_order_at: f.last_order_at,
                m,
                monetary: round3(monetary[i]),
                orders: f.orders,
                r,
                segment: &segment,
            },
        };
        // a plain struct serializes to the same text as a JSON tree, far faster
        let components = serde_json::to_string(&components).unwrap_or_default();
        Scored {
            customer_id: f.customer_id.clone(),
            run_id: String::new(),
            scored_at: 0,
            engagement_score: round3(eng_score[i]),
            influence_score: round3(inf_score[i]),
            engagement_raw: eng_raw[i],
            influence_raw: inf_raw[i],
            recency_days: recency_days.unwrap_or(-1.0),
            frequency: frequency[i] as u64,
            monetary: monetary[i],
            channels_in_window: channels_n,
            reach: reach_v[i],
            amplification: amp_v[i],
            pagerank: f.pagerank.unwrap_or(0.0),
            rfm_r: r,
            rfm_f: fr,
            rfm_m: m,
            rfm_segment: segment,
            lifecycle_stage: stage,
            top_categories,
            top_channels,
            networks: networks.keys().cloned().collect(),
            network_followers: networks.values().map(|v| v.0).collect(),
            network_amplification: networks.values().map(|v| v.1).collect(),
            components,
        }
    }
}

/// Scores every customer of the workspace at time `now` (unix seconds).
pub fn score_all(facts: &[CustomerFacts], now: i64, cfg: &ScoringConfig) -> Vec<Scored> {
    let ranked = Ranked::new(facts, now, cfg);
    let n = ranked.len();
    let build = |i: usize| ranked.build(i);
    // building the components is most of the work: spread it over the cores
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(8);
    if n < 10_000 || threads == 1 {
        return (0..n).map(build).collect();
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let build = &build;
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(n))
                        .map(build)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(mut part) => out.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
