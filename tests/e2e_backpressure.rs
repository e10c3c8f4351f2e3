//! A down dependency means back-pressure and retry, never a crash or a drop:
//! ClickHouse goes away while the pipeline has events to write, then comes back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn clickhouse_outage_pauses_the_pipeline_and_loses_nothing() {
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    let proxy = FlakyProxy::start(&upstream);
    let mut w = World::with_clickhouse_url(
        "outage",
        "retry_max_interval_ms = 500\nbatch_max_events = 1000",
        &format!("http://{}", proxy.addr),
    );
    let t = w.topics();
    let events: Vec<(String, Vec<u8>)> = (0..5_000)
        .map(|n| {
            let ev = json!({"schema_version": 1, "event_id": format!("out:{n}"), "source": "test",
                "channel": "web", "type": "page", "occurred_at": "2026-11-01T00:00:00Z",
                "received_at": "2026-11-01T00:00:00Z",
                "identifiers": [{"type": "anonymous_id", "value": format!("a{}", n % 100)}]});
            (
                format!("a{}", n % 100),
                serde_json::to_vec(&ev).expect("json"),
            )
        })
        .collect();
    produce_raw(&t.events, &events[..2_000]);
    let p = w.start_pipeline();
    wait_until(Duration::from_secs(60), "first events written", || {
        w.query_u64("SELECT count() FROM events FINAL") == 2_000
    });

    // ClickHouse goes away; more events arrive
    proxy.set_down(true);
    produce_raw(&t.events, &events[2_000..]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        w.child(p).try_wait().expect("status").is_none(),
        "the pipeline must not exit: {}",
        w.log("pipeline")
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL"),
        2_000,
        "nothing written while down"
    );
    assert!(
        w.log("pipeline").contains("retrying"),
        "{}",
        w.log("pipeline")
    );

    // it comes back: everything arrives, exactly once
    proxy.set_down(false);
    wait_until(
        Duration::from_secs(120),
        "all events written after the outage",
        || w.query_u64("SELECT count() FROM events FINAL") == 5_000,
    );
    wait_until(Duration::from_secs(60), "profiles caught up", || {
        w.query_u64("SELECT sum(event_count) FROM profiles FINAL WHERE is_active = 1") == 5_000
    });
    assert_eq!(
        w.query_u64("SELECT count() FROM profiles FINAL WHERE is_active = 1"),
        100
    );
}
