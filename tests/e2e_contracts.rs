//! End to end: the contracts of the topics downstream services consume
//! (docs/consumers.md). A realistic mix of Segment calls (identify, track, page,
//! orders, an alias that merges two profiles, a junk user id), an operator's
//! unlink and a scoring run go through the real collector and pipeline; then every
//! message on `crm.profiles`, `crm.identity` and `crm.dlq` must validate against
//! its JSON Schema and parse into the published Rust types, and the latest message
//! per key of `crm.profiles` must rebuild exactly the live rows of `profiles FINAL`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Map, Value};
use socialcrm_schemas::json_schema;
use socialcrm_schemas::messages::{DlqMessage, IdentityAction, IdentityMessage, Profile};

fn send(w: &World, path: &str, body: Value) {
    let r = w.post(path, &body);
    assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
}

/// What a consumer that read `crm.profiles` from the beginning holds: the newest
/// profile per key, tombstones applied. Independent of the example consumer on
/// purpose (it is the oracle the example is documented against).
#[derive(Default)]
struct Rebuilt {
    live: BTreeMap<String, Profile>,
    /// keys whose latest message is a tombstone
    deleted: BTreeSet<String>,
}

fn rebuild(msgs: &[(Option<String>, Option<Vec<u8>>)]) -> Rebuilt {
    let mut r = Rebuilt::default();
    // the highest version seen per key, tombstones included: one key is on one
    // partition, and a partition is read in order, so versions must never go back
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (key, payload) in msgs {
        let key = key.clone().expect("every crm.profiles message has a key");
        match payload {
            None => {
                r.live.remove(&key);
                r.deleted.insert(key);
            }
            Some(bytes) => {
                let p: Profile = serde_json::from_slice(bytes).expect("a Profile");
                assert_eq!(p.customer_id, key, "key is the customer_id");
                if let Some(v) = seen.get(&key) {
                    assert!(
                        p.version >= *v,
                        "{key}: version {} after {v} on the same partition",
                        p.version
                    );
                }
                seen.insert(key.clone(), p.version);
                r.deleted.remove(&key);
                r.live.insert(key, p);
            }
        }
    }
    r
}

/// `profiles FINAL`, one JSON object per customer (numbers as ClickHouse prints them).
fn clickhouse_profiles(w: &World) -> BTreeMap<String, Value> {
    let text = w.query(
        "SELECT customer_id, version, is_active, merged_into, identifier_types, identifier_values, \
         traits, channels, sources, event_count, event_count_types, event_count_values, \
         channel_count_keys, channel_count_values, toUInt32(first_seen) AS first_seen_s, \
         toUInt32(last_seen) AS last_seen_s, order_count, revenue_currencies, revenue_amounts, \
         engagement_score, influence_score, lifecycle_stage, score_components, merged_from, \
         toUInt32(updated_at) AS updated_at_s, flags \
         FROM profiles FINAL FORMAT JSONEachRow",
    );
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSONEachRow");
            (v["customer_id"].as_str().expect("id").to_string(), v)
        })
        .collect()
}

/// ClickHouse prints 64-bit integers quoted.
fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().expect("integer"),
        v => v.as_u64().expect("integer"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn json_column(v: &Value) -> Map<String, Value> {
    match v.as_str().expect("string column") {
        "" => Map::new(),
        s => serde_json::from_str(s).expect("JSON column"),
    }
}

fn counts(keys: &Value, values: &Value) -> BTreeMap<String, u64> {
    let vals = values.as_array().expect("array");
    strings(keys)
        .into_iter()
        .zip(vals.iter().map(int))
        .collect()
}

/// A live `profiles FINAL` row in the published form (field name → value).
fn row_fields(row: &Value) -> BTreeMap<&'static str, Value> {
    let ids: Vec<String> = strings(&row["identifier_types"])
        .iter()
        .zip(strings(&row["identifier_values"]))
        .map(|(t, v)| format!("{t}:{v}"))
        .collect();
    let amounts = row["revenue_amounts"].as_array().expect("array");
    let revenue: BTreeMap<String, f64> = strings(&row["revenue_currencies"])
        .into_iter()
        .zip(amounts.iter().map(|a| a.as_f64().expect("f64")))
        .collect();
    BTreeMap::from([
        ("identifiers", json!(ids)),
        ("version", json!(int(&row["version"]))),
        ("merged_into", row["merged_into"].clone()),
        ("traits", Value::Object(json_column(&row["traits"]))),
        ("channels", row["channels"].clone()),
        ("sources", row["sources"].clone()),
        ("event_count", json!(int(&row["event_count"]))),
        (
            "event_counts",
            json!(counts(
                &row["event_count_types"],
                &row["event_count_values"]
            )),
        ),
        (
            "channel_counts",
            json!(counts(
                &row["channel_count_keys"],
                &row["channel_count_values"]
            )),
        ),
        ("first_seen", row["first_seen_s"].clone()),
        ("last_seen", row["last_seen_s"].clone()),
        ("order_count", json!(int(&row["order_count"]))),
        ("revenue", json!(revenue)),
        ("engagement_score", json!(row["engagement_score"].as_f64())),
        ("influence_score", json!(row["influence_score"].as_f64())),
        ("lifecycle_stage", row["lifecycle_stage"].clone()),
        (
            "score_components",
            Value::Object(json_column(&row["score_components"])),
        ),
        ("merged_from", row["merged_from"].clone()),
        ("updated_at", row["updated_at_s"].clone()),
        ("flags", row["flags"].clone()),
    ])
}

/// The same fields of a `crm.profiles` message (a live profile is merged into nobody).
fn message_fields(p: &Profile) -> BTreeMap<&'static str, Value> {
    let ids: Vec<String> = p.identifiers.iter().map(|i| i.key()).collect();
    BTreeMap::from([
        ("identifiers", json!(ids)),
        ("version", json!(p.version)),
        ("merged_into", json!("")),
        ("traits", Value::Object(p.traits.clone())),
        ("channels", json!(p.channels)),
        ("sources", json!(p.sources)),
        ("event_count", json!(p.event_count)),
        ("event_counts", json!(p.event_counts)),
        ("channel_counts", json!(p.channel_counts)),
        ("first_seen", json!(p.first_seen.timestamp())),
        ("last_seen", json!(p.last_seen.timestamp())),
        ("order_count", json!(p.order_count)),
        ("revenue", json!(p.revenue)),
        ("engagement_score", json!(p.engagement_score)),
        ("influence_score", json!(p.influence_score)),
        ("lifecycle_stage", json!(p.lifecycle_stage)),
        (
            "score_components",
            Value::Object(p.score_components.clone()),
        ),
        ("merged_from", json!(p.merged_from)),
        ("updated_at", json!(p.updated_at.timestamp())),
        ("flags", json!(p.flags)),
    ])
}

/// Differences between a live `profiles FINAL` row and the profile a consumer rebuilt.
fn differences(row: &Value, p: &Profile) -> Vec<String> {
    let kafka = message_fields(p);
    row_fields(row)
        .into_iter()
        .filter(|(field, ch)| kafka.get(field) != Some(ch))
        .map(|(field, ch)| format!("{field}: clickhouse {ch} vs crm.profiles {}", kafka[field]))
        .collect()
}

/// Everything that differs between `profiles FINAL` and the rebuilt topic; empty
/// when a consumer holds exactly the profiles table.
fn table_vs_topic(ch: &BTreeMap<String, Value>, topic: &Rebuilt) -> Vec<String> {
    let mut d = Vec::new();
    for (cid, row) in ch {
        let active = int(&row["is_active"]) == 1;
        match (active, topic.live.get(cid)) {
            (true, Some(p)) => d.extend(
                differences(row, p)
                    .into_iter()
                    .map(|x| format!("{cid}: {x}")),
            ),
            (true, None) => d.push(format!("{cid}: live in ClickHouse, not on crm.profiles")),
            (false, Some(_)) => d.push(format!(
                "{cid}: inactive in ClickHouse, live on crm.profiles"
            )),
            (false, None) if !topic.deleted.contains(cid) => d.push(format!(
                "{cid}: inactive in ClickHouse but crm.profiles has no tombstone for it"
            )),
            (false, None) => {}
        }
    }
    for cid in topic.live.keys().filter(|c| !ch.contains_key(*c)) {
        d.push(format!("{cid}: on crm.profiles, not in ClickHouse"));
    }
    d
}

fn payloads(msgs: &[(Option<String>, Option<Vec<u8>>)]) -> Vec<Vec<u8>> {
    msgs.iter().filter_map(|(_, p)| p.clone()).collect()
}

#[test]
fn consumed_topics_match_their_schemas_and_rebuild_the_profiles_table() {
    let mut w = World::new("contracts");
    // explicit scoring runs only, applied to the profiles within a second
    w.append_config("[scoring]\ninterval_secs = 0\napply_poll_secs = 1");
    w.start_collector();
    w.start_pipeline();
    let t = w.topics();

    // Ann browses anonymously on her laptop, and separately logs in with her user
    // id on another device: two profiles for now
    let utm =
        json!({"campaign": {"name": "autumn-sale", "source": "newsletter", "medium": "email"}});
    send(
        &w,
        "/v1/page",
        json!({"anonymousId": "ann-laptop", "messageId": "c-p1", "name": "Home",
               "properties": {"url": "https://shop.example/"}, "context": utm,
               "timestamp": "2026-11-01T09:00:00Z"}),
    );
    send(
        &w,
        "/v1/track",
        json!({"anonymousId": "ann-laptop", "messageId": "c-t1", "event": "Product Viewed",
               "properties": {"product_id": "sku-12", "category": "shoes", "price": 59.9},
               "timestamp": "2026-11-01T09:02:00Z"}),
    );
    send(
        &w,
        "/v1/identify",
        json!({"userId": "ann-1", "messageId": "c-i1",
               "traits": {"email": "Ann.Lee@Example.com", "phone": "+1 415 555 0101",
                          "name": "Ann Lee", "plan": "pro"},
               "timestamp": "2026-11-02T10:00:00Z"}),
    );
    // Bob: login on his phone, two orders in USD
    send(
        &w,
        "/v1/batch",
        json!({"batch": [
            {"type": "identify", "userId": "bob-7", "anonymousId": "bob-phone", "messageId": "c-i2",
             "traits": {"email": "bob@example.com", "name": "Bob Stone"}, "timestamp": "2026-11-02T18:00:00Z"},
            {"type": "track", "userId": "bob-7", "messageId": "c-o1", "event": "Order Completed",
             "properties": {"order_id": "1001", "total": 20, "currency": "USD",
                            "products": [{"product_id": "sku-3", "category": "bags", "price": 20}]},
             "timestamp": "2026-11-03T08:00:00Z"},
            {"type": "track", "anonymousId": "bob-phone", "messageId": "c-o2", "event": "Order Completed",
             "properties": {"order_id": "1002", "revenue": 15.5, "currency": "USD"},
             "timestamp": "2026-11-05T08:00:00Z"},
            {"type": "screen", "anonymousId": "bob-phone", "messageId": "c-s1", "name": "Cart",
             "timestamp": "2026-11-05T08:05:00Z"}
        ]}),
    );
    // Dana logs in with the family's shared address; her tablet orders with it
    send(
        &w,
        "/v1/identify",
        json!({"userId": "dana", "anonymousId": "dana-laptop", "messageId": "c-i3",
               "traits": {"email": "family@example.com", "name": "Dana Cole"},
               "timestamp": "2026-11-05T12:00:00Z"}),
    );
    send(
        &w,
        "/v1/track",
        json!({"anonymousId": "tablet-9", "messageId": "c-o3", "event": "Order Completed",
               "properties": {"order_id": "1003", "total": 12, "currency": "EUR"},
               "context": {"traits": {"email": "family@example.com"}},
               "timestamp": "2026-11-06T19:00:00Z"}),
    );
    // a junk user id (refused, recorded) and a plain anonymous visitor
    send(
        &w,
        "/v1/identify",
        json!({"userId": "undefined", "anonymousId": "eve-anon", "messageId": "c-i4",
               "traits": {"name": "Eve"}, "timestamp": "2026-11-06T20:00:00Z"}),
    );
    send(
        &w,
        "/v1/page",
        json!({"anonymousId": "carl-anon", "messageId": "c-p2", "name": "Pricing",
               "timestamp": "2026-11-07T07:00:00Z"}),
    );
    // something that is not an event, straight onto the topic: crm.dlq
    produce_raw(
        &t.events,
        &[("junk".into(), b"{\"not\": \"an event\"".to_vec())],
    );
    wait_until(Duration::from_secs(60), "the first events", || {
        w.query_u64("SELECT count() FROM events FINAL") == 11
    });

    // Ann's laptop cookie turns out to be her: the alias merges the two profiles
    // (the laptop's is older, so it survives)
    send(
        &w,
        "/v1/alias",
        json!({"previousId": "ann-laptop", "userId": "ann-1", "messageId": "c-a1",
               "timestamp": "2026-11-08T09:00:00Z"}),
    );
    send(
        &w,
        "/v1/track",
        json!({"userId": "ann-1", "messageId": "c-o4", "event": "Order Completed",
               "properties": {"order_id": "1004", "total": 59.9, "currency": "EUR",
                              "products": [{"product_id": "sku-12", "category": "shoes", "price": 59.9}]},
               "context": utm, "timestamp": "2026-11-08T09:30:00Z"}),
    );
    wait_until(Duration::from_secs(60), "every event", || {
        w.query_u64("SELECT count() FROM events FINAL") == 13
    });
    w.wait_caught_up();
    let ann = w.customer_of("user_id", "ann-1");
    assert_eq!(w.customer_of("anonymous_id", "ann-laptop"), ann);
    let ann_login = w
        .query(&format!(
            "SELECT retired_id FROM customer_aliases FINAL WHERE survivor_id = '{ann}'"
        ))
        .trim()
        .to_string();
    assert!(ann_login.starts_with("c_"), "no alias row for {ann}");

    // the shared address is detached from Dana: unlink + split on crm.identity
    let dana = w.customer_of("user_id", "dana");
    let text = w.cli_ok(&[
        "identity",
        "unlink",
        "email:family@example.com",
        "--note",
        "shared family address",
    ]);
    assert!(text.contains("applied by the pipeline"), "{text}");
    w.wait_caught_up();
    let family = w.customer_of("email", "family@example.com");
    assert_ne!(family, dana);

    // the events are where v_events puts them once the unlink's mutation is done
    wait_until(
        Duration::from_secs(60),
        "the order follows the unlinked email",
        || {
            w.query("SELECT customer_id FROM v_events WHERE event_id = 'web:c-o3'")
                .trim()
                == family
        },
    );

    // then a scoring run (it reads v_events); the pipeline applies it to ClickHouse and crm.profiles
    w.cli_ok(&["score", "run"]);
    wait_until(
        Duration::from_secs(60),
        "scores applied to every live profile with events",
        || {
            // the run scores customers with events; an unlink can leave profiles of
            // identifiers without events of their own
            w.query_u64(
                "SELECT count() FROM profiles FINAL WHERE is_active = 1 AND event_count > 0 AND score_components = ''",
            ) == 0
        },
    );

    // crm.profiles: a consumer from the beginning holds exactly the live profiles
    // table. ClickHouse is written before Kafka in each batch, so give the last
    // batch's messages a moment to arrive, then compare strictly.
    let ch = clickhouse_profiles(&w);
    let start = Instant::now();
    let (profile_msgs, topic) = loop {
        let msgs = consume_all(&t.profiles, 1, Duration::from_secs(20));
        let topic = rebuild(&msgs);
        let diff = table_vs_topic(&ch, &topic);
        if diff.is_empty() {
            break (msgs, topic);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "crm.profiles does not rebuild profiles FINAL:\n  {}",
            diff.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_all_valid(
        json_schema::PROFILE,
        &payloads(&profile_msgs),
        "crm.profiles",
    );

    // what the scenario must have produced, seen by a consumer
    let a = &topic.live[&ann];
    assert!(a.merged_from.contains(&ann_login), "{:?}", a.merged_from);
    assert!(
        topic.deleted.contains(&ann_login),
        "no tombstone for {ann_login}"
    );
    let ids: Vec<String> = a.identifiers.iter().map(|i| i.key()).collect();
    for want in [
        "anonymous_id:ann-laptop",
        "user_id:ann-1",
        "email:ann.lee@example.com",
        "phone:+14155550101",
    ] {
        assert!(ids.contains(&want.to_string()), "{want} not in {ids:?}");
    }
    assert_eq!(a.event_count, 5);
    assert_eq!(a.order_count, 1);
    assert_eq!(a.revenue.get("EUR"), Some(&59.9));
    assert_eq!(a.traits["name"], "Ann Lee");
    assert!(!a.score_components.is_empty());
    let bob = &topic.live[&w.customer_of("user_id", "bob-7")];
    assert_eq!((bob.order_count, bob.revenue.get("USD")), (2, Some(&35.5)));
    assert_eq!(bob.event_counts.get("screen"), Some(&1));
    let fam = &topic.live[&family];
    assert_eq!((fam.order_count, fam.revenue.get("EUR")), (1, Some(&12.0)));
    let d = &topic.live[&dana];
    assert!(
        !d.identifiers
            .iter()
            .any(|i| i.key() == "email:family@example.com"),
        "{:?}",
        d.identifiers
    );
    assert_eq!(d.order_count, 0);
    // every accepted event counted once across the live profiles
    let total: u64 = topic.live.values().map(|p| p.event_count).sum();
    assert_eq!(total, w.query_u64("SELECT count() FROM events FINAL"));
    // the identities table and the topic agree on who holds which identifier
    for line in w
        .query("SELECT id_type, id_value, customer_id FROM identities FINAL WHERE is_active = 1 FORMAT TSV")
        .lines()
    {
        let f: Vec<&str> = line.split('\t').collect();
        let key = format!("{}:{}", f[0], f[1]);
        let holder = topic.live.get(f[2]).unwrap_or_else(|| panic!("{key}: {} is not live", f[2]));
        assert!(
            holder.identifiers.iter().any(|i| i.key() == key),
            "{key} is {}'s in identities, not in its crm.profiles message",
            f[2]
        );
    }
    // and with v_events on how many events each live profile has
    let per_customer: BTreeMap<String, u64> = w
        .query("SELECT customer_id, count() FROM v_events GROUP BY customer_id FORMAT TSV")
        .lines()
        .map(|l| {
            let (c, n) = l.split_once('\t').expect("tsv");
            (c.to_string(), n.parse().expect("count"))
        })
        .collect();
    let from_topic: BTreeMap<String, u64> = topic
        .live
        .iter()
        .filter(|(_, p)| p.event_count > 0)
        .map(|(c, p)| (c.clone(), p.event_count))
        .collect();
    assert_eq!(per_customer, from_topic);

    // crm.identity: schema-valid, typed, keyed by customer_id, every kind present
    let ident_msgs = consume_all(&t.identity, 1, Duration::from_secs(20));
    let ident = assert_all_valid(
        json_schema::IDENTITY,
        &payloads(&ident_msgs),
        "crm.identity",
    );
    for ((key, _), v) in ident_msgs.iter().zip(&ident) {
        assert_eq!(key.as_deref(), v["customer_id"].as_str(), "key of {v}");
        let m: IdentityMessage = serde_json::from_value(v.clone()).expect("IdentityMessage");
        assert_ne!(m.action, IdentityAction::Unknown, "{v}");
    }
    for action in ["create", "link", "merge", "reject", "unlink", "split"] {
        assert!(
            ident.iter().any(|m| m["action"] == action),
            "no {action} on crm.identity"
        );
    }
    assert!(ident.iter().any(|m| m["action"] == "merge"
        && m["customer_id"] == ann.as_str()
        && m["merged_customer_id"] == ann_login.as_str()));
    assert!(ident.iter().any(|m| m["action"] == "reject"
        && m["identifier"] == json!({"type": "user_id", "value": "undefined"})
        && m["rule"] == "blocked_value"));
    assert!(ident.iter().any(|m| m["action"] == "split"
        && m["customer_id"] == family.as_str()
        && m["merged_customer_id"] == dana.as_str()));

    // crm.dlq: the junk message, with where it came from
    let dlq_msgs = consume_all(&t.dlq, 1, Duration::from_secs(20));
    let dlq = assert_all_valid(json_schema::DLQ, &payloads(&dlq_msgs), "crm.dlq");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let m: DlqMessage = serde_json::from_value(dlq[0].clone()).expect("DlqMessage");
    assert_eq!(m.error_code, "malformed");
    assert_eq!(m.origin.topic.as_deref(), Some(t.events.as_str()));
    assert_eq!(dlq_msgs[0].0.as_deref(), Some("junk"));

    eprintln!(
        "contracts: topics {}crm.*, database {} ({} profile, {} identity messages)",
        w.prefix,
        w.db,
        profile_msgs.len(),
        ident.len()
    );
}
