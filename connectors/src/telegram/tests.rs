//! Telegram connector tests: mapping of documented update shapes, the source
//! against the fake Bot API (paging, confirmation, waits, errors), config.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{json_schema, CanonicalEvent, Normalizer};

use super::fake::{self, FakeData, FAKE_BOT_ID, FAKE_BOT_USERNAME, FAKE_GROUP_ID, FAKE_TOKEN};
use super::mapping::{map_update, Ctx, Mapped, Skip, MAX_TEXT_CHARS};
use super::{Config, GroupMessages, Source};
use crate::runtime::config::{parse_source_config, RuntimeSettings};
use crate::runtime::http::ApiError;
use crate::runtime::{Source as _, SourceError};
use crate::testkit::{FakeServer, Fault};

const BOT: &str = "7100200300";
const SECRET_PART: &str = "AAFakeTokenForTests_only-0123456789abcdef";

fn received() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().expect("date")
}

fn ctx() -> Ctx<'static> {
    Ctx {
        bot_id: BOT,
        bot_username: Some(FAKE_BOT_USERNAME),
        group_messages: GroupMessages::Mentions,
        include_text: true,
        received_at: received(),
    }
}

fn schema() -> jsonschema::Validator {
    let s: Value = serde_json::from_str(json_schema::CANONICAL_EVENT).expect("schema json");
    jsonschema::validator_for(&s).expect("schema")
}

/// The event passes the runtime's checks and the canonical JSON Schema.
fn assert_valid(ev: &CanonicalEvent) {
    let mut e = ev.clone();
    e.validate_and_normalize(&Normalizer::default(), Utc::now())
        .unwrap_or_else(|err| panic!("{} invalid: {err}", ev.event_id));
    assert_eq!(&e, ev, "mapping must emit normalised identifiers");
    let v = serde_json::to_value(ev).expect("json");
    assert!(schema().is_valid(&v), "{v}");
}

fn event(u: &Value, c: &Ctx<'_>) -> CanonicalEvent {
    match map_update(u, c) {
        Mapped::Event(e) => {
            assert_valid(&e);
            *e
        }
        other => panic!("expected an event from {u}, got {other:?}"),
    }
}

fn skipped(u: &Value, c: &Ctx<'_>) -> Skip {
    match map_update(u, c) {
        Mapped::Skipped(s) => s,
        other => panic!("expected a skip for {u}, got {other:?}"),
    }
}

fn keys(ids: &[socialcrm_schemas::Identifier]) -> Vec<String> {
    ids.iter().map(|i| i.key()).collect()
}

/// The example of the Bot API docs' `Update`/`Message`/`User`, a private chat.
fn private_update() -> Value {
    json!({"update_id": 10000, "message": {
        "message_id": 1365,
        "from": {"id": 1111111, "is_bot": false, "first_name": "Test", "last_name": "Lastname",
            "username": "Test", "language_code": "en", "is_premium": true},
        "chat": {"id": 1111111, "first_name": "Test", "last_name": "Lastname", "username": "Test",
            "type": "private"},
        "date": 1441645532,
        "text": "/start@acme_support_bot please",
        "entities": [{"type": "bot_command", "offset": 0, "length": 23}],
        "reply_to_message": {"message_id": 1360, "from": {"id": FAKE_BOT_ID, "is_bot": true,
            "first_name": "ACME Support"}, "chat": {"id": 1111111, "type": "private"},
            "date": 1441645000, "text": "Hello!"}
    }})
}

#[test]
fn private_message_maps_every_field() {
    let ev = event(&private_update(), &ctx());
    assert_eq!(ev.event_id, "telegram:7100200300:message:1111111:1365");
    assert_eq!(ev.source, "telegram:7100200300");
    assert_eq!(ev.channel, socialcrm_schemas::Channel::Support);
    assert_eq!(ev.event_type, "message");
    assert_eq!(ev.name, None);
    assert_eq!(ev.occurred_at.to_rfc3339(), "2015-09-07T17:05:32+00:00");
    assert_eq!(ev.received_at, received());
    assert_eq!(keys(&ev.identifiers), ["telegram:1111111"]);
    // private chat: the bot is not a target
    assert!(ev.target.is_empty());
    assert_eq!(
        Value::Object(ev.traits.clone()),
        json!({"first_name": "Test", "last_name": "Lastname", "name": "Test Lastname",
            "telegram_username": "Test", "language_code": "en", "telegram_is_premium": true})
    );
    assert_eq!(
        Value::Object(ev.properties.to_map()),
        json!({"update_id": 10000, "message_id": 1365, "chat_id": 1111111, "chat_type": "private",
            "text": "/start@acme_support_bot please", "command": "/start",
            "reply_to_message_id": 1360})
    );
    assert!(ev.revenue.is_none());
    assert!(ev.context.is_empty());
}

#[test]
fn edited_message_is_its_own_event_at_the_edit_time() {
    let mut u = private_update();
    let msg = u["message"].take();
    u = json!({"update_id": 10001, "edited_message": msg});
    u["edited_message"]["edit_date"] = json!(1441645600);
    let ev = event(&u, &ctx());
    assert_eq!(
        ev.event_id,
        "telegram:7100200300:edit:1111111:1365:1441645600"
    );
    assert_eq!(ev.name.as_deref(), Some("edited"));
    assert_eq!(ev.occurred_at.timestamp(), 1441645600);
    let p = ev.properties.to_map();
    assert_eq!(p["original_date"], "2015-09-07T17:05:32+00:00");
    assert_eq!(p["update_id"], 10001);
    // an edit without edit_date is malformed
    u["edited_message"]
        .as_object_mut()
        .expect("obj")
        .remove("edit_date");
    match map_update(&u, &ctx()) {
        Mapped::Rejected(r) => {
            assert_eq!(r.object_id, "update:10001");
            assert!(r.reason.contains("edit_date"), "{}", r.reason);
        }
        other => panic!("{other:?}"),
    }
}

fn contact_update(from: i64, contact: Value) -> Value {
    json!({"update_id": 20000, "message": {"message_id": 7,
        "from": {"id": from, "is_bot": false, "first_name": "Olga"},
        "chat": {"id": from, "type": "private", "first_name": "Olga"},
        "date": 1767225600, "contact": contact}})
}

#[test]
fn own_shared_contact_adds_the_phone_identifier() {
    // Telegram sends the user's own number without `+`
    let u = contact_update(
        555,
        json!({"phone_number": "14155550123", "first_name": "Olga", "user_id": 555}),
    );
    let ev = event(&u, &ctx());
    assert_eq!(
        keys(&ev.identifiers),
        ["telegram:555", "phone:+14155550123"]
    );
    assert_eq!(ev.traits["phone"], "+14155550123");
    let p = ev.properties.to_map();
    assert_eq!(p["contact"], json!({"own": true}));
    assert_eq!(p["media"], "contact");
    // with `+` and spaces too
    let u = contact_update(
        555,
        json!({"phone_number": "+49 30 901820", "first_name": "Olga", "user_id": 555}),
    );
    assert_eq!(
        keys(&event(&u, &ctx()).identifiers),
        ["telegram:555", "phone:+4930901820"]
    );
    // an unusable number links nothing and says so
    let u = contact_update(
        555,
        json!({"phone_number": "12", "first_name": "Olga", "user_id": 555}),
    );
    let ev = event(&u, &ctx());
    assert_eq!(keys(&ev.identifiers), ["telegram:555"]);
    assert_eq!(
        ev.properties.to_map()["contact"],
        json!({"own": true, "phone_valid": false})
    );
}

#[test]
fn someone_elses_contact_is_never_linked_to_the_sender() {
    for contact in [
        json!({"phone_number": "4930901820", "first_name": "Boris", "user_id": 777}),
        json!({"phone_number": "+4930901820", "first_name": "Boris"}),
    ] {
        let u = contact_update(555, contact.clone());
        let ev = event(&u, &ctx());
        assert_eq!(keys(&ev.identifiers), ["telegram:555"], "{contact}");
        assert!(!ev.traits.contains_key("phone"));
        // the other person's number is not kept anywhere
        let text = serde_json::to_string(&ev).expect("json");
        assert!(!text.contains("901820"), "{text}");
        let c = &ev.properties.to_map()["contact"];
        assert_eq!(c["own"], false);
        assert_eq!(c.get("user_id"), contact.get("user_id"));
    }
}

fn group_update(text: &str, entities: Value, reply_from: Option<Value>) -> Value {
    let mut m = json!({"message_id": 90, "from": {"id": 321, "is_bot": false, "first_name": "Elif"},
        "chat": {"id": FAKE_GROUP_ID, "title": "ACME Customers", "type": "supergroup"},
        "date": 1767225600, "text": text, "entities": entities});
    if let Some(f) = reply_from {
        m["reply_to_message"] = json!({"message_id": 89, "from": f,
            "chat": {"id": FAKE_GROUP_ID, "type": "supergroup"}, "date": 1767225500, "text": "?"});
    }
    json!({"update_id": 30000, "message": m})
}

#[test]
fn group_messages_addressed_to_the_bot_are_kept_others_skipped() {
    // a mention after an emoji: offsets are UTF-16 code units
    let u = group_update(
        "🙂 @Acme_Support_Bot and @sven_3 where is my parcel?",
        json!([{"type": "mention", "offset": 3, "length": 17},
            {"type": "mention", "offset": 25, "length": 7}]),
        None,
    );
    let ev = event(&u, &ctx());
    assert_eq!(
        ev.event_id,
        format!("telegram:7100200300:message:{FAKE_GROUP_ID}:90")
    );
    let p = ev.properties.to_map();
    assert_eq!(p["chat_type"], "supergroup");
    assert_eq!(p["chat_title"], "ACME Customers");
    assert_eq!(p["mentioned_usernames"], json!(["sven_3"]));
    // a reply to the bot
    let bot = json!({"id": FAKE_BOT_ID, "is_bot": true, "first_name": "ACME Support"});
    let ev = event(&group_update("thanks", json!([]), Some(bot)), &ctx());
    assert!(ev.target.is_empty(), "the bot is not a target");
    // a command for this bot, or for any bot
    event(
        &group_update(
            "/help@acme_support_bot",
            json!([{"type": "bot_command", "offset": 0, "length": 22}]),
            None,
        ),
        &ctx(),
    );
    event(
        &group_update(
            "/help",
            json!([{"type": "bot_command", "offset": 0, "length": 5}]),
            None,
        ),
        &ctx(),
    );
    // not addressed: plain chatter, a command for another bot, a reply to a person
    let person = json!({"id": 654, "is_bot": false, "first_name": "Sven"});
    for u in [
        group_update("same here", json!([]), None),
        group_update(
            "/help@other_bot",
            json!([{"type": "bot_command", "offset": 0, "length": 15}]),
            None,
        ),
        group_update("me too", json!([]), Some(person.clone())),
    ] {
        assert_eq!(skipped(&u, &ctx()), Skip::GroupNotAddressed, "{u}");
    }
    // `all` keeps the reply to a person, with that person as the target
    let all = Ctx {
        group_messages: GroupMessages::All,
        ..ctx()
    };
    let ev = event(&group_update("me too", json!([]), Some(person)), &all);
    assert_eq!(keys(&ev.target), ["telegram:654"]);
    // a text mention of a person (no user name) is a target too
    let u = group_update(
        "@acme_support_bot ask Sven",
        json!([{"type": "mention", "offset": 0, "length": 17},
            {"type": "text_mention", "offset": 22, "length": 4,
             "user": {"id": 654, "is_bot": false, "first_name": "Sven"}}]),
        None,
    );
    assert_eq!(keys(&event(&u, &ctx()).target), ["telegram:654"]);
    // `none` keeps no group message at all
    let none = Ctx {
        group_messages: GroupMessages::None,
        ..ctx()
    };
    assert_eq!(skipped(&u, &none), Skip::GroupNotAddressed);
}

#[test]
fn bots_channels_and_other_update_kinds_are_skipped() {
    let mut u = private_update();
    u["message"]["from"]["is_bot"] = json!(true);
    assert_eq!(skipped(&u, &ctx()), Skip::FromBot);
    let cq = json!({"update_id": 5, "callback_query": {"id": "1", "from": {"id": 1, "is_bot": false,
        "first_name": "A"}, "chat_instance": "1", "data": "x"}});
    assert_eq!(skipped(&cq, &ctx()), Skip::OtherKind);
    // anonymous group admin: no `from`, a `sender_chat`
    let anon = json!({"update_id": 6, "message": {"message_id": 1, "sender_chat": {"id": FAKE_GROUP_ID,
        "type": "supergroup", "title": "ACME"}, "chat": {"id": FAKE_GROUP_ID, "type": "supergroup"},
        "date": 1767225600, "text": "@acme_support_bot hi"}});
    assert_eq!(skipped(&anon, &ctx()), Skip::NoSender);
    let post = json!({"update_id": 7, "message": {"message_id": 1, "from": {"id": 9, "is_bot": false,
        "first_name": "A"}, "chat": {"id": -100, "type": "channel"}, "date": 1767225600, "text": "x"}});
    assert_eq!(skipped(&post, &ctx()), Skip::NoSender);
}

#[test]
fn media_text_bounds_and_text_switch() {
    let long = "ж".repeat(MAX_TEXT_CHARS + 10);
    let mut u = private_update();
    u["message"]["text"] = json!(long);
    u["message"]
        .as_object_mut()
        .expect("obj")
        .remove("entities");
    let p = event(&u, &ctx()).properties.to_map();
    assert_eq!(
        p["text"].as_str().map(|s| s.chars().count()),
        Some(MAX_TEXT_CHARS)
    );
    assert_eq!(p["text_truncated"], true);
    assert!(p.get("command").is_none());
    let mut u = private_update();
    let m = u["message"].as_object_mut().expect("obj");
    m.remove("text");
    m.remove("entities");
    m.insert("caption".into(), json!("what arrived"));
    m.insert(
        "photo".into(),
        json!([{"file_id": "a", "file_unique_id": "b", "width": 1, "height": 1}]),
    );
    let p = event(&u, &ctx()).properties.to_map();
    assert_eq!(p["media"], "photo");
    assert_eq!(p["text"], "what arrived");
    let quiet = Ctx {
        include_text: false,
        ..ctx()
    };
    let p = event(&u, &quiet).properties.to_map();
    assert!(p.get("text").is_none());
    assert_eq!(p["media"], "photo");
}

#[test]
fn malformed_updates_are_rejected_with_id_and_reason() {
    let mut d = FakeData::empty();
    d.add_malformed(4);
    let reasons = ["from.id", "date", "chat", "edited_message"];
    for ((uid, _), (u, why)) in d.updates.iter().zip(d.values().iter().zip(reasons)) {
        match map_update(u, &ctx()) {
            Mapped::Rejected(r) => {
                assert_eq!(r.object_id, format!("update:{uid}"));
                assert!(r.reason.contains(why), "{} should name {why}", r.reason);
                assert_eq!(serde_json::from_slice::<Value>(&r.raw).expect("raw"), *u);
            }
            other => panic!("{u}: {other:?}"),
        }
    }
    for bad in [
        json!({"message": {}}),
        json!({"update_id": "x"}),
        json!([1]),
    ] {
        match map_update(&bad, &ctx()) {
            Mapped::Rejected(r) => assert_eq!(r.object_id, "?"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn generated_updates_map_to_valid_events() {
    let d = FakeData::generate(600, 7);
    let (mut events, mut skips) = (Vec::new(), 0);
    for u in d.values() {
        match map_update(&u, &ctx()) {
            Mapped::Event(e) => {
                assert_valid(&e);
                events.push(*e);
            }
            Mapped::Skipped(_) => skips += 1,
            Mapped::Rejected(r) => panic!("generated update rejected: {}", r.reason),
        }
    }
    assert!(events.len() > 400 && skips > 30, "{} {skips}", events.len());
    // deterministic and distinct ids
    let ids: BTreeSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), events.len());
    assert_eq!(ids, FakeData::generate(600, 7).expected_event_ids());
    // a household: two people shared the same number
    let mut by_phone: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for e in &events {
        if let Some(p) = e.identifiers.iter().find(|i| i.id_type == "phone") {
            by_phone
                .entry(p.value.clone())
                .or_default()
                .insert(e.identifiers[0].value.clone());
        }
    }
    assert!(!by_phone.is_empty());
    assert!(by_phone.values().any(|s| s.len() > 1), "{by_phone:?}");
    assert!(events.iter().any(|e| e.name.as_deref() == Some("edited")));
}

// ---------------------------------------------------------------- source

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        max_retry_secs: 20,
        retry_max_interval_ms: 1000,
        ..RuntimeSettings::default()
    }
}

fn source(base: &str, f: impl FnOnce(&mut Config)) -> Source {
    let mut c = fake::test_config(base);
    f(&mut c);
    c.validate("connectors.tg_support").expect("valid config");
    Source::new("tg_support", c, &settings()).expect("source")
}

fn offset_of(cursor: &Value) -> Option<i64> {
    cursor["offset"].as_i64()
}

#[tokio::test]
async fn walks_pages_to_the_end_confirming_with_the_next_offset() {
    let data = FakeData::generate(35, 3);
    let first = data.updates[0].0;
    let expected = data.expected_event_ids();
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |c| c.limit = 10);
    let mut cursor = s.initial_cursor("updates", None);
    assert_eq!(cursor, json!({"offset": null}));
    let mut got = BTreeSet::new();
    let mut offsets = Vec::new();
    loop {
        let page = s.fetch("updates", &cursor).await.expect("page");
        for e in &page.events {
            assert!(got.insert(e.event_id.clone()), "duplicate {}", e.event_id);
        }
        cursor = page.cursor.clone();
        offsets.push(offset_of(&cursor));
        if page.caught_up {
            assert_eq!(page.objects, 0);
            break;
        }
        assert_eq!(page.objects, if offsets.len() < 4 { 10 } else { 5 });
        assert!(page.position.is_some() || page.events.is_empty());
    }
    assert_eq!(
        offsets,
        [
            Some(first + 10),
            Some(first + 20),
            Some(first + 30),
            Some(first + 35),
            Some(first + 35)
        ]
    );
    assert_eq!(got, expected);
    // every request after the first carried the offset of the stored cursor
    let seen = server.controls.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert!(uris[0].contains("/getMe"), "{uris:?}");
    assert!(!uris[1].contains("offset="), "{}", uris[1]);
    for (i, u) in uris[2..].iter().enumerate() {
        let want = (first + 10 * (i as i64 + 1)).min(first + 35);
        assert!(u.contains(&format!("offset={want}&")), "{u}");
        assert!(u.contains("limit=10") && u.contains("timeout=0"), "{u}");
        assert!(
            u.contains("allowed_updates=%5B%22message%22%2C%22edited_message%22%5D"),
            "{u}"
        );
    }
}

#[tokio::test]
async fn empty_bot_is_caught_up_and_long_poll_waits() {
    let server = FakeServer::start(fake::router(FakeData::empty())).await;
    let mut s = source(&server.base_url, |_| {});
    let page = s
        .fetch("updates", &json!({"offset": null}))
        .await
        .expect("page");
    assert!(page.caught_up && page.events.is_empty());
    assert_eq!(page.cursor, json!({"offset": null}));
    let mut s = source(&server.base_url, |c| c.long_poll_secs = 1);
    let t = Instant::now();
    let page = s
        .fetch("updates", &json!({"offset": 5}))
        .await
        .expect("page");
    assert!(page.caught_up);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(page.cursor, json!({"offset": 5}));
    assert!(server
        .controls
        .seen()
        .last()
        .is_some_and(|r| r.uri.contains("timeout=1")));
}

async fn timed_fetch_after(fault: Fault) -> (Duration, usize) {
    let data = FakeData::generate(12, 5);
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |c| c.group_messages = GroupMessages::All);
    server.controls.push_fault(fault.on_path("getUpdates"));
    let t = Instant::now();
    let page = s
        .fetch("updates", &json!({"offset": null}))
        .await
        .expect("page after retry");
    assert!(!page.events.is_empty());
    (t.elapsed(), server.controls.seen().len())
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_header() {
    let (took, calls) = timed_fetch_after(Fault::too_many(1).body(
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#,
    ))
    .await;
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_in_the_body() {
    // no Retry-After header: the wait is only in `parameters.retry_after`
    let (took, calls) = timed_fetch_after(Fault::status(429).body(
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 2","parameters":{"retry_after":2}}"#,
    ))
    .await;
    assert!(took >= Duration::from_millis(1950), "{took:?}");
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn server_error_is_retried() {
    let (_, calls) = timed_fetch_after(
        Fault::status(503)
            .body(r#"{"ok":false,"error_code":503,"description":"Service Unavailable"}"#),
    )
    .await;
    assert_eq!(calls, 2);
}

fn assert_no_token(text: &str) {
    assert!(!text.contains(SECRET_PART), "token leaked: {text}");
    assert!(!text.contains(FAKE_TOKEN), "token leaked: {text}");
}

#[tokio::test]
async fn refused_token_is_an_auth_error_naming_instance_and_fix() {
    let mut data = FakeData::generate(5, 1);
    data.token = "7100200300:AAanotherValidLookingToken-xyz".into();
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |_| {});
    let err = s
        .fetch("updates", &json!({"offset": null}))
        .await
        .expect_err("401");
    let SourceError::Api(e) = err else {
        panic!("{err}")
    };
    assert!(e.is_auth(), "{e}");
    assert_eq!(e.status(), Some(401));
    let msg = e.to_string();
    assert!(msg.contains("tg_support"), "{msg}");
    assert!(msg.contains("@BotFather"), "{msg}");
    assert!(msg.contains("connectors.tg_support.bot_token"), "{msg}");
    assert!(msg.contains("/bot***/"), "{msg}");
    assert_no_token(&msg);
    // 401 is not retried
    assert_eq!(server.controls.seen().len(), 1);
}

#[tokio::test]
async fn unknown_token_404_is_an_auth_error_too() {
    let server = FakeServer::start(fake::router(FakeData::generate(5, 1))).await;
    server.controls.set_sticky(
        Fault::status(404).body(r#"{"ok":false,"error_code":404,"description":"Not Found"}"#),
    );
    let mut s = source(&server.base_url, |_| {});
    let Err(SourceError::Api(e)) = s.fetch("updates", &json!({"offset": 1})).await else {
        panic!("expected an API error")
    };
    assert!(e.is_auth() && e.status() == Some(404), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("@BotFather") && msg.contains("api_url"),
        "{msg}"
    );
    assert_no_token(&msg);
}

#[tokio::test]
async fn active_webhook_409_names_delete_webhook() {
    let mut data = FakeData::generate(5, 1);
    data.webhook_set = true;
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |_| {});
    let Err(SourceError::Api(e)) = s.fetch("updates", &json!({"offset": null})).await else {
        panic!("expected an API error")
    };
    assert!(!e.is_auth());
    assert_eq!(e.status(), Some(409));
    let msg = e.to_string();
    assert!(msg.contains("deleteWebhook"), "{msg}");
    assert!(msg.contains("webhook is active"), "{msg}");
    assert_no_token(&msg);
    // not retried: a webhook does not go away by itself
    assert_eq!(
        server
            .controls
            .seen()
            .iter()
            .filter(|r| r.uri.contains("getUpdates"))
            .count(),
        1
    );
}

#[tokio::test]
async fn token_never_appears_in_network_or_server_errors() {
    let s_settings = RuntimeSettings {
        max_retry_secs: 1,
        ..settings()
    };
    // nothing listens on port 1
    let mut s = Source::new(
        "tg_support",
        fake::test_config("http://127.0.0.1:1"),
        &s_settings,
    )
    .expect("source");
    let Err(SourceError::Api(e)) = s.fetch("updates", &json!({"offset": null})).await else {
        panic!("expected an error")
    };
    assert!(matches!(e, ApiError::Network { .. }), "{e}");
    assert_no_token(&e.to_string());
    assert_no_token(&format!("{e:?}"));
    let server = FakeServer::start(fake::router(FakeData::empty())).await;
    server.controls.set_sticky(Fault::status(500));
    let mut cfg = fake::test_config(&server.base_url);
    cfg.group_messages = GroupMessages::All;
    let mut s = Source::new("tg_support", cfg, &s_settings).expect("source");
    let Err(SourceError::Api(e)) = s.fetch("updates", &json!({"offset": null})).await else {
        panic!("expected an error")
    };
    assert_eq!(e.status(), Some(500));
    assert_no_token(&e.to_string());
    assert_no_token(&format!("{e:?}"));
}

#[tokio::test]
async fn malformed_updates_are_rejected_and_the_page_goes_on() {
    let mut data = FakeData::generate(20, 9);
    data.add_malformed(4);
    let last = data.updates.last().expect("last").0;
    let expected = data.expected_event_ids();
    let server = FakeServer::start(fake::router(data)).await;
    let mut s = source(&server.base_url, |_| {});
    let page = s
        .fetch("updates", &json!({"offset": null}))
        .await
        .expect("page");
    assert_eq!(page.rejected.len(), 4);
    assert!(page
        .rejected
        .iter()
        .all(|r| r.object_id.starts_with("update:")));
    let got: BTreeSet<_> = page.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(got, expected);
    assert_eq!(page.cursor, json!({"offset": last + 1}));
    assert_eq!(page.objects, 24);
}

#[tokio::test]
async fn resume_from_a_stored_cursor_continues_exactly() {
    let data = FakeData::generate(40, 11);
    let expected = data.expected_event_ids();
    let server = FakeServer::start(fake::router(data)).await;
    // first process: two pages acknowledged, a third fetched but not stored (crash)
    let mut s = source(&server.base_url, |c| c.limit = 10);
    let mut stored = s.initial_cursor("updates", None);
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let p = s.fetch("updates", &stored).await.expect("page");
        got.extend(p.events.iter().map(|e| e.event_id.clone()));
        stored = p.cursor;
    }
    let lost = s.fetch("updates", &stored).await.expect("page 3");
    let lost_ids: Vec<_> = lost.events.iter().map(|e| e.event_id.clone()).collect();
    drop(s);
    // second process resumes from the stored cursor: page 3 again, same ids
    let mut s = source(&server.base_url, |c| c.limit = 10);
    let p = s.fetch("updates", &stored).await.expect("replayed page");
    let replay: Vec<_> = p.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(replay, lost_ids);
    assert!(
        replay.iter().all(|id| !got.contains(id)),
        "no overlap with stored pages"
    );
    got.extend(replay);
    stored = p.cursor;
    loop {
        let p = s.fetch("updates", &stored).await.expect("page");
        for e in &p.events {
            assert!(got.insert(e.event_id.clone()), "duplicate {}", e.event_id);
        }
        stored = p.cursor;
        if p.caught_up {
            break;
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn since_cannot_go_back_and_bad_cursors_restart() {
    let server = FakeServer::start(fake::router(FakeData::empty())).await;
    let mut s = source(&server.base_url, |_| {});
    let since: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("date");
    assert_eq!(
        s.initial_cursor("updates", Some(since)),
        json!({"offset": null})
    );
    match s.fetch("updates", &json!({"page": 3})).await {
        Err(SourceError::CursorInvalid { restart_from, .. }) => {
            assert_eq!(restart_from, json!({"offset": null}))
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- config

fn parse(toml_text: &str) -> Result<Config, String> {
    let t: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let c: Config = parse_source_config("connectors.tg", t)?;
    c.validate("connectors.tg")?;
    Ok(c)
}

#[test]
fn config_defaults_errors_and_secrets() {
    let c = parse(&format!("bot_token = \"{FAKE_TOKEN}\"")).expect("minimal");
    assert_eq!(c.api_url, "https://api.telegram.org");
    assert_eq!(c.long_poll_secs, 25);
    assert_eq!(c.limit, 100);
    assert_eq!(c.allowed_updates, ["message", "edited_message"]);
    assert_eq!(c.group_messages, GroupMessages::Mentions);
    assert!(c.include_text);
    assert!(!format!("{c:?}").contains(SECRET_PART));
    // the request timeout outlives the long poll
    let st = RuntimeSettings::default();
    assert!(super::client_timeout(&c, &st) > Duration::from_secs(c.long_poll_secs));

    let e = parse(&format!("bot_token = \"{FAKE_TOKEN}\"\ntokne = 1")).expect_err("unknown");
    assert!(e.contains("tokne"), "{e}");
    let e = parse("api_url = \"https://x\"").expect_err("missing token");
    assert!(e.contains("bot_token"), "{e}");
    for (extra, field) in [
        ("limit = 0", "connectors.tg.limit"),
        ("limit = 101", "connectors.tg.limit"),
        ("long_poll_secs = 301", "connectors.tg.long_poll_secs"),
        ("api_url = \"ftp://x\"", "connectors.tg.api_url"),
        ("api_url = \"not a url\"", "connectors.tg.api_url"),
        (
            "allowed_updates = [\"mesage\"]",
            "connectors.tg.allowed_updates",
        ),
        (
            "allowed_updates = [\"callback_query\"]",
            "connectors.tg.allowed_updates",
        ),
        ("group_messages = \"some\"", "group_messages"),
    ] {
        let e = parse(&format!("bot_token = \"{FAKE_TOKEN}\"\n{extra}")).expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
    // a malformed token is named, never printed
    let e = parse("bot_token = \"hunter2-not-a-token\"").expect_err("bad token");
    assert!(e.contains("connectors.tg.bot_token"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let c = parse(&format!(
        "bot_token = \"{FAKE_TOKEN}\"\ngroup_messages = \"none\"\nallowed_updates = []\nlong_poll_secs = 0"
    ))
    .expect("valid");
    assert_eq!(c.group_messages, GroupMessages::None);
    assert_eq!(super::bot_id_of(FAKE_TOKEN), Some(BOT));
    assert_eq!(super::bot_id_of("abc:def"), None);
    assert_eq!(super::bot_id_of("123:"), None);
}

#[test]
fn body_retry_after_reads_telegram_parameters() {
    let b = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
    assert_eq!(
        super::body_retry_after(429, b),
        Some(Duration::from_secs(7))
    );
    assert_eq!(super::body_retry_after(400, b), None);
    assert_eq!(super::body_retry_after(429, b"not json"), None);
}
