//! Criterion benchmarks of the identity writer (docs/benchmarks.md, "Identity
//! writer"): one event resolved on a graph of 50,000 people, for an event whose
//! identifiers are all known and for one that creates a profile and a link.
//! `cargo bench -p socialcrm-pipeline --bench identity`

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::Graph;
use socialcrm_schemas::{CanonicalEvent, IdType, Identifier};

// the allocator of the socialcrm binary
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PEOPLE: usize = 50_000;

fn event(n: usize, at: DateTime<Utc>, ids: Vec<Identifier>) -> CanonicalEvent {
    CanonicalEvent::bare(format!("bench:{n}"), "web", "page", at, ids)
}

fn person(p: usize) -> Vec<Identifier> {
    vec![
        Identifier::new(IdType::UserId, format!("u{p}")),
        Identifier::new(IdType::Email, format!("p{p}@shop.io")),
        Identifier::new(IdType::AnonymousId, format!("a{p}")),
    ]
}

fn graph(t0: DateTime<Utc>) -> Graph {
    let mut g = Graph::new(&IdentityConfig::default());
    for p in 0..PEOPLE {
        g.process(&event(p, t0, person(p)), &[]).expect("ok");
    }
    g.take_delta();
    g
}

/// Times `process` on `iters` events from `make` plus the batch hand-off
/// (`take_delta`) every 20,000 events, as the pipeline does; making the events is
/// not timed.
fn run(
    g: &mut Graph,
    iters: u64,
    next: &mut usize,
    make: impl Fn(usize) -> CanonicalEvent,
) -> std::time::Duration {
    let events: Vec<CanonicalEvent> = (0..iters as usize)
        .map(|_| {
            *next += 1;
            make(*next)
        })
        .collect();
    let start = std::time::Instant::now();
    for (i, e) in events.iter().enumerate() {
        g.process(e, &[]).expect("ok");
        if i % 20_000 == 19_999 {
            g.take_delta();
        }
    }
    g.take_delta();
    let took = start.elapsed();
    drop(events);
    took
}

fn bench(c: &mut Criterion) {
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
    let at = t0 + Duration::seconds(60);
    let mut group = c.benchmark_group("identity");
    group.throughput(Throughput::Elements(1));

    let mut g = graph(t0);
    let mut n = PEOPLE;
    group.bench_function("known_identifiers", |b| {
        b.iter_custom(|iters| {
            run(&mut g, iters, &mut n, |n| {
                let p = (n * 7919) % PEOPLE;
                event(
                    n,
                    at,
                    vec![Identifier::new(IdType::AnonymousId, format!("a{p}"))],
                )
            })
        });
    });

    let mut g = graph(t0);
    let mut n = 10 * PEOPLE;
    group.bench_function("new_profile_with_link", |b| {
        b.iter_custom(|iters| run(&mut g, iters, &mut n, |n| event(n, at, person(n))));
    });

    let mut g = graph(t0);
    let mut n = 20 * PEOPLE;
    group.bench_function("new_identifier_joins_known_profile", |b| {
        b.iter_custom(|iters| {
            run(&mut g, iters, &mut n, |n| {
                let p = n % PEOPLE;
                event(
                    n,
                    at,
                    vec![
                        Identifier::new(IdType::UserId, format!("u{p}")),
                        Identifier::new(IdType::AnonymousId, format!("d{n}")),
                    ],
                )
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
