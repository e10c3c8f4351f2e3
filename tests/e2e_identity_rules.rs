//! End to end: identity rules, the ledger, explain, unlink, rebuild and simulate
//! on the real collector, pipeline, Kafka and ClickHouse (docs/identity.md).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socialcrm_schemas::json_schema;

fn customer(w: &World, t: &str, v: &str) -> String {
    w.query(&format!(
        "SELECT customer_id FROM identities FINAL WHERE id_type = '{t}' AND id_value = '{v}' AND is_active = 1"
    ))
    .trim()
    .to_string()
}

#[test]
fn shared_computer_unlink_replay_explain_rebuild_and_simulate() {
    let mut w = World::new("idrules");
    w.start_collector();
    w.start_pipeline();

    // a family computer: Ann logs in, later Bob logs in on the same browser
    let sends = [
        json!({"type": "page", "anonymousId": "family-pc", "messageId": "p1", "timestamp": "2026-10-01T09:00:00Z"}),
        json!({"type": "identify", "anonymousId": "family-pc", "userId": "ann", "messageId": "i1",
               "traits": {"email": "ann@shop.io"}, "timestamp": "2026-10-01T09:05:00Z"}),
    ];
    let r = w.post("/v1/batch", &json!({"batch": sends}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "ann's events", || {
        w.query_u64("SELECT count() FROM events FINAL") == 2
    });
    let r = w.post(
        "/v1/identify",
        &json!({"anonymousId": "family-pc", "userId": "bob", "messageId": "i2",
                "traits": {"email": "bob@shop.io"}, "timestamp": "2026-10-02T20:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Bob's order from his phone, with his email only
    let r = w.post(
        "/v1/track",
        &json!({"anonymousId": "bob-phone", "messageId": "o1", "event": "Order Completed",
                "properties": {"total": 12, "currency": "EUR"},
                "context": {"traits": {"email": "bob@shop.io"}}, "timestamp": "2026-10-03T08:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "all events", || {
        w.query_u64("SELECT count() FROM events FINAL") == 4
    });
    w.wait_caught_up();

    let ann = customer(&w, "user_id", "ann");
    let bob = customer(&w, "user_id", "bob");
    assert!(ann.starts_with("c_") && bob.starts_with("c_"));
    assert_ne!(ann, bob, "a shared cookie must not merge two user ids");
    assert_eq!(customer(&w, "anonymous_id", "family-pc"), ann);
    assert_eq!(customer(&w, "email", "bob@shop.io"), bob);
    assert_eq!(customer(&w, "anonymous_id", "bob-phone"), bob);
    // the refused link is in the ledger with its rule and event
    let refused = w.query(
        "SELECT id_type, id_value, rule, event_id FROM identity_ledger FINAL WHERE action = 'reject' FORMAT TSV",
    );
    assert!(
        refused.contains("anonymous_id\tfamily-pc\tidentifier_limit\t"),
        "{refused}"
    );

    // explain shows the chain
    let text = w.cli_ok(&["identity", "explain", "user_id:bob"]);
    assert!(text.contains(&bob), "{text}");
    assert!(text.contains("email:bob@shop.io linked to"), "{text}");
    assert!(
        text.contains("anonymous_id:family-pc refused (identifier_limit"),
        "{text}"
    );

    // Bob's order email turns out to be a shared household address: unlink it
    let text = w.cli_ok(&[
        "identity",
        "unlink",
        "email:bob@shop.io",
        "--note",
        "ticket 7",
    ]);
    assert!(text.contains("applied by the pipeline"), "{text}");
    assert!(text.contains("unlink"), "{text}");
    let email_cid = customer(&w, "email", "bob@shop.io");
    assert_ne!(email_cid, bob);
    // the order's strongest identifier was the email: the event follows it (the
    // ClickHouse mutation runs in the background)
    let start = std::time::Instant::now();
    while w
        .query("SELECT customer_id FROM v_events WHERE event_id = 'web:o1'")
        .trim()
        != email_cid
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the order was not re-attributed to {email_cid}: {}\n{}\n{}\n{}",
            w.query("SELECT event_id, customer_id, primary_id FROM events FINAL FORMAT TSV"),
            w.query("SELECT event_id, customer_id FROM v_events FORMAT TSV"),
            w.query("SELECT * FROM customer_aliases FORMAT TSV"),
            w.log("pipeline")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.wait_caught_up();
    let b = w.profile_json("user_id:bob");
    assert_eq!(b["customer_id"], bob.as_str());
    let ids = profile_identifiers(&b);
    assert!(!ids.contains(&"email:bob@shop.io"), "{ids:?}");
    let e = w.profile_json("email:bob@shop.io");
    assert_eq!(e["order_count"], 1);

    // a new event that links them again does not glue them back
    let r = w.post(
        "/v1/identify",
        &json!({"userId": "bob", "messageId": "i3", "traits": {"email": "bob@shop.io"},
                "timestamp": "2026-10-05T08:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(60), "the new identify", || {
        w.query_u64("SELECT count() FROM events FINAL WHERE event_id = 'web:i3'") == 1
    });
    w.wait_caught_up();
    assert_ne!(
        customer(&w, "email", "bob@shop.io"),
        customer(&w, "user_id", "bob")
    );
    let refused = w.query(
        "SELECT count() FROM identity_ledger FINAL WHERE action = 'reject' AND rule = 'unlinked' AND event_id = 'web:i3'",
    );
    assert_eq!(refused.trim(), "1");

    // every message on crm.identity and crm.identity.commands validates
    let t = w.topics();
    let ident: Vec<Vec<u8>> = consume_all(&t.identity, 1, Duration::from_secs(20))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    let ident = assert_all_valid(json_schema::IDENTITY, &ident, "crm.identity");
    for action in ["create", "link", "reject", "unlink", "split"] {
        assert!(
            ident.iter().any(|m| m["action"] == action),
            "no {action} on crm.identity"
        );
    }
    let cmds: Vec<Vec<u8>> = consume_all(&t.commands, 1, Duration::from_secs(20))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    assert_all_valid(
        json_schema::IDENTITY_COMMAND,
        &cmds,
        "crm.identity.commands",
    );
    let profiles: Vec<Vec<u8>> = consume_all(&t.profiles, 1, Duration::from_secs(20))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    assert_all_valid(json_schema::PROFILE, &profiles, "crm.profiles");

    // the ledger alone gives back exactly the mapping
    let text = w.cli_ok(&["identity", "rebuild"]);
    assert!(text.contains("identical to crm.identities"), "{text}");

    // simulate: blocking Bob's address would divide the profile it joins (his
    // login and his phone), and nothing changes for real
    let rules = w.dir.path().join("strict.toml");
    std::fs::write(&rules, "[identity]\nblocked_values = [\"bob@shop.io\"]\n").expect("rules file");
    let before = w.query(
        "SELECT customer_id, id_type, id_value FROM identities FINAL ORDER BY id_type, id_value",
    );
    let text = w.cli_ok(&[
        "identity",
        "simulate",
        "--rules",
        &rules.display().to_string(),
        "--json",
    ]);
    let sim: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(sim["splits"], 1, "{sim}");
    assert_eq!(sim["newly_blocked"], 1, "{sim}");
    assert_eq!(
        before,
        w.query("SELECT customer_id, id_type, id_value FROM identities FINAL ORDER BY id_type, id_value")
    );

    // a command for an unknown profile is refused at the CLI
    let out = w.cli(&["identity", "split", "c_doesnotexist", "email:x@shop.io"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a live profile"));

    // a malformed or impossible command on the topic goes to the DLQ with the
    // reason, and the pipeline keeps applying events
    let t = w.topics();
    let impossible = json!({"schema_version": 1, "command_id": "cmd-bad", "action": "unlink",
        "customer_id": bob, "identifiers": [{"type": "user_id", "value": "bob"}], "others": [],
        "requested_at": "2026-10-06T00:00:00Z"});
    produce_raw(
        &t.commands,
        &[
            ("cmd-junk".into(), b"not a command".to_vec()),
            ("cmd-bad".into(), impossible.to_string().into_bytes()),
        ],
    );
    let dlq: Vec<Vec<u8>> = consume_all(&t.dlq, 2, Duration::from_secs(30))
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect();
    let dlq = assert_all_valid(json_schema::DLQ, &dlq, "crm.dlq");
    assert_eq!(
        dlq.iter()
            .filter(|m| m["error_code"] == "bad_command")
            .count(),
        2,
        "{dlq:?}"
    );
    assert!(dlq.iter().any(|m| m["reason"]
        .as_str()
        .is_some_and(|r| r.contains("both sides"))));
    let r = w.post(
        "/v1/page",
        &json!({"userId": "bob", "messageId": "p9", "timestamp": "2026-10-07T08:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(
        Duration::from_secs(60),
        "an event after the bad commands",
        || w.query_u64("SELECT count() FROM events FINAL WHERE event_id = 'web:p9'") == 1,
    );
}
