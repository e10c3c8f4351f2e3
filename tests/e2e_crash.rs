//! Crash safety: kill -9 the pipeline while it consumes 50,000 events, restart it,
//! and every event is counted exactly once in query results and profiles.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const EVENTS: usize = 50_000;
const PEOPLE: usize = 2_000;

fn events() -> Vec<(String, Vec<u8>)> {
    (0..EVENTS)
        .map(|n| {
            let person = n % PEOPLE;
            let round = n / PEOPLE;
            // each person browses on three devices; every 4th round also carries the
            // email, so profiles keep merging while the stream is consumed
            let mut ids = vec![json!({"type": "anonymous_id", "value": format!("anon-{person}-{}", round % 3)})];
            if round.is_multiple_of(4) {
                ids.push(json!({"type": "email", "value": format!("p{person}@example.com")}));
            }
            let ev = json!({
                "schema_version": 1,
                "event_id": format!("crash:{n}"),
                "source": "test",
                "channel": "web",
                "type": if n.is_multiple_of(50) { "order" } else { "page" },
                "occurred_at": format!("2026-10-{:02}T{:02}:{:02}:00Z", 1 + n % 28, n % 24, n % 60),
                "received_at": "2026-11-01T00:00:00Z",
                "identifiers": ids,
                "properties": {"path": format!("/p/{}", n % 100)},
                "revenue": if n.is_multiple_of(50) { json!({"amount": 10.0, "currency": "EUR"}) } else { serde_json::Value::Null },
            });
            let mut ev = ev;
            if ev["revenue"].is_null() {
                ev.as_object_mut().map(|o| o.remove("revenue"));
            }
            (format!("p{person}"), serde_json::to_vec(&ev).expect("json"))
        })
        .collect()
}

#[test]
fn kill_9_mid_stream_then_restart_counts_every_event_exactly_once() {
    let mut w = World::with_pipeline_settings("crash", "batch_max_events = 2000");
    let t = w.topics();
    produce_raw(&t.events, &events());

    let started = std::time::Instant::now();
    let first = w.start_pipeline();
    // wait until some, but not all, batches are in ClickHouse, then kill -9
    wait_until(Duration::from_secs(120), "first batches written", || {
        w.query_u64("SELECT count() FROM events") >= 6_000
    });
    w.child(first).kill().expect("kill -9");
    w.child(first).wait().expect("reaped");
    eprintln!("killed after {:?}", started.elapsed());
    let at_kill = w.query_u64("SELECT count() FROM events FINAL");
    assert!(
        at_kill < EVENTS as u64,
        "the pipeline finished before the kill; make the stream longer"
    );

    // a second crash right after restart, then the final run
    let second = w.start_pipeline();
    std::thread::sleep(Duration::from_millis(1500));
    w.child(second).kill().expect("kill -9 again");
    w.child(second).wait().expect("reaped");
    w.start_pipeline();

    wait_until(Duration::from_secs(300), "all events written", || {
        w.query_u64("SELECT count() FROM events FINAL") == EVENTS as u64
    });
    eprintln!(
        "all events written {:?} after the first start",
        started.elapsed()
    );
    let out = w.cli(&["lag", "--wait", "--timeout-secs", "120"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // exactly once in query results
    assert_eq!(
        w.query_u64("SELECT uniqExact(event_id) FROM events FINAL"),
        EVENTS as u64
    );
    assert_eq!(w.query_u64("SELECT count() FROM v_events"), EVENTS as u64);
    // profiles count every event exactly once, and agree with the events per customer
    assert_eq!(
        w.query_u64("SELECT sum(event_count) FROM profiles FINAL WHERE is_active = 1"),
        EVENTS as u64
    );
    let mismatches = w.query(
        "SELECT count() FROM (SELECT customer_id, count() AS n FROM v_events GROUP BY customer_id) AS e \
         ANY LEFT JOIN (SELECT customer_id, event_count FROM profiles FINAL WHERE is_active = 1) AS p USING (customer_id) \
         WHERE n != event_count",
    );
    assert_eq!(
        mismatches.trim(),
        "0",
        "per-customer counts differ from the events"
    );
    assert_eq!(
        w.query_u64("SELECT sum(order_count) FROM profiles FINAL WHERE is_active = 1"),
        (EVENTS / 50) as u64
    );
    // identity: each person is one profile (all anon ids of a person meet their email)
    assert_eq!(
        w.query_u64("SELECT uniqExact(customer_id) FROM identities FINAL WHERE id_type = 'email'"),
        PEOPLE as u64
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM profiles FINAL WHERE is_active = 1"),
        PEOPLE as u64
    );
    // the ledger alone gives back exactly the mapping, crashes included
    assert_rebuild_identical(&w);
}

#[test]
fn dying_between_the_sinks_and_the_store_commit_leaves_no_duplicate_profiles() {
    // one big first batch that is fully written to ClickHouse and Kafka, then the
    // process dies before its identity store commit: the worst moment
    let mut w = World::with_pipeline_settings("failpoint", "batch_max_events = 50000");
    let t = w.topics();
    produce_raw(&t.events, &events());
    let log = std::fs::File::create(w.log_path("crashing")).expect("log");
    let status = std::process::Command::new(World::bin())
        .arg("--config")
        .arg(&w.config)
        .arg("pipeline")
        .env("SOCIALCRM_FAILPOINT", "after_sinks")
        .stderr(log)
        .status()
        .expect("run");
    assert!(!status.success(), "the failpoint must abort the process");
    assert!(w
        .log("crashing")
        .contains("SOCIALCRM_FAILPOINT=after_sinks: aborting"));
    let written_before = w.query_u64("SELECT count() FROM events FINAL");
    assert!(written_before > 0, "the crashed batch reached ClickHouse");

    w.start_pipeline();
    wait_until(Duration::from_secs(300), "all events written", || {
        w.query_u64("SELECT count() FROM events FINAL") == EVENTS as u64
    });
    let out = w.cli(&["lag", "--wait", "--timeout-secs", "120"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(60), "crash recovery finished", || {
        w.log("pipeline").contains("crash recovery")
    });
    assert!(
        w.log("pipeline").contains("recovering=true"),
        "{}",
        w.log("pipeline")
    );

    assert_eq!(w.query_u64("SELECT count() FROM v_events"), EVENTS as u64);
    assert_eq!(
        w.query_u64("SELECT sum(event_count) FROM profiles FINAL WHERE is_active = 1"),
        EVENTS as u64,
        "no event counted twice, no profile left over from the crashed attempt"
    );
    assert_eq!(
        w.query_u64("SELECT count() FROM profiles FINAL WHERE is_active = 1"),
        PEOPLE as u64
    );
    // every identifier points at a live profile
    assert_eq!(
        w.query_u64(
            "SELECT count() FROM identities FINAL WHERE is_active = 1 AND customer_id NOT IN \
             (SELECT customer_id FROM profiles FINAL WHERE is_active = 1)"
        ),
        0
    );
    // the ledger alone gives back exactly the mapping, crashes included
    assert_rebuild_identical(&w);
}

fn assert_rebuild_identical(w: &World) {
    let out = w.cli(&["identity", "rebuild"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("identical to crm.identities"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
