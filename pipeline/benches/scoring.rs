//! Criterion benchmarks of the incremental score update (docs/benchmarks.md,
//! "Incremental score update"): one profile rescored against the distributions of
//! a run over 1,000,000 customers, for a typical and a heavy profile, alone and as
//! the identity writer does it (`Graph::rescore`: follow merges, store, mark dirty).
//! A second group times the full run's fold (`job::Fold`): 2,000,000 events of
//! 1,000,000 customers in random order, as the run reads them from `v_events`.
//! `cargo bench -p socialcrm-pipeline --bench scoring [-- fold]`

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::Graph;
use socialcrm_pipeline::profile::ProfileState;
use socialcrm_pipeline::scoring::incremental::IncrementalModel;
use socialcrm_pipeline::scoring::job::{EventFact, Fold};
use socialcrm_pipeline::scoring::model::{score_all, CustomerFacts, TypeAgg};
use socialcrm_pipeline::scoring::ScoringConfig;
use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier, Revenue};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CUSTOMERS: u64 = 1_000_000;
const TYPES: [(&str, Channel); 7] = [
    ("page", Channel::Web),
    ("track", Channel::Web),
    ("order", Channel::Shop),
    ("mention", Channel::Social),
    ("like", Channel::Social),
    ("reply", Channel::Social),
    ("message", Channel::Support),
];

/// A deterministic spread of values (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The facts of a run over `CUSTOMERS` customers, as the job reads them.
fn facts(now: i64) -> Vec<CustomerFacts> {
    (0..CUSTOMERS)
        .map(|c| {
            let mut f = CustomerFacts {
                customer_id: format!("c{c}"),
                ..Default::default()
            };
            for k in 0..(1 + mix(c) % 4) {
                let r = mix(c * 31 + k);
                let (t, ch) = TYPES[(r % 7) as usize];
                let n = 1 + r % 20;
                let last = now - (r % (200 * 86_400)) as i64;
                f.aggs.push(TypeAgg {
                    event_type: t.into(),
                    channel: ch.as_str().into(),
                    count: n,
                    decayed: n as f64 * 0.5,
                    in_window: n / 2,
                    last_at: last,
                });
                if t == "order" {
                    f.orders += n;
                    f.monetary += (r % 50_000) as f64 / 100.0;
                    f.first_order_at = Some(last - 30 * 86_400);
                    f.last_order_at = Some(last);
                }
            }
            f
        })
        .collect()
}

fn event(n: u64, at: DateTime<Utc>, who: &str) -> CanonicalEvent {
    let (t, ch) = TYPES[(mix(n) % 7) as usize];
    let mut e = CanonicalEvent::bare(
        format!("bench:{who}:{n}"),
        "web",
        t,
        at,
        vec![Identifier::new(IdType::UserId, who)],
    );
    e.channel = ch;
    if t == "order" {
        e.revenue = Some(Revenue {
            amount: 25.0,
            currency: "EUR".into(),
        });
    }
    e
}

/// A profile with `events` events over the last `days` days.
fn profile(who: &str, events: u64, days: i64, now: DateTime<Utc>) -> ProfileState {
    let mut p = ProfileState::new(who.into(), now - Duration::days(days));
    for n in 0..events {
        let at = now - Duration::seconds((mix(n) % (days as u64 * 86_400)) as i64);
        p.apply_event(&event(n, at, who));
    }
    p
}

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let cfg = ScoringConfig::default();
    let f = facts(now.timestamp());
    let scored = score_all(&f, now.timestamp(), &cfg);
    let model = IncrementalModel::from_run("bench", now.timestamp(), &cfg, &f, &scored);
    drop((f, scored));

    let typical = profile("typical", 40, 90, now);
    let heavy = profile("heavy", 5_000, 366, now);
    let later = now.timestamp() + 3_600;
    c.bench_function("rescore typical profile (40 events)", |b| {
        b.iter(|| model.rescore(&typical, None, later))
    });
    c.bench_function("rescore heavy profile (5,000 events, 366 days)", |b| {
        b.iter(|| model.rescore(&heavy, None, later))
    });

    // as the identity writer does it, on a graph of 50,000 profiles
    let mut g = Graph::new(&IdentityConfig::default());
    for p in 0..50_000u64 {
        for n in 0..10 {
            let at = now - Duration::seconds((mix(p * 10 + n) % (90 * 86_400)) as i64);
            g.process(&event(p * 10 + n, at, &format!("u{p}")), &[])
                .expect("event");
        }
    }
    g.take_delta();
    let ids: Vec<String> = (0..50_000u64)
        .map(|p| {
            g.profile_of(&format!("user_id:u{p}"))
                .map(|s| s.customer_id.clone())
                .expect("profile")
        })
        .collect();
    let mut i = 0usize;
    c.bench_function("Graph::rescore one profile of 50,000 (10 events)", |b| {
        b.iter(|| {
            i += 1;
            let n = g.rescore([ids[i % ids.len()].as_str()], &model, later + i as i64);
            if i.is_multiple_of(20_000) {
                g.take_delta();
            }
            n
        })
    });
}

/// One event of the fold's data set, owned.
struct Ev {
    customer: usize,
    kind: usize,
    at: u32,
    target: Option<usize>,
    followers: f64,
}

const SOCIAL: [&str; 4] = ["mention", "reply", "reshare", "like"];

fn fold(c: &mut Criterion) {
    const EVENTS: u64 = 2_000_000;
    let now = 1_800_000_000i64;
    let cfg = ScoringConfig::default();
    let ids: Vec<String> = (0..CUSTOMERS)
        .map(|c| format!("c_{:016x}", mix(c)))
        .collect();
    let handles: Vec<String> = (0..CUSTOMERS).map(|c| format!("@u{c}@m.social")).collect();
    // skewed: low numbers are heavy users and popular targets
    let pick = |r: u64| ((r % CUSTOMERS) * (r % 1000) / 1000) as usize;
    let events: Vec<Ev> = (0..EVENTS)
        .map(|n| {
            let r = mix(n);
            let kind = (r % 10) as usize;
            Ev {
                customer: pick(r >> 8),
                kind,
                at: (now - (mix(n + 7) % (120 * 86_400)) as i64) as u32,
                target: (kind < 6).then(|| pick(mix(n + 3))),
                followers: if kind < 6 && r.is_multiple_of(3) {
                    (r % 5000) as f64
                } else {
                    -1.0
                },
            }
        })
        .collect();
    let mut g = c.benchmark_group("fold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("2,000,000 events of 1,000,000 customers", |b| {
        b.iter(|| {
            let mut fold = Fold::new(&cfg, now, 42);
            for (c, h) in ids.iter().zip(&handles) {
                fold.identity("mastodon", h, c);
            }
            for e in &events {
                let (t, ch) = match e.kind {
                    0..=5 => (SOCIAL[e.kind % 4], "social"),
                    6..=8 => ("page", "web"),
                    _ => ("order", "shop"),
                };
                fold.add(&EventFact {
                    customer_id: &ids[e.customer],
                    event_type: t,
                    channel: ch,
                    network: if e.kind < 6 { "mastodon" } else { ch },
                    occurred_at: e.at,
                    revenue_amount: if e.kind == 9 { 25.0 } else { 0.0 },
                    followers_count: e.followers,
                    categories: if e.kind == 9 {
                        vec!["shoes"]
                    } else {
                        Vec::new()
                    },
                    target_types: e.target.map(|_| vec!["mastodon"]).unwrap_or_default(),
                    target_values: e
                        .target
                        .map(|t| vec![handles[t].as_str()])
                        .unwrap_or_default(),
                });
            }
            fold.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, fold);
criterion_main!(benches);
