//! Scoring end to end: canonical events through the real pipeline into ClickHouse
//! 18.16, `socialcrm score run --as-of`, then `crm.v_scores` and `score explain`
//! checked against values computed by hand.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const AS_OF: &str = "2026-11-01T00:00:00Z";

fn at(days_ago: f64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(AS_OF).expect("as_of")
        - chrono::Duration::seconds((days_ago * 86_400.0) as i64);
    t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[allow(clippy::too_many_arguments)]
fn ev(
    id: &str,
    channel: &str,
    typ: &str,
    days_ago: f64,
    ids: Value,
    target: Value,
    traits: Value,
    props: Value,
    revenue: Option<f64>,
) -> (String, Vec<u8>) {
    let mut e = json!({
        "schema_version": 1,
        "event_id": id,
        "source": if channel == "social" { "mastodon:m.social" } else { "web" },
        "channel": channel,
        "type": typ,
        "occurred_at": at(days_ago),
        "received_at": AS_OF,
        "identifiers": ids,
    });
    if target != Value::Null {
        e["target"] = target;
    }
    if traits != Value::Null {
        e["traits"] = traits;
    }
    if props != Value::Null {
        e["properties"] = props;
    }
    if let Some(r) = revenue {
        e["revenue"] = json!({"amount": r, "currency": "EUR"});
    }
    (id.to_string(), serde_json::to_vec(&e).expect("json"))
}

fn masto(user: &str) -> Value {
    json!([{"type": "mastodon", "value": format!("@{user}@m.social")}])
}

fn world_events() -> Vec<(String, Vec<u8>)> {
    let n = Value::Null;
    let mut v = vec![
        // ann: web identify (email + her mastodon handle), a page, one order 10 days ago
        ev(
            "s:ann:identify",
            "web",
            "identify",
            1.0,
            json!([{"type": "email", "value": "ann@example.com"}, {"type": "anonymous_id", "value": "ann-phone"},
                  {"type": "mastodon", "value": "@ann@m.social"}]),
            n.clone(),
            n.clone(),
            n.clone(),
            None,
        ),
        ev(
            "s:ann:page",
            "web",
            "page",
            0.0,
            json!([{"type": "anonymous_id", "value": "ann-laptop"}, {"type": "email", "value": "ann@example.com"}]),
            n.clone(),
            n.clone(),
            json!({"path": "/"}),
            None,
        ),
        ev(
            "s:ann:order",
            "shop",
            "order",
            10.0,
            json!([{"type": "email", "value": "ann@example.com"}]),
            n.clone(),
            n.clone(),
            json!({"products": [{"id": "p1", "category": "shoes", "price": 40}]}),
            Some(40.0),
        ),
        // carl posts; others amplify him
        ev(
            "s:carl:post",
            "social",
            "post",
            2.0,
            masto("carl"),
            n.clone(),
            json!({"followers_count": 120}),
            n.clone(),
            None,
        ),
        ev(
            "s:dana:reply",
            "social",
            "reply",
            2.0,
            masto("dana"),
            masto("carl"),
            json!({"followers_count": 5000}),
            n.clone(),
            None,
        ),
        ev(
            "s:carl:reply",
            "social",
            "reply",
            1.0,
            masto("carl"),
            masto("ed"),
            json!({"followers_count": 120}),
            n.clone(),
            None,
        ),
        ev(
            "s:ed:post",
            "social",
            "post",
            3.0,
            masto("ed"),
            n.clone(),
            n.clone(),
            n.clone(),
            None,
        ),
        // someone reshares ann's post: her social activity counts for her unified profile
        ev(
            "s:o0:reshare-ann",
            "social",
            "reshare",
            1.0,
            masto("o0"),
            masto("ann"),
            n.clone(),
            n.clone(),
            None,
        ),
    ];
    for i in 0..10 {
        v.push(ev(
            &format!("s:o{i}:reshare"),
            "social",
            "reshare",
            1.0,
            masto(&format!("o{i}")),
            masto("carl"),
            n.clone(),
            n.clone(),
            None,
        ));
    }
    // bob: five orders every 10 days
    for (k, d) in [50.0, 40.0, 30.0, 20.0, 10.0].iter().enumerate() {
        v.push(ev(
            &format!("s:bob:order{k}"),
            "shop",
            "order",
            *d,
            json!([{"type": "email", "value": "bob@example.com"}]),
            n.clone(),
            n.clone(),
            json!({"products": [{"id": "p9", "category": "bags"}]}),
            Some(40.0),
        ));
    }
    v
}

fn score_of(w: &World, ident: &str) -> Value {
    let out = w.cli(&["score", "explain", ident, "--json"]);
    assert!(
        out.status.success(),
        "explain {ident}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain json")
}

/// The small world through the pipeline, scored by `score run --as-of AS_OF`:
/// the world and the run's report.
fn scored_world(name: &str) -> (World, Value) {
    let mut w = World::new(name);
    // no schedule here (runs are explicit), but apply completed runs quickly; inserts
    // of 2 rows, so that each of the job's insert streams writes several
    w.append_config("[scoring]\ninterval_secs = 0\napply_poll_secs = 1\ninsert_batch = 2");
    let t = w.topics();
    let evs = world_events();
    let n = evs.len() as u64;
    produce_raw(&t.events, &evs);
    w.start_pipeline();
    wait_until(Duration::from_secs(120), "events in ClickHouse", || {
        w.query_u64("SELECT count() FROM events FINAL") == n
    });

    w.wait_caught_up();
    let out = w.cli(&["score", "run", "--as-of", AS_OF, "--json"]);
    assert!(
        out.status.success(),
        "score run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    (w, report)
}

#[test]
fn scores_from_clickhouse_match_hand_computed_values() {
    let (w, report) = scored_world("scoring");
    let t = w.topics();
    let customers = w.query_u64("SELECT uniqExact(customer_id) FROM v_events");
    assert_eq!(report["customers"].as_u64(), Some(customers));
    assert_eq!(w.query_u64("SELECT count() FROM v_scores"), customers);

    // ann: one profile across web, shop and mastodon
    let ann = score_of(&w, "email:ann@example.com");
    assert_eq!(ann["lifecycle_stage"], "new_customer");
    assert_eq!(ann["top_categories"], json!(["shoes"]));
    let c = &ann["components"];
    // identify 0.5·2^(−1/30) + page 1·1 + order 10·2^(−10/30) (weights and half-life: defaults)
    let expected = 0.5 * (-1.0f64 / 30.0).exp2() + 1.0 + 10.0 * (-10.0f64 / 30.0).exp2();
    let got = c["engagement"]["interactions"]["weighted_decayed"]
        .as_f64()
        .expect("f64");
    assert!((got - expected).abs() < 2e-3, "{got} vs {expected}");
    assert_eq!(c["engagement"]["dispersion"]["channels_in_window"], 2);
    assert_eq!(c["influence"]["amplification"]["value"].as_f64(), Some(4.0)); // one reshare

    // bob: five orders every 10 days → loyal; ann and bob both bought 10 days ago
    let bob = score_of(&w, "email:bob@example.com");
    assert_eq!(bob["lifecycle_stage"], "loyal");
    assert_eq!(bob["top_categories"], json!(["bags"]));
    assert_eq!(bob["components"]["rfm"]["orders"], 5);
    assert_eq!(bob["rfm_segment"], "loyal");
    assert_eq!(ann["rfm_segment"], "needs_attention");

    // carl: 10 reshares (4 each) + 1 reply (3) by others = 43, the top influencer
    let carl = score_of(&w, "mastodon:@carl@m.social");
    let amp = carl["components"]["influence"]["amplification"]["value"].as_f64();
    assert_eq!(amp, Some(43.0));
    assert_eq!(carl["lifecycle_stage"], "prospect");
    let top: String = w.query(
        "SELECT customer_id FROM v_scores ORDER BY influence_score DESC, pagerank DESC LIMIT 1",
    );
    assert_eq!(top.trim(), carl["customer_id"].as_str().expect("id"));
    let ed = score_of(&w, "mastodon:@ed@m.social");
    assert_eq!(
        ed["components"]["influence"]["amplification"]["value"].as_f64(),
        Some(3.0)
    );
    let dana = score_of(&w, "mastodon:@dana@m.social");
    // dana has the most followers: reach log10(5001)
    let reach = dana["components"]["influence"]["reach"]["value"]
        .as_f64()
        .expect("reach");
    assert!((reach - 5001f64.log10()).abs() < 1e-3, "{reach}");

    // the text form explains every component
    let out = w.cli(&["score", "explain", "email:ann@example.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "engagement",
        "interactions",
        "recency",
        "frequency",
        "monetary",
        "dispersion",
        "influence",
        "reach",
        "amplification",
        "centrality",
        "RFM",
        "lifecycle new_customer",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    // the running pipeline applies the completed run to the profiles: ClickHouse
    // profiles and the crm.profiles topic carry the scores
    let ann_cid = ann["customer_id"].as_str().expect("cid").to_string();
    let want = ann["engagement_score"].as_f64().expect("score");
    wait_until(Duration::from_secs(60), "scores on the profile", || {
        let out = w.cli(&["profile", "get", "email:ann@example.com", "--json"]);
        let p: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        p["engagement_score"].as_f64() == Some(want)
    });
    let out = w.cli(&["profile", "get", "email:bob@example.com", "--json"]);
    let p: Value = serde_json::from_slice(&out.stdout).expect("profile");
    assert_eq!(p["lifecycle_stage"], "loyal");
    let msgs = consume_all(&t.profiles, 1, Duration::from_secs(10));
    let payloads: Vec<Vec<u8>> = msgs.iter().filter_map(|(_, p)| p.clone()).collect();
    let profiles = assert_all_valid(
        include_str!("../schemas/json/profile.v1.schema.json"),
        &payloads,
        "crm.profiles",
    );
    let scored = profiles
        .iter()
        .rfind(|p| p["customer_id"] == ann_cid.as_str())
        .expect("ann's profile published");
    assert_eq!(scored["engagement_score"].as_f64(), Some(want));
    assert_eq!(scored["score_components"]["rfm_segment"], "needs_attention");
    assert_eq!(
        scored["score_components"]["top_categories"],
        json!(["shoes"])
    );

    // a second run replaces what v_scores shows; history stays in crm.scores
    let out = w.cli(&["score", "run", "--as-of", "2026-12-15T00:00:00Z"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.query_u64("SELECT count() FROM v_scores"), customers);
    assert_eq!(w.query_u64("SELECT count() FROM scores"), 2 * customers);
    let ann2 = score_of(&w, "email:ann@example.com");
    // 55 days later her single order is overdue: 55 > 1.5 × 90? no → still new_customer;
    // her recency dropped with the clock
    let r1 = ann["components"]["engagement"]["recency"]["score"]
        .as_f64()
        .expect("r1");
    let r2 = ann2["components"]["engagement"]["recency"]["score"]
        .as_f64()
        .expect("r2");
    assert!(r2 < r1, "{r2} !< {r1}");
    assert_eq!(ann2["lifecycle_stage"], "new_customer");
}

#[test]
fn the_pipeline_runs_scoring_on_its_schedule() {
    let mut w = World::new("scoring_sched");
    w.append_config("[scoring]\ninterval_secs = 2\napply_poll_secs = 1");
    let t = w.topics();
    let evs: Vec<(String, Vec<u8>)> = world_events().into_iter().take(3).collect();
    produce_raw(&t.events, &evs);
    w.start_pipeline();
    let t0 = std::time::Instant::now();
    loop {
        let out = w.cli(&["profile", "get", "email:ann@example.com", "--json"]);
        let p: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if p["score_components"]["run_id"].is_string() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no scheduled run applied to a profile; pipeline log:\n{}",
            w.log("pipeline")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(w.query_u64("SELECT count() FROM score_runs") >= 1);
    assert!(w.log("pipeline").contains("scheduled scoring run done"));
}

#[test]
fn new_events_update_scores_between_runs() {
    let (w, run) = scored_world("scoring_incr");
    let t = w.topics();
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM score_models WHERE run_id = '{run_id}'"
        )),
        1
    );
    let profile = |w: &World| -> Value {
        let out = w.cli(&["profile", "get", "mastodon:@carl@m.social", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    // the run's scores reach carl's profile (no order yet: a prospect)
    wait_until(Duration::from_secs(60), "the run applied", || {
        profile(&w)["score_components"]["run_id"] == run_id.as_str()
    });
    let before = profile(&w);
    assert_eq!(before["lifecycle_stage"], "prospect", "{before:#}");
    assert!(before["score_components"]["incremental_at"].is_null());
    let engagement_before = before["engagement_score"].as_f64().expect("score");

    // carl orders today (his e-mail and handle together): no new run, and yet
    let now = chrono::Utc::now();
    let order = json!({
        "schema_version": 1,
        "event_id": "s:carl:order-today",
        "source": "web",
        "channel": "shop",
        "type": "order",
        "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "received_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "identifiers": [{"type": "email", "value": "carl@example.com"},
                        {"type": "mastodon", "value": "@carl@m.social"}],
        "revenue": {"amount": 120.0, "currency": "EUR"},
    });
    let t0 = std::time::Instant::now();
    produce_raw(
        &t.events,
        &[(
            "s:carl:order-today".to_string(),
            serde_json::to_vec(&order).expect("json"),
        )],
    );
    wait_until(Duration::from_secs(60), "carl rescored", || {
        profile(&w)["lifecycle_stage"] == "new_customer"
    });
    let after = profile(&w);
    eprintln!(
        "order visible in carl's scores {:.1} s after it was produced",
        t0.elapsed().as_secs_f64()
    );
    let sc = &after["score_components"];
    assert_eq!(sc["run_id"], run_id.as_str(), "no new run: {sc:#}");
    assert!(sc["incremental_at"].as_i64().is_some(), "{sc:#}");
    // the newest buyer: top recency quintile
    assert_eq!(sc["rfm"][0], 5, "{sc:#}");
    let engagement_after = after["engagement_score"].as_f64().expect("score");
    assert!(
        engagement_after > engagement_before,
        "{engagement_after} !> {engagement_before}"
    );
    assert!(
        after["top_channels"].to_string().contains("shop")
            || sc["top_channels"].to_string().contains("shop"),
        "{after:#}"
    );
    // the run's history is untouched: incremental updates are not runs
    assert_eq!(w.query_u64("SELECT count() FROM score_runs"), 1);
}
