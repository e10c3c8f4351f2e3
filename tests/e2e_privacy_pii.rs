//! PII protection end to end (docs/privacy.md): with `[privacy]` hashing emails,
//! phones and address traits, nothing stored after the pipeline (ClickHouse tables,
//! `crm.profiles`, `crm.identity`, the identity store on disk) holds a clear value,
//! the same person is still linked across devices, and the CLI and the HTTP API
//! find a profile from the clear value. IP addresses follow `privacy.ip` in the
//! collector (before Kafka) and in the pipeline (events from any other producer).

mod common;

use std::time::Duration;

use common::{consume_all, free_port, http, produce_raw, wait_until, World};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// SHA-256(salt ‖ 0x00 ‖ value), written independently of the product's code.
fn expected_hash(salt: &str, value: &str) -> String {
    let mut input = salt.as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(value.as_bytes());
    let d = Sha256::digest(&input);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Clear values that must not be stored anywhere after the pipeline.
const CLEAR: &[&str] = &[
    "ann@example.com",
    "Ann@Example",
    "4155550123",
    "415) 555",
    "Elm Street",
    "noreply@example.com",
    "ann-at-example",
];

fn assert_no_clear(what: &str, text: &str) {
    for c in CLEAR {
        assert!(
            !text.to_lowercase().contains(&c.to_lowercase()),
            "{what} holds the clear value {c:?}:\n{text}"
        );
    }
}

fn topic_text(topic: &str, min: usize) -> String {
    consume_all(topic, min, Duration::from_secs(20))
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{} {}\n",
                k.unwrap_or_default(),
                String::from_utf8_lossy(&v.unwrap_or_default())
            )
        })
        .collect()
}

/// Produces a canonical event of `source` `other` to `crm.events` directly (as a
/// producer other than the collector would), then waits until the pipeline caught
/// up and `total` events are stored.
fn produce_other_and_wait(w: &World, kind: &str, identifiers: Value, context: Value, total: u64) {
    let key = format!(
        "{}:{}",
        identifiers[0]["type"].as_str().unwrap_or_default(),
        identifiers[0]["value"].as_str().unwrap_or_default()
    );
    let ev = json!({
        "schema_version": 1, "event_id": format!("other:{kind}"), "source": "other",
        "channel": "web", "type": kind, "occurred_at": "2026-03-04T10:00:00Z",
        "received_at": "2026-03-04T10:00:00Z", "identifiers": identifiers, "context": context
    });
    produce_raw(&w.topics().events, &[(key, ev.to_string().into_bytes())]);
    w.wait_caught_up();
    wait_until(Duration::from_secs(60), "events stored", || {
        w.query_u64("SELECT count() FROM events FINAL") == total
    });
}

/// Every file under `dir`, as (lossy) text.
fn files_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).expect("state dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&files_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

#[test]
fn hashed_identifiers_and_traits_are_all_that_is_stored_and_lookups_still_work() {
    let mut w = World::new("pii");
    let salt = format!("e2e-pii-salt-{:08x}", rand::random::<u32>());
    let api_port = free_port();
    w.append_config(&format!(
        "[privacy]\nsalt = \"{salt}\"\nhash_identifier_types = [\"email\", \"phone\"]\n\
         hash_traits = [\"email\", \"phone\", \"address\"]\n\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
         keys = [{{ name = \"t\", key = \"pii-api-key-123\", scopes = [\"read\"] }}]\n"
    ));
    w.start_collector();
    let pipeline = w.start_pipeline();

    let ok = |body: Value, path: &str| {
        let r = w.post(path, &body);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    };
    ok(
        json!({"userId": "u-ann", "anonymousId": "laptop-1", "messageId": "m1",
            "traits": {"email": " Ann@Example.COM", "phone": "(415) 555-0123", "name": "Ann Lee",
                       "address": {"street": "1 Elm Street", "city": "Springfield"}},
            "context": {"ip": "203.0.113.77"}, "timestamp": "2026-03-01T10:00:00Z"}),
        "/v1/identify",
    );
    // her phone, another day, the same address written differently
    ok(
        json!({"anonymousId": "phone-7", "event": "Viewed", "messageId": "m2",
            "context": {"traits": {"email": "ann@EXAMPLE.com"}},
            "timestamp": "2026-03-02T10:00:00Z"}),
        "/v1/track",
    );
    // a blocked address (default pattern ^noreply@) and an invalid one
    ok(
        json!({"userId": "u-bob", "messageId": "m3", "traits": {"email": "noreply@example.com"},
            "timestamp": "2026-03-03T10:00:00Z"}),
        "/v1/identify",
    );
    // from another producer, with an address that is not one
    let invalid = json!([{"type": "user_id", "value": "u-carl"},
                         {"type": "email", "value": "ann-at-example"}]);
    produce_other_and_wait(&w, "identify", invalid, json!({}), 4);

    // one person across devices, linked through the hash of the same address
    let h_email = expected_hash(&salt, "ann@example.com");
    let h_phone = expected_hash(&salt, "+14155550123");
    let ann = w.customer_of("user_id", "u-ann");
    assert!(!ann.is_empty());
    assert_eq!(w.customer_of("anonymous_id", "phone-7"), ann);
    assert_eq!(w.customer_of("email", &h_email), ann);
    assert_eq!(w.customer_of("phone", &h_phone), ann);
    let traits = w.query(&format!(
        "SELECT traits FROM profiles FINAL WHERE customer_id = '{ann}'"
    ));
    assert!(
        traits.contains(&h_email) && traits.contains(&h_phone),
        "{traits}"
    );
    assert!(
        traits.contains("Ann Lee"),
        "traits not listed stay clear: {traits}"
    );
    let rejected = w.query(
        "SELECT rule, id_value, reason FROM identity_ledger FINAL WHERE action = 'reject' ORDER BY rule",
    );
    assert!(
        rejected.contains(&format!(
            "blocked_value\t{}",
            expected_hash(&salt, "noreply@example.com")
        )),
        "{rejected}"
    );
    assert!(
        rejected.contains(&format!(
            "invalid\t{}",
            expected_hash(&salt, "ann-at-example")
        )),
        "{rejected}"
    );

    // nothing after the pipeline holds a clear value
    for table in [
        "events",
        "events_by_id",
        "identities",
        "identity_ledger",
        "profiles",
        "customer_aliases",
    ] {
        let dump = w.query(&format!("SELECT * FROM {table} FORMAT TSV"));
        assert!(
            !dump.trim().is_empty() || table == "customer_aliases",
            "{table} is empty"
        );
        assert_no_clear(&format!("ClickHouse table {table}"), &dump);
    }
    let t = w.topics();
    assert_no_clear("crm.profiles", &topic_text(&t.profiles, 1));
    assert_no_clear("crm.identity", &topic_text(&t.identity, 1));
    let store = files_text(&w.dir.path().join("state"));
    assert!(store.contains(&h_email), "the store holds the hash");
    assert_no_clear("the identity store", &store);
    // the input topic is the raw input (docs/privacy.md): clear, with the IP truncated
    let input = topic_text(&t.events, 4);
    assert!(input.contains("ann@example.com"), "{input}");
    assert!(
        input.contains("\"ip\":\"203.0.113.0\"") && !input.contains("203.0.113.77"),
        "{input}"
    );

    // lookups from the clear value, written any way the normaliser accepts
    let p = w.profile_json("email:ANN@example.com");
    assert_eq!(p["customer_id"], json!(ann));
    let ids = common::profile_identifiers(&p);
    assert!(
        ids.contains(&format!("email:{h_email}").as_str()),
        "{ids:?}"
    );
    assert_eq!(
        w.profile_json("phone:+1 (415) 555-0123")["customer_id"],
        json!(ann)
    );
    assert_eq!(
        w.profile_json(&format!("email:{h_email}"))["customer_id"],
        json!(ann),
        "a hash copied from a profile is looked up as it is"
    );
    let explain = w.cli_ok(&["identity", "explain", "email:ann@example.com"]);
    assert!(
        explain.contains(&ann) && explain.contains("user_id:u-ann"),
        "{explain}"
    );
    // an unlink typed in clear detaches the hashed identifier
    w.cli_ok(&[
        "identity",
        "unlink",
        "phone:(415) 555-0123",
        "--note",
        "pii test",
    ]);
    let phone_owner = w.customer_of("phone", &h_phone);
    assert!(
        !phone_owner.is_empty() && phone_owner != ann,
        "{phone_owner}"
    );
    assert_eq!(w.customer_of("email", &h_email), ann);

    let base = w.start_api(api_port);
    let get = |path: &str| {
        let r = http::get_with_key(&format!("{base}{path}"), "pii-api-key-123");
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v, r.body)
    };
    let (st, v, body) = get("/v1/profiles/lookup?id=email:Ann%40Example.com");
    assert_eq!(st, 200, "{body}");
    assert_eq!(v["customer_id"], json!(ann), "{body}");
    assert_no_clear("the API's profile", &body);
    let (st, v, body) = get("/v1/profiles?q=ann%40example.com");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains(&ann), "an exact address finds its hash: {v}");
    // a prefix of a hashed address cannot match (documented)
    let (st, _, body) = get("/v1/profiles?q=ann%40exa");
    assert_eq!(st, 200, "{body}");
    assert!(!body.contains(&ann), "{body}");

    // other hashing settings on the same store are refused at start, naming [privacy]
    let _ = w.child(pipeline).kill();
    let _ = w.child(pipeline).wait();
    let cfg = std::fs::read_to_string(&w.config).expect("config");
    std::fs::write(&w.config, cfg.replace(&salt, "another-salt-of-16-chars")).expect("config");
    let out = w.cli(&["pipeline", "--exit-when-idle-secs", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[privacy]") && err.contains("state_dir"),
        "{err}"
    );
    assert!(
        !err.contains("another-salt"),
        "the salt is never printed: {err}"
    );
}

/// The collector's and the pipeline's handling of `context.ip` under `mode`:
/// (ip on crm.events for the collector's v4 and v6 events, ips stored in ClickHouse
/// for those and for a raw event from another producer).
fn ips_under(mode: Option<&str>) -> (String, String) {
    let mut w = World::new(&format!("ip_{}", mode.unwrap_or("default")));
    if let Some(mode) = mode {
        w.append_config(&format!("[privacy]\nip = \"{mode}\"\n"));
    }
    w.start_collector();
    w.start_pipeline();
    let r = w.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "track", "event": "A", "userId": "u-1", "messageId": "v4",
             "context": {"ip": "203.0.113.77"}},
            {"type": "page", "userId": "u-1", "messageId": "v6",
             "context": {"ip": "2001:db8:85a3:8d3:1319:8a2e:370:7348", "locale": "de-DE"}}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ids = json!([{"type": "user_id", "value": "u-1"}]);
    produce_other_and_wait(&w, "page", ids, json!({"ip": "198.51.100.23"}), 3);
    let mut on_topic: Vec<String> = consume_all(&w.topics().events, 3, Duration::from_secs(20))
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<Value>(&v?).ok())
        .filter(|e| e["source"] == json!("web"))
        .map(|e| e["context"]["ip"].as_str().unwrap_or("-").to_string())
        .collect();
    on_topic.sort();
    let stored = w.query(
        "SELECT if(visitParamHas(context, 'ip'), visitParamExtractString(context, 'ip'), '-') AS ip \
         FROM events FINAL ORDER BY ip FORMAT TSV",
    );
    (
        on_topic.join(" "),
        stored.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

#[test]
fn ip_addresses_are_truncated_by_default() {
    let (topic, stored) = ips_under(None);
    assert_eq!(topic, "2001:db8:85a3:: 203.0.113.0");
    assert_eq!(stored, "198.51.100.0 2001:db8:85a3:: 203.0.113.0");
}

#[test]
fn ip_addresses_can_be_dropped() {
    let (topic, stored) = ips_under(Some("drop"));
    assert_eq!(topic, "- -");
    assert_eq!(stored, "- - -");
}

#[test]
fn ip_addresses_can_be_kept() {
    let (topic, stored) = ips_under(Some("keep"));
    assert_eq!(topic, "2001:db8:85a3:8d3:1319:8a2e:370:7348 203.0.113.77");
    assert_eq!(
        stored,
        "198.51.100.23 2001:db8:85a3:8d3:1319:8a2e:370:7348 203.0.113.77"
    );
}
