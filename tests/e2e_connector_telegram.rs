//! End to end: the Telegram connector (real `socialcrm` binary) against the fake
//! Bot API, through real Kafka, pipeline and ClickHouse.
//!
//! * killed (-9) mid-backfill and run again: exactly the event ids of one clean
//!   run reach ClickHouse, no gap, nothing extra; malformed updates in the DLQ;
//! * a phone number shared with the bot joins a web visitor identified with the
//!   same number (collector) on one customer;
//! * a refused token stops `connector run` with the instance and the fix named,
//!   and the token never reaches the log.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_connectors::telegram::fake::{self, FakeData, FAKE_TOKEN};
use socialcrm_connectors::testkit::BlockingFakeServer;

fn connector_body(base_url: &str, token: &str, extra: &str) -> String {
    format!(
        "type = \"telegram\"\napi_url = \"{base_url}\"\nbot_token = \"{token}\"\nlong_poll_secs = 0\n{extra}"
    )
}

#[test]
fn killed_mid_backfill_resumes_without_gap_or_extra_events() {
    let mut data = FakeData::generate(300, 21);
    data.add_malformed(3);
    let expected = data.expected_event_ids();
    assert!(expected.len() > 150, "{}", expected.len());
    let served = data.clone();
    let server = BlockingFakeServer::start(move || fake::router(served));
    // 303 updates, 10 per page: 31 pages (+ getMe), 150 ms each
    server.controls.set_delay(Duration::from_millis(150));

    let mut w = World::new("tg_resume");
    w.add_connector(
        "tg",
        &connector_body(&server.base_url, FAKE_TOKEN, "limit = 10"),
    );
    let child = w.spawn_connector("tg", &["--once"]);
    wait_until(Duration::from_secs(60), "some pages served", || {
        server.controls.ok_count() >= 8
    });
    w.kill(child);
    let before = server.controls.ok_count();
    assert!(
        before < 30,
        "the run finished before the kill ({before} answers)"
    );

    server.controls.set_delay(Duration::ZERO);
    let out = w.run_connector_once("tg", &[]);
    assert!(
        out.status.success(),
        "second run failed: {}",
        w.log("connector-tg")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 objects rejected"), "{stdout}");

    w.start_pipeline();
    let ids = w.wait_event_ids(expected.len(), Duration::from_secs(120));
    // let any late batch land before comparing
    std::thread::sleep(Duration::from_secs(2));
    let ids_after = w.event_ids();
    assert_eq!(ids, ids_after);
    let missing: Vec<_> = expected.difference(&ids).collect();
    let extra: Vec<_> = ids.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    // no event counted twice, replays included
    assert_eq!(
        w.query_u64("SELECT count() FROM events FINAL"),
        expected.len() as u64
    );

    // the malformed updates are in the DLQ with their ids (a replay may repeat one)
    let dlq = consume_all(&w.topics().dlq, 3, Duration::from_secs(30));
    let rejected: BTreeSet<String> = dlq
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .filter_map(|p| serde_json::from_slice::<Value>(p).ok())
        .filter(|v| v["origin"]["connector"] == "tg")
        .filter_map(|v| v["origin"]["object_id"].as_str().map(str::to_string))
        .collect();
    let malformed: BTreeSet<String> = data.updates[data.updates.len() - 3..]
        .iter()
        .map(|(id, _)| format!("update:{id}"))
        .collect();
    assert_eq!(rejected, malformed);
}

#[test]
fn shared_phone_joins_a_web_visitor_on_one_customer() {
    let mut data = FakeData::empty();
    let user = json!({"id": 424242, "is_bot": false, "first_name": "Olga", "last_name": "Ivanova",
        "username": "olga_iv", "language_code": "uk"});
    let chat = json!({"id": 424242, "type": "private", "first_name": "Olga"});
    data.push(
        json!({"update_id": 900, "message": {"message_id": 1, "from": user, "chat": chat,
        "date": 1767225600, "text": "Hi, where is my order?"}}),
    );
    // she shares her own number (Telegram sends it without `+`)
    data.push(
        json!({"update_id": 901, "message": {"message_id": 2, "from": user, "chat": chat,
        "date": 1767225660, "contact": {"phone_number": "14155550123", "first_name": "Olga",
        "user_id": 424242}}}),
    );
    // and a friend's card, which must not become hers
    data.push(
        json!({"update_id": 902, "message": {"message_id": 3, "from": user, "chat": chat,
        "date": 1767225720, "contact": {"phone_number": "14155550199", "first_name": "Sven",
        "user_id": 777}}}),
    );
    let served = data.clone();
    let server = BlockingFakeServer::start(move || fake::router(served));

    let mut w = World::new("tg_identity");
    w.start_collector();
    w.start_pipeline();
    w.add_connector("tg", &connector_body(&server.base_url, FAKE_TOKEN, ""));
    let out = w.run_connector_once("tg", &[]);
    assert!(out.status.success(), "{}", w.log("connector-tg"));

    // the same person on the web shop, identified with her number written differently
    let r = w.post(
        "/v1/identify",
        &json!({"userId": "shop-user-77", "messageId": "tg-e2e-1",
            "traits": {"phone": "+1 (415) 555-0123", "email": "olga@example.com"},
            "timestamp": "2026-02-01T10:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    wait_until(Duration::from_secs(90), "4 events in ClickHouse", || {
        w.query_u64("SELECT count() FROM events FINAL") == 4
    });
    let cid_of = |t: &str, v: &str| w.customer_of(t, v);
    wait_until(Duration::from_secs(60), "merged identities", || {
        let a = cid_of("telegram", "424242");
        !a.is_empty() && a == cid_of("user_id", "shop-user-77")
    });
    let cid = cid_of("telegram", "424242");
    assert!(cid.starts_with("c_"), "{cid}");
    assert_eq!(cid_of("phone", "+14155550123"), cid);
    assert_eq!(cid_of("email", "olga@example.com"), cid);
    // the friend's number is linked to nobody
    assert_eq!(cid_of("phone", "+14155550199"), "");
    assert_eq!(
        w.query_u64(&format!(
            "SELECT count() FROM v_events WHERE customer_id = '{cid}'"
        )),
        4
    );

    w.wait_caught_up();
    let p = w.profile_json("telegram:424242");
    assert_eq!(p["customer_id"], cid.as_str());
    let ids = profile_identifiers(&p);
    for want in [
        "telegram:424242",
        "phone:+14155550123",
        "user_id:shop-user-77",
        "email:olga@example.com",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert_eq!(p["channels"], json!(["support", "web"]));
    assert_eq!(p["event_counts"]["message"], 3);
    assert_eq!(p["traits"]["telegram_username"], "olga_iv");
}

#[test]
fn refused_token_stops_the_run_with_the_fix_and_no_secret_in_the_log() {
    let server = BlockingFakeServer::start(|| fake::router(FakeData::generate(10, 1)));
    let mut w = World::new("tg_auth");
    w.add_connector(
        "tg_bad",
        &connector_body(&server.base_url, "${TG_TEST_TOKEN}", ""),
    );
    let wrong = "7100200300:AAwrongSecretWrongSecret-zzz";
    let out = w.run_connector_once_env("tg_bad", &[], &[("TG_TEST_TOKEN", wrong)]);
    assert!(!out.status.success(), "a refused token must fail the run");
    let log = w.log("connector-tg_bad");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for text in [&log, &stdout.to_string()] {
        assert!(
            !text.contains("AAwrongSecretWrongSecret"),
            "token leaked: {text}"
        );
    }
    assert!(log.contains("tg_bad"), "{log}");
    assert!(log.contains("@BotFather"), "{log}");
    assert!(log.contains("connectors.tg_bad.bot_token"), "{log}");
    assert!(log.contains("401"), "{log}");
    // the refusal came from the API (the token reached the fake), and stopped at once
    assert!(server.controls.seen().iter().all(|s| s.status == 401));
    assert_eq!(server.controls.seen().len(), 1);
}
