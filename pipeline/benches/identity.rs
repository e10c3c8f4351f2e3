//! Criterion benchmarks of the identity writer (docs/benchmarks.md, "Identity
//! writer"): one event resolved on a graph of 50,000 people, for an event whose
//! identifiers are all known and for one that creates a profile and a link.
//! `cargo bench -p socialcrm-pipeline --bench identity`

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use socialcrm_pipeline::config::IdentityConfig;
use socialcrm_pipeline::identity::Graph;
use socialcrm_schemas::{CanonicalEvent, Channel, IdType, Identifier};

const PEOPLE: usize = 50_000;

fn event(n: usize, at: DateTime<Utc>, ids: Vec<Identifier>) -> CanonicalEvent {
    CanonicalEvent {
        schema_version: 1,
        event_id: format!("bench:{n}"),
        source: "web".into(),
        channel: Channel::Web,
        event_type: "page".into(),
        name: None,
        occurred_at: at,
        received_at: at,
        identifiers: ids,
        target: Vec::new(),
        claimed: Vec::new(),
        traits: Default::default(),
        properties: Default::default(),
        revenue: None,
        context: Default::default(),
    }
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

fn bench(c: &mut Criterion) {
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
    let mut group = c.benchmark_group("identity");
    group.throughput(Throughput::Elements(1));

    let mut g = graph(t0);
    let mut n = PEOPLE;
    group.bench_function("known_identifiers", |b| {
        b.iter_batched(
            || {
                n += 1;
                let p = (n * 7919) % PEOPLE;
                event(
                    n,
                    t0 + Duration::seconds(60),
                    vec![Identifier::new(IdType::AnonymousId, format!("a{p}"))],
                )
            },
            |e| g.process(&e, &[]).expect("ok"),
            BatchSize::SmallInput,
        );
        g.take_delta();
    });

    let mut g = graph(t0);
    let mut n = 10 * PEOPLE;
    group.bench_function("new_profile_with_link", |b| {
        b.iter_batched(
            || {
                n += 1;
                event(n, t0 + Duration::seconds(60), person(n))
            },
            |e| g.process(&e, &[]).expect("ok"),
            BatchSize::SmallInput,
        );
        g.take_delta();
    });

    let mut g = graph(t0);
    let mut n = 20 * PEOPLE;
    group.bench_function("new_identifier_joins_known_profile", |b| {
        b.iter_batched(
            || {
                n += 1;
                let p = n % PEOPLE;
                event(
                    n,
                    t0 + Duration::seconds(60),
                    vec![
                        Identifier::new(IdType::UserId, format!("u{p}")),
                        Identifier::new(IdType::AnonymousId, format!("d{n}")),
                    ],
                )
            },
            |e| g.process(&e, &[]).expect("ok"),
            BatchSize::SmallInput,
        );
        g.take_delta();
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
