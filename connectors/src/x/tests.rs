//! X connector: mapping of documented objects, the source against the fake API,
//! config checks.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{Channel, IdType, Identifier, Normalizer, SCHEMA_VERSION};

use super::fake::{self, FakeData, RateLimit, BRAND_ID};
use super::mapping::{self, MapContext};
use super::{Config, Cursor, Source, STREAM};
use crate::runtime::config::{RuntimeSettings, Secret};
use crate::runtime::{Page, Source as _, SourceError};
use crate::testkit::{FakeServer, Fault};

fn now() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().expect("time")
}

fn ctx<'a>(since_id: Option<&'a str>) -> MapContext<'a> {
    MapContext {
        brand_id: BRAND_ID,
        source: "x:2244994945",
        received_at: now(),
        since_id,
    }
}

fn x(v: &str) -> Identifier {
    Identifier::new(IdType::X, v)
}

/// A page as X documents it: a mention, a reply to the brand, a quote of someone
/// else's post, a repost, a post by the brand itself, and a partial error for a
/// deleted referenced post.
fn documented_page() -> Value {
    json!({
        "data": [
            {
                "id": "1346889436626259968",
                "text": "Hey @acme_brand, love the new API! #devs https://t.co/56a0vZUx7i",
                "author_id": "1234567890",
                "created_at": "2021-01-06T18:40:40.000Z",
                "conversation_id": "1346889436626259968",
                "lang": "en",
                "edit_history_tweet_ids": ["1346889436626259968"],
                "public_metrics": {"retweet_count": 5, "reply_count": 2, "like_count": 42, "quote_count": 1},
                "entities": {
                    "mentions": [{"start": 4, "end": 15, "username": "acme_brand", "id": "2244994945"}],
                    "hashtags": [{"start": 35, "end": 40, "tag": "devs"}],
                    "urls": [{"start": 41, "end": 64, "url": "https://t.co/56a0vZUx7i",
                              "expanded_url": "https://shop.example/p/1", "display_url": "shop.example/p/1"}]
                }
            },
            {
                "id": "1346889436626259970",
                "text": "@acme_brand my order has not arrived",
                "author_id": "987654321",
                "created_at": "2021-01-06T19:00:00.000Z",
                "conversation_id": "1346000000000000001",
                "in_reply_to_user_id": "2244994945",
                "referenced_tweets": [{"type": "replied_to", "id": "1346000000000000001"}],
                "lang": "en",
                "public_metrics": {"retweet_count": 0, "reply_count": 0, "like_count": 1, "quote_count": 0}
            },
            {
                "id": "1346889436626259971",
                "text": "Look what @acme_brand did https://t.co/q",
                "author_id": "1234567890",
                "created_at": "2021-01-06T19:05:00.000Z",
                "conversation_id": "1346889436626259971",
                "referenced_tweets": [{"type": "quoted", "id": "1346000000000000002"}],
                "lang": "en"
            },
            {
                "id": "1346889436626259972",
                "text": "RT @friend: @acme_brand is great",
                "author_id": "555000555",
                "created_at": "2021-01-06T19:10:00.000Z",
                "conversation_id": "1346889436626259972",
                "referenced_tweets": [{"type": "retweeted", "id": "1346000000000000003"}],
                "lang": "en"
            },
            {
                "id": "1346889436626259973",
                "text": "Thanks! DM @acme_brand",
                "author_id": "2244994945",
                "created_at": "2021-01-06T19:15:00.000Z",
                "conversation_id": "1346000000000000001",
                "in_reply_to_user_id": "987654321",
                "referenced_tweets": [{"type": "replied_to", "id": "1346889436626259970"}]
            }
        ],
        "includes": {
            "users": [
                {"id": "1234567890", "name": "Dev Person", "username": "developer",
                 "public_metrics": {"followers_count": 1200, "following_count": 300, "tweet_count": 4500, "listed_count": 7, "like_count": 99}},
                {"id": "987654321", "name": "Ann Lee", "username": "ann_lee",
                 "public_metrics": {"followers_count": 80, "following_count": 120, "tweet_count": 900, "listed_count": 0}},
                {"id": "2244994945", "name": "Acme", "username": "acme_brand"}
            ],
            "tweets": [
                {"id": "1346000000000000001", "author_id": "2244994945", "text": "We shipped!"},
                {"id": "1346000000000000002", "author_id": "777000777", "text": "A post about acme"}
            ]
        },
        "errors": [
            {"value": "1346000000000000003", "detail": "Could not find tweet with referenced_tweets.id: [1346000000000000003].",
             "title": "Not Found Error", "resource_type": "tweet", "parameter": "referenced_tweets.id",
             "resource_id": "1346000000000000003", "type": "https://api.twitter.com/2/problems/resource-not-found"}
        ],
        "meta": {"newest_id": "1346889436626259973", "oldest_id": "1346889436626259968",
                 "result_count": 5, "next_token": "7140dibdnow9c7btw3w29grc9"}
    })
}

fn map(v: &Value) -> mapping::MappedPage {
    mapping::map_response(&serde_json::to_vec(v).expect("json"), &ctx(None)).expect("maps")
}

#[test]
fn documented_mention_maps_every_field() {
    let page = map(&documented_page());
    assert_eq!(page.objects, 5);
    assert_eq!(page.skipped_own, 1, "the brand's own post is not an event");
    assert!(page.rejected.is_empty(), "{:?}", page.rejected);
    assert_eq!(page.events.len(), 4);
    assert_eq!(page.newest_id.as_deref(), Some("1346889436626259973"));
    assert_eq!(
        page.meta.next_token.as_deref(),
        Some("7140dibdnow9c7btw3w29grc9")
    );
    assert_eq!(page.errors.len(), 1);
    assert_eq!(page.errors[0].resource_id, "1346000000000000003");
    assert_eq!(page.errors[0].resource_type, "tweet");

    let ev = &page.events[0];
    assert_eq!(ev.schema_version, SCHEMA_VERSION);
    assert_eq!(ev.event_id, "x:2244994945:tweet:1346889436626259968");
    assert_eq!(ev.source, "x:2244994945");
    assert_eq!(ev.channel, Channel::Social);
    assert_eq!(ev.event_type, "mention");
    assert_eq!(ev.name, None);
    assert_eq!(
        ev.occurred_at,
        "2021-01-06T18:40:40Z".parse::<DateTime<Utc>>().expect("t")
    );
    assert_eq!(ev.received_at, now());
    assert_eq!(ev.identifiers, vec![x("1234567890")]);
    assert_eq!(ev.target, vec![x("2244994945")]);
    assert_eq!(
        Value::Object(ev.traits.clone()),
        json!({"x_username": "developer", "name": "Dev Person", "followers_count": 1200,
               "following_count": 300, "tweet_count": 4500, "listed_count": 7})
    );
    assert_eq!(
        Value::Object(ev.properties.to_map()),
        json!({
            "tweet_id": "1346889436626259968",
            "text": "Hey @acme_brand, love the new API! #devs https://t.co/56a0vZUx7i",
            "lang": "en",
            "conversation_id": "1346889436626259968",
            "public_metrics": {"retweet_count": 5, "reply_count": 2, "like_count": 42, "quote_count": 1},
            "url": "https://x.com/i/web/status/1346889436626259968",
            "hashtags": ["devs"],
            "urls": ["https://shop.example/p/1"],
            "mentioned_usernames": ["acme_brand"]
        })
    );
    assert!(ev.revenue.is_none());
    assert!(ev.context.is_empty());

    // a reply to the brand: the brand is the target once
    let reply = &page.events[1];
    assert_eq!(reply.event_type, "reply");
    assert_eq!(reply.identifiers, vec![x("987654321")]);
    assert_eq!(reply.target, vec![x("2244994945")]);
    let p = reply.properties.to_map();
    assert_eq!(p["in_reply_to_user_id"], "2244994945");
    assert_eq!(
        p["referenced_tweets"],
        json!([{"type": "replied_to", "id": "1346000000000000001", "author_id": "2244994945"}])
    );
    assert_eq!(reply.traits["x_username"], "ann_lee");

    // a quote of someone else's post: its author is a target too
    let quote = &page.events[2];
    assert_eq!(quote.event_type, "quote");
    assert_eq!(quote.target, vec![x("2244994945"), x("777000777")]);

    // a repost whose original was deleted (partial error): still an event; no
    // author known for the original, no user object for the reposter
    let repost = &page.events[3];
    assert_eq!(repost.event_type, "reshare");
    assert_eq!(repost.target, vec![x("2244994945")]);
    assert!(repost.traits.is_empty());
    assert_eq!(
        repost.properties.to_map()["referenced_tweets"],
        json!([{"type": "retweeted", "id": "1346000000000000003"}])
    );

    let normalizer = Normalizer::default();
    for mut e in page.events {
        e.validate_and_normalize(&normalizer, now())
            .unwrap_or_else(|err| panic!("{} invalid: {err}", e.event_id));
    }
}

#[test]
fn reply_to_someone_else_targets_them_and_never_the_actor() {
    let v = json!({"data": [
        {"id": "20", "author_id": "11", "created_at": "2026-01-01T00:00:00Z", "text": "@acme_brand @bob +1",
         "in_reply_to_user_id": "12", "referenced_tweets": [{"type": "replied_to", "id": "19"}, {"type": "quoted", "id": "18"}]},
        {"id": "21", "author_id": "11", "created_at": "2026-01-01T00:00:00Z", "text": "@acme_brand thread",
         "edit_history_tweet_ids": ["17", "21"],
         "in_reply_to_user_id": "11", "referenced_tweets": [{"type": "replied_to", "id": "20"}]}
    ], "includes": {"tweets": [{"id": "19", "author_id": "12"}, {"id": "18", "author_id": "13"}, {"id": "20", "author_id": "11"}]},
       "meta": {"result_count": 2}});
    let page = map(&v);
    assert_eq!(page.events.len(), 2);
    // a reply that quotes: a reply, with the replied-to and the quoted author
    assert_eq!(page.events[0].event_type, "reply");
    assert_eq!(page.events[0].target, vec![x(BRAND_ID), x("12"), x("13")]);
    // replying to oneself in a thread: only the brand
    assert_eq!(page.events[1].target, vec![x(BRAND_ID)]);
    // an edited post lists its earlier versions; an unedited one does not
    assert_eq!(
        page.events[1].properties.to_map()["edit_history_tweet_ids"],
        json!(["17", "21"])
    );
    assert!(!page.events[0]
        .properties
        .to_map()
        .contains_key("edit_history_tweet_ids"));
}

#[test]
fn malformed_posts_are_rejected_with_id_and_reason_and_the_rest_maps() {
    let v = json!({"data": [
        {"id": "100", "author_id": "11", "created_at": "2026-01-01T00:00:00Z", "text": "ok"},
        {"id": "101", "created_at": "2026-01-01T00:00:00Z", "text": "no author"},
        {"id": "102", "author_id": "11", "created_at": "yesterday", "text": "bad time"},
        {"id": "103", "author_id": "@handle", "created_at": "2026-01-01T00:00:00Z"},
        {"id": 104, "author_id": "11", "created_at": "2026-01-01T00:00:00Z"},
        {"id": "105", "author_id": "11", "text": "no time"},
        {"id": "106", "author_id": "11", "created_at": "2026-01-01T00:00:00Z", "referenced_tweets": "replied_to"},
        "not an object",
        {"id": "107", "author_id": "11", "created_at": "2026-01-01T00:00:01Z", "text": "ok too"}
    ], "meta": {"result_count": 9}});
    let page = map(&v);
    let ids: Vec<&str> = page.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["x:2244994945:tweet:100", "x:2244994945:tweet:107"]);
    let rejected: Vec<(&str, &str)> = page
        .rejected
        .iter()
        .map(|r| (r.object_id.as_str(), r.reason.as_str()))
        .collect();
    let want = [
        ("101", "author_id` is missing"),
        ("102", "`created_at` `yesterday` is not a time"),
        ("103", "`author_id` `@handle` is not a numeric user id"),
        ("104", "not the documented post object"),
        ("105", "`created_at` is missing"),
        ("106", "not the documented post object"),
        ("?", "not the documented post object"),
    ];
    assert_eq!(rejected.len(), want.len(), "{rejected:?}");
    for ((id, reason), (wid, wreason)) in rejected.iter().zip(want) {
        assert_eq!(*id, wid);
        assert!(reason.contains(wreason), "{id}: {reason}");
    }
    // the raw object travels to the DLQ
    let raw: Value = serde_json::from_slice(&page.rejected[1].raw).expect("raw json");
    assert_eq!(raw["created_at"], "yesterday");
    assert_eq!(page.newest_id.as_deref(), Some("107"));
}

/// The cursor is read by `parse_head` alone (the posts are parsed off the page
/// chain): it must read what the full parse reads, and refuse what it refuses.
#[test]
fn page_head_reads_what_the_full_parse_reads() {
    let mut generated = fake::generate(120, 7);
    generated.add_malformed(
        5,
        json!({"id": "99999999999999999999", "text": "no author"}),
    );
    generated.add_malformed(6, json!({"id": 12, "author_id": "11"}));
    let bodies: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&documented_page()).expect("json"),
        serde_json::to_vec(&json!({"data": [
            {"id": "100", "author_id": "11", "created_at": "2026-01-01T00:00:00Z"},
            {"id": 104, "author_id": "11"},
            "not an object",
            [1, 2],
            {"id": "0099", "text": "leading zeros"},
            {"id": "not-numeric"},
            {"id": "108", "author_id": "11"},
            {"author_id": "11"}
        ], "meta": {"result_count": 8, "next_token": "t"}}))
        .expect("json"),
        br#"{"meta":{"result_count":0}}"#.to_vec(),
        br#"{"errors":[{"title":"Not Found Error","resource_type":"user","parameter":"id"}]}"#
            .to_vec(),
        generated.full_response(),
        // shapes both refuse
        b"<html>".to_vec(),
        b"[1,2]".to_vec(),
        // an escaped id
        br#"{"data": [{"id": "10\u0039", "author_id": "11"}, {"id": "99"}]}"#.to_vec(),
        br#"{"data": {"id": "1"}}"#.to_vec(),
        br#"{"data": [], "includes": "none"}"#.to_vec(),
        br#"{"data": [], "includes": {"users": {"id": "1"}}}"#.to_vec(),
        br#"{"data": [], "meta": {"next_token": 5}}"#.to_vec(),
    ];
    let mut accepted = 0;
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        match (mapping::parse_head(body), mapping::parse_response(body)) {
            (Ok(head), Ok(full)) => {
                accepted += 1;
                assert_eq!(head.objects, full.objects, "{text}");
                assert_eq!(head.meta, full.meta, "{text}");
                assert_eq!(head.errors, full.errors, "{text}");
                assert_eq!(head.newest_id, full.newest_id, "{text}");
            }
            (Err(_), Err(_)) => {}
            (head, full) => panic!(
                "{text}: head {:?}, full parse {:?}",
                head.map(|h| h.objects),
                full.map(|f| f.objects)
            ),
        }
    }
    assert_eq!(accepted, 6);
    // the generated page's newest id is read past the malformed posts
    let head = mapping::parse_head(&bodies[4]).expect("head");
    assert_eq!(head.objects, 122);
    assert!(head.newest_id.is_some());
}

#[test]
fn not_a_timeline_object_is_an_error() {
    assert!(mapping::map_response(b"<html>", &ctx(None)).is_err());
    assert!(mapping::map_response(b"[1,2]", &ctx(None)).is_err());
    // the empty answer X sends when nothing is new
    let p = mapping::map_response(br#"{"meta":{"result_count":0}}"#, &ctx(None)).expect("empty");
    assert_eq!(p.objects, 0);
    assert!(p.events.is_empty() && p.newest_id.is_none());
}

#[test]
fn posts_at_or_below_since_id_are_not_replayed_and_legacy_times_parse() {
    let v = json!({"data": [
        {"id": "1000", "author_id": "11", "created_at": "Wed Jan 06 18:40:40 +0000 2021"},
        {"id": "999", "author_id": "11", "created_at": "2021-01-06T18:40:39.000Z"}
    ]});
    let p = mapping::map_response(&serde_json::to_vec(&v).expect("json"), &ctx(Some("999")))
        .expect("maps");
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.skipped_synced, 1);
    assert_eq!(
        p.events[0].occurred_at,
        "2021-01-06T18:40:40Z".parse::<DateTime<Utc>>().expect("t")
    );
}

#[test]
fn ids_compare_as_numbers() {
    use std::cmp::Ordering;
    assert_eq!(mapping::cmp_ids("999", "1000"), Ordering::Less);
    assert_eq!(mapping::cmp_ids("0100", "100"), Ordering::Equal);
    assert_eq!(
        mapping::max_id(
            Some("1900000000000000000".into()),
            Some("899999999999999999")
        ),
        Some("1900000000000000000".into())
    );
    assert_eq!(mapping::max_id(None, Some("x1")), None);
}

#[test]
fn generated_data_is_deterministic_and_maps_cleanly() {
    let a = fake::generate(400, 7);
    let b = fake::generate(400, 7);
    assert_eq!(a.full_response(), b.full_response());
    assert_ne!(a.full_response(), fake::generate(400, 8).full_response());
    let m = a.expected(now());
    assert!(m.rejected.is_empty(), "{:?}", m.rejected.first());
    assert_eq!(m.objects, 400);
    assert!(m.skipped_own > 0, "some posts by the brand itself");
    assert!(!m.errors.is_empty(), "some deleted referenced posts");
    let types: BTreeSet<&str> = m.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["mention", "quote", "reply", "reshare"])
    );
    let actors: BTreeSet<&str> = m
        .events
        .iter()
        .map(|e| e.identifiers[0].value.as_str())
        .collect();
    assert!(actors.len() < m.events.len(), "people post more than once");
    let normalizer = Normalizer::default();
    for mut e in m.events {
        e.validate_and_normalize(&normalizer, Utc::now())
            .expect("valid");
    }
}

// ---------------------------------------------------------------------------
// the source against the fake API

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        max_retry_secs: 20,
        retry_max_interval_ms: 1_000,
        request_timeout_secs: 10,
        ..RuntimeSettings::default()
    }
}

fn source(server: &FakeServer, max_results: u32) -> Source {
    let mut cfg = fake::test_config(&server.base_url);
    cfg.max_results = max_results;
    Source::new("x_brand", cfg, &settings()).expect("source")
}

fn cursor(p: &Page) -> Cursor {
    Cursor::from_value(&p.cursor).expect("cursor")
}

/// Fetches until caught up; returns the pages.
async fn walk(src: &mut Source, mut c: Value) -> Vec<Page> {
    let mut pages = Vec::new();
    for _ in 0..1000 {
        let p = src.fetch(STREAM, &c).await.expect("fetch");
        c = p.cursor.clone();
        let done = p.caught_up;
        pages.push(p);
        if done {
            return pages;
        }
    }
    panic!("never caught up");
}

fn event_ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.event_id.clone()))
        .collect()
}

fn expected_ids(d: &FakeData) -> BTreeSet<String> {
    d.expected(now())
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

fn query_of(uri: &str) -> Vec<(String, String)> {
    let u = reqwest::Url::parse(&format!("http://h{uri}")).expect("uri");
    u.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(uri: &str, k: &str) -> Option<String> {
    query_of(uri)
        .into_iter()
        .find(|(q, _)| q == k)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn walks_every_page_then_moves_since_id_and_polls_only_new_posts() {
    let data = fake::generate(35, 1);
    let newest = data.post_ids()[0].clone();
    let want = expected_ids(&data);
    let shared = Arc::new(RwLock::new(data));
    let server = FakeServer::start(fake::router_shared(shared.clone())).await;
    let mut src = source(&server, 10);
    assert_eq!(src.streams(), vec!["mentions".to_string()]);
    let initial = src.initial_cursor(STREAM, None);
    assert_eq!(cursor_of(&initial), Cursor::default());

    let pages = walk(&mut src, initial).await;
    assert_eq!(pages.len(), 4, "35 posts at 10 per page");
    for (i, p) in pages.iter().enumerate() {
        let c = cursor(p);
        if i < 3 {
            assert!(!p.caught_up);
            assert!(c.pagination_token.is_some(), "page {i}");
            assert_eq!(c.since_id, None, "since_id moves only at the end");
            assert_eq!(c.walk_newest_id.as_deref(), Some(newest.as_str()));
            assert_eq!(c.walk_objects, 10 * (i as u64 + 1));
            assert_eq!(p.objects, 10);
        } else {
            assert!(p.caught_up);
            assert_eq!(
                c,
                Cursor {
                    since_id: Some(newest.clone()),
                    ..Cursor::default()
                }
            );
        }
        assert!(p.rejected.is_empty());
    }
    // positions go back in time as the walk goes down the timeline
    assert!(pages[0].position > pages[1].position);
    let got = event_ids(&pages);
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no duplicates");
    assert_eq!(got_set, want);

    // what the connector asked for
    let seen = server.controls.seen();
    assert_eq!(seen.len(), 4);
    let first = &seen[0].uri;
    assert!(
        first.starts_with("/2/users/2244994945/mentions?"),
        "{first}"
    );
    assert_eq!(param(first, "max_results").as_deref(), Some("10"));
    assert_eq!(
        param(first, "tweet.fields").as_deref(),
        Some("created_at,author_id,conversation_id,in_reply_to_user_id,referenced_tweets,public_metrics,lang,entities")
    );
    assert_eq!(
        param(first, "expansions").as_deref(),
        Some("author_id,referenced_tweets.id")
    );
    assert_eq!(
        param(first, "user.fields").as_deref(),
        Some("public_metrics,username")
    );
    assert_eq!(param(first, "pagination_token"), None);
    assert!(param(&seen[1].uri, "pagination_token").is_some());
    let auth = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth, Some(format!("Bearer {}", fake::TOKEN)));

    // nothing new: one empty answer, caught up, cursor unchanged
    let last = pages.last().expect("pages").cursor.clone();
    let p = src.fetch(STREAM, &last).await.expect("poll");
    assert!(p.caught_up && p.events.is_empty() && p.objects == 0);
    assert_eq!(p.cursor, last);
    let uri = server.controls.seen().last().expect("req").uri.clone();
    assert_eq!(param(&uri, "since_id"), Some(newest.clone()));

    // three new mentions: the next poll returns exactly those
    shared.write().expect("lock").push_generated(3);
    let new_ids: Vec<String> = shared.read().expect("lock").post_ids()[..3].to_vec();
    let p = src.fetch(STREAM, &last).await.expect("poll");
    assert!(p.caught_up);
    assert_eq!(p.objects, 3);
    let got: BTreeSet<String> = p
        .events
        .iter()
        .map(|e| {
            e.event_id
                .trim_start_matches("x:2244994945:tweet:")
                .to_string()
        })
        .collect();
    let brand_own = 3 - p.events.len();
    assert!(got.iter().all(|id| new_ids.contains(id)));
    assert_eq!(got.len() + brand_own, 3);
    assert_eq!(cursor(&p).since_id.as_deref(), Some(new_ids[0].as_str()));
}

fn cursor_of(v: &Value) -> Cursor {
    Cursor::from_value(v).expect("cursor")
}

#[tokio::test]
async fn resuming_from_a_stored_cursor_continues_where_it_stopped() {
    let data = fake::generate(60, 2);
    let want = expected_ids(&data);
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 10);
    let mut c = src.initial_cursor(STREAM, None);
    let mut first_run = Vec::new();
    for _ in 0..3 {
        let p = src.fetch(STREAM, &c).await.expect("fetch");
        c = p.cursor.clone();
        first_run.push(p);
    }
    drop(src);
    // a new process: same config, the stored cursor
    let mut src = source(&server, 10);
    let rest = walk(&mut src, c).await;
    assert_eq!(rest.len(), 3);
    let mut all = event_ids(&first_run);
    all.extend(event_ids(&rest));
    let set: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), set.len(), "no duplicates");
    assert_eq!(set, want, "no gap");
}

#[tokio::test]
async fn a_refused_pagination_token_restarts_the_walk_from_since_id() {
    let data = fake::generate(12, 3);
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 10);
    let stale = Cursor {
        since_id: Some("1900000000000000000".into()),
        pagination_token: Some("expired-token".into()),
        walk_newest_id: Some("1900000004152360960".into()),
        walk_objects: 10,
        ..Cursor::default()
    };
    match src.fetch(STREAM, &stale.to_value()).await {
        Err(SourceError::CursorInvalid {
            message,
            restart_from,
        }) => {
            assert!(message.contains("x_brand"), "{message}");
            assert!(message.contains("pagination_token"), "{message}");
            assert_eq!(
                cursor_of(&restart_from),
                Cursor {
                    since_id: Some("1900000000000000000".into()),
                    ..Cursor::default()
                }
            );
        }
        other => panic!("expected CursorInvalid, got {other:?}"),
    }
    // a cursor that is not ours at all
    match src.fetch(STREAM, &json!({"max_id": 5})).await {
        Err(SourceError::CursorInvalid { restart_from, .. }) => {
            assert_eq!(cursor_of(&restart_from), Cursor::default())
        }
        other => panic!("expected CursorInvalid, got {other:?}"),
    }
}

#[tokio::test]
async fn since_date_becomes_start_time() {
    let data = fake::generate(50, 4);
    // posts are 90 s apart from generated_time(0): seq 40.. are after this time
    let since = fake::generated_time(40);
    let want: BTreeSet<String> = data
        .expected(now())
        .events
        .into_iter()
        .filter(|e| e.occurred_at >= since)
        .map(|e| e.event_id)
        .collect();
    assert!(!want.is_empty());
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 5);
    let c = src.initial_cursor(STREAM, Some(since));
    assert_eq!(
        cursor_of(&c),
        Cursor {
            start_time: Some(since.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ..Cursor::default()
        }
    );
    let pages = walk(&mut src, c).await;
    let got: BTreeSet<String> = event_ids(&pages).into_iter().collect();
    assert_eq!(got, want);
    let seen = server.controls.seen();
    for s in &seen {
        assert_eq!(
            param(&s.uri, "start_time").as_deref(),
            Some(since.format("%Y-%m-%dT%H:%M:%SZ").to_string().as_str())
        );
    }
    // once synced, since_id replaces start_time
    let last = cursor(pages.last().expect("pages"));
    assert!(last.since_id.is_some() && last.start_time.is_none());
    // X refuses start_time before 2010-11-06 and milliseconds
    assert_eq!(
        super::start_time("2001-01-01T00:00:00Z".parse().expect("t")),
        "2010-11-06T00:00:01Z"
    );
    assert_eq!(
        super::start_time("2026-01-31T10:00:00.250Z".parse().expect("t")),
        "2026-01-31T10:00:00Z"
    );
}

#[tokio::test]
async fn since_with_nothing_found_keeps_its_bound() {
    let data = fake::generate(5, 5);
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 10);
    let c = src.initial_cursor(STREAM, Some(Utc::now()));
    let p = src.fetch(STREAM, &c).await.expect("fetch");
    assert!(p.caught_up && p.events.is_empty());
    assert_eq!(p.cursor, c, "start_time kept for the next poll");
}

#[tokio::test]
async fn waits_for_retry_after_then_succeeds() {
    let server = FakeServer::start(fake::router(fake::generate(5, 6))).await;
    server.controls.push_fault(Fault::too_many(1));
    let mut src = source(&server, 10);
    let t = Instant::now();
    let p = src
        .fetch(STREAM, &Value::Null)
        .await
        .expect("after the wait");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(p.objects, 5);
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![429, 200]);
}

#[tokio::test]
async fn a_429_with_x_rate_limit_reset_waits_for_the_reset() {
    let server = FakeServer::start(fake::router(fake::generate(5, 6))).await;
    let reset = Utc::now().timestamp() + 2;
    server.controls.push_fault(
        Fault::status(429)
            .header("x-rate-limit-limit", "450")
            .header("x-rate-limit-remaining", "0")
            .header("x-rate-limit-reset", &reset.to_string())
            .body(r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#),
    );
    let mut src = source(&server, 10);
    let t = Instant::now();
    src.fetch(STREAM, &Value::Null)
        .await
        .expect("after the reset");
    // the reset is 1–2 s away (epoch seconds)
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn remaining_zero_on_a_200_makes_the_next_call_wait_for_the_reset() {
    let mut data = fake::generate(30, 7);
    data.rate_limit = RateLimit {
        limit: 2,
        window_secs: 2,
    };
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 10);
    let p1 = src.fetch(STREAM, &Value::Null).await.expect("1");
    let p2 = src.fetch(STREAM, &p1.cursor).await.expect("2");
    // the second answer said remaining 0: the third call waits for the window
    let t = Instant::now();
    let p3 = src.fetch(STREAM, &p2.cursor).await.expect("3");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(p3.caught_up);
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![200, 200, 200], "no 429 was needed");
    // the fake's own limiter does answer 429 past the limit (seen by a raw client)
    let url = format!("{}/2/users/{BRAND_ID}/mentions", server.base_url);
    let raw = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = raw
            .get(&url)
            .bearer_auth(fake::TOKEN)
            .send()
            .await
            .expect("send");
        assert!(r.headers().contains_key("x-rate-limit-reset"));
        codes.push(r.status().as_u16());
    }
    assert!(codes.contains(&429), "{codes:?}");
}

#[tokio::test]
async fn a_503_is_retried() {
    let server = FakeServer::start(fake::router(fake::generate(5, 8))).await;
    server.controls.push_fault(Fault::status(503));
    let mut src = source(&server, 10);
    let p = src.fetch(STREAM, &Value::Null).await.expect("retried");
    assert_eq!(p.objects, 5);
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![503, 200]);
}

#[tokio::test]
async fn a_refused_token_is_an_auth_error_naming_the_instance_and_the_fix() {
    let server = FakeServer::start(fake::router(fake::generate(5, 9))).await;
    let mut cfg = fake::test_config(&server.base_url);
    cfg.bearer_token = Secret::new("wrong-token-s3cr3t");
    let mut src = Source::new("x_brand", cfg, &settings()).expect("source");
    match src.fetch(STREAM, &Value::Null).await {
        Err(SourceError::Api(e)) => {
            assert!(e.is_auth(), "{e}");
            let m = e.to_string();
            assert!(m.contains("x_brand"), "{m}");
            assert!(m.contains("connectors.x_brand.bearer_token"), "{m}");
            assert!(m.contains("Bearer Token"), "{m}");
            assert!(!m.contains("wrong-token-s3cr3t"), "{m}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert_eq!(server.controls.seen().len(), 1, "not retried");
}

#[tokio::test]
async fn an_unknown_brand_user_is_an_error_not_an_empty_timeline() {
    let server = FakeServer::start(fake::router(fake::generate(5, 10))).await;
    let mut cfg = fake::test_config(&server.base_url);
    cfg.user_id = "12345".into();
    let mut src = Source::new("x_brand", cfg, &settings()).expect("source");
    match src.fetch(STREAM, &Value::Null).await {
        Err(SourceError::Api(e)) => {
            assert!(!e.is_auth());
            let m = e.to_string();
            assert!(m.contains("connectors.x_brand.user_id"), "{m}");
            assert!(m.contains("12345"), "{m}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_post_is_rejected_and_the_page_goes_on() {
    let mut data = fake::generate(8, 11);
    let ids = data.post_ids();
    let sort: u64 = ids[3].parse::<u64>().expect("id") - 1;
    data.add_malformed(
        sort,
        json!({"id": sort.to_string(), "text": "no author", "created_at": "2025-06-01T00:00:00.000Z"}),
    );
    let want = expected_ids(&data);
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 100);
    let p = src.fetch(STREAM, &Value::Null).await.expect("fetch");
    assert!(p.caught_up);
    assert_eq!(p.objects, 9);
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].object_id, sort.to_string());
    assert!(p.rejected[0].reason.contains("author_id"));
    let got: BTreeSet<String> = p.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(got, want);
    // the malformed post still counts for since_id (it is not fetched again)
    assert_eq!(cursor(&p).since_id.as_deref(), Some(ids[0].as_str()));
}

#[tokio::test]
async fn a_walk_deeper_than_x_serves_ends_at_its_depth() {
    let mut data = fake::generate(30, 12);
    data.timeline_depth = 20;
    let newest = data.post_ids()[0].clone();
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source(&server, 10);
    let pages = walk(&mut src, Value::Null).await;
    let objects: u64 = pages.iter().map(|p| p.objects).sum();
    assert_eq!(objects, 20);
    assert_eq!(cursor(pages.last().expect("p")).since_id, Some(newest));
}

// ---------------------------------------------------------------------------
// config

fn parse(body: &str) -> Result<Config, String> {
    let t: toml::Table = toml::from_str(&format!("[x_brand]\ntype = \"x\"\n{body}")).expect("toml");
    let mut inst = crate::registry::parse_instances(&t)?;
    match inst.remove("x_brand").map(|i| i.config) {
        Some(crate::registry::SourceConfig::X(c)) => Ok(c),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_defaults_and_checks() {
    let c = parse("bearer_token = \"AAAA-secret-token\"\nuser_id = \"2244994945\"").expect("ok");
    assert_eq!(c.api_url, "https://api.x.com");
    assert_eq!(c.max_results, 100);
    assert_eq!(c.user_id, "2244994945");
    assert!(!format!("{c:?}").contains("AAAA-secret-token"));
    // a number is fine too
    let c = parse("bearer_token = \"t\"\nuser_id = 2244994945\nmax_results = 5").expect("ok");
    assert_eq!(c.user_id, "2244994945");

    let e = parse("bearer_token = \"t\"\nuser_id = \"1\"\nbearer = \"x\"").expect_err("unknown");
    assert!(e.contains("bearer"), "{e}");
    assert!(e.contains("connectors.x_brand"), "{e}");
    let e = parse("bearer_token = \"t\"\nuser_id = \"@acme\"").expect_err("handle");
    assert!(e.contains("connectors.x_brand.user_id"), "{e}");
    let e = parse("bearer_token = \"t\"\nuser_id = \"000\"").expect_err("zeros");
    assert!(e.contains("connectors.x_brand.user_id"), "{e}");
    let e = parse("bearer_token = \"t\"\nuser_id = \"1\"\nmax_results = 101").expect_err("max");
    assert!(e.contains("connectors.x_brand.max_results"), "{e}");
    let e = parse("bearer_token = \"t\"\nuser_id = \"1\"\nmax_results = 4").expect_err("min");
    assert!(e.contains("connectors.x_brand.max_results"), "{e}");
    let e =
        parse("bearer_token = \"t\"\nuser_id = \"1\"\napi_url = \"api.x.com\"").expect_err("url");
    assert!(e.contains("connectors.x_brand.api_url"), "{e}");
    let e = parse("user_id = \"1\"").expect_err("no token");
    assert!(e.contains("bearer_token"), "{e}");
    let e = parse("bearer_token = \"t\"").expect_err("no user");
    assert!(e.contains("user_id"), "{e}");
    let e = parse("bearer_token = \"\"\nuser_id = \"1\"").expect_err("empty secret");
    assert!(e.contains("empty"), "{e}");
    assert_eq!(
        Config {
            user_id: "007".into(),
            ..fake::test_config("http://h")
        }
        .brand_id(),
        "7"
    );
}
