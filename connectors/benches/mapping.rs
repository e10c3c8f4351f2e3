//! The CPU of a connector's mapping alone, without HTTP, Kafka or the machine's
//! other load: Mastodon's deferred mapping of a page of notifications (each read
//! from its slice of the page into typed structs, then mapped to canonical
//! events), and the validation and encoding the runtime adds before producing.
//!
//! `cargo bench -p socialcrm-connectors --features testkit --bench mapping`

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use socialcrm_connectors::mastodon::{config::SUPPORTED_TYPES, fake, mapping};
use socialcrm_connectors::producer::Encoded;
use socialcrm_schemas::Normalizer;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Pages of 80 notifications (Mastodon's largest page), as their JSON texts.
fn pages() -> Vec<Vec<String>> {
    let data = fake::generate(8_000, 42);
    data.notifications()
        .chunks(80)
        .map(|p| p.iter().map(|n| n.to_string()).collect())
        .collect()
}

fn mastodon(c: &mut Criterion) {
    let pages = pages();
    let types: Vec<String> = SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect();
    let ctx = mapping::Context {
        domain: "mastodon.social",
        source: "mastodon:mastodon.social",
        brand_id: "1",
        brand_handle: "@brand@mastodon.social",
        types: &types,
        received_at: Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap(),
        max_text_chars: 2000,
    };
    let normalizer = Normalizer::default();
    let now = Utc::now();
    let mut g = c.benchmark_group("mastodon");
    g.throughput(Throughput::Elements(80));
    let mut i = 0usize;
    // the deferred mapping of the next page, as the connector runs it
    let mut next_page = || {
        i = (i + 1) % pages.len();
        let items: Vec<mapping::PageItem> = pages[i]
            .iter()
            .map(|t| mapping::PageItem::parse_str(t))
            .collect();
        mapping::map_items(&items, &ctx).events
    };
    g.bench_function("page of 80: read + map", |b| b.iter(|| next_page().len()));
    g.bench_function("page of 80: read + map + validate + encode", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for mut ev in next_page() {
                if ev.validate_and_normalize(&normalizer, now).is_ok() {
                    bytes += Encoded::new(&ev).map_or(0, |e| e.payload.len());
                }
            }
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, mastodon);
criterion_main!(benches);
