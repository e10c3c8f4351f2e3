//! Mastodon connector tests: mapping of documented objects, the source against the
//! fake server (pagination, cursors, --since, faults, rate limits), config.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use socialcrm_schemas::{IdType, Identifier, Normalizer};

use super::fake::{self, FakeData, PrevLink, BRAND_ID, FAKE_DOMAIN, FAKE_TOKEN};
use super::mapping::{self, html_links, html_to_text, Context, Mapped};
use super::*;
use crate::runtime::config::{RuntimeSettings, Secret};
use crate::runtime::Source as _;
use crate::testkit::{FakeServer, Fault};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn types() -> Vec<String> {
    config::default_types()
}

fn ctx<'a>(types: &'a [String], brand_id: &'a str, brand_handle: &'a str) -> Context<'a> {
    Context {
        domain: "mastodon.social",
        source: "mastodon:mastodon.social",
        brand_id,
        brand_handle,
        types,
        received_at: t("2024-03-01T12:00:00Z"),
        max_text_chars: 2000,
    }
}

fn mastodon(v: &str) -> Identifier {
    Identifier::new(IdType::Mastodon, v)
}

fn event(n: &Value, c: &Context<'_>) -> socialcrm_schemas::CanonicalEvent {
    match mapping::map_notification(n, c) {
        Ok(Mapped::Event(e)) => {
            let mut e = *e;
            let mut check = e.clone();
            let dropped = check
                .validate_and_normalize(&Normalizer::default(), t("2024-03-02T00:00:00Z"))
                .expect("mapped event is valid");
            assert!(dropped.is_empty(), "identifiers dropped: {dropped:?}");
            assert_eq!(check, e, "mapping already normalises");
            e.received_at = c.received_at;
            e
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

// --- the documented examples (docs.joinmastodon.org, methods/notifications) ---

/// The `mention` example of GET /api/v1/notifications, completed with the
/// documented Account/Status attributes the excerpt elides.
fn doc_mention() -> Value {
    json!({
        "id": "34975861",
        "type": "mention",
        "created_at": "2019-11-23T07:49:02.064Z",
        "account": {
            "id": "971724", "username": "zsc", "acct": "zsc", "display_name": "zsc",
            "locked": false, "bot": false, "note": "<p>hi</p>",
            "url": "https://mastodon.social/@zsc",
            "avatar": "https://files.mastodon.social/accounts/avatars/000/971/724/original/9f1c.jpeg",
            "followers_count": 12, "following_count": 30, "statuses_count": 400,
            "fields": []
        },
        "status": {
            "id": "103186126728896492",
            "created_at": "2019-11-23T07:49:01.940Z",
            "in_reply_to_id": "103186038209478945",
            "in_reply_to_account_id": "14715",
            "sensitive": false, "spoiler_text": "", "visibility": "public", "language": "en",
            "uri": "https://mastodon.social/users/zsc/statuses/103186126728896492",
            "url": "https://mastodon.social/@zsc/103186126728896492",
            "replies_count": 0, "reblogs_count": 0, "favourites_count": 1,
            "content": "<p><span class=\"h-card\"><a href=\"https://mastodon.social/@trwnh\" class=\"u-url mention\">@<span>trwnh</span></a></span> sup!</p>",
            "account": {"id": "971724", "username": "zsc", "acct": "zsc"},
            "media_attachments": [],
            "mentions": [{"id": "14715", "username": "trwnh", "url": "https://mastodon.social/@trwnh", "acct": "trwnh"}],
            "tags": [], "emojis": []
        }
    })
}

/// The `favourite` example.
fn doc_favourite() -> Value {
    json!({
        "id": "34975535",
        "type": "favourite",
        "created_at": "2019-11-23T07:29:18.903Z",
        "account": {"id": "297420", "username": "haskal", "acct": "haskal@cybre.space",
            "display_name": "haskal", "url": "https://cybre.space/@haskal",
            "followers_count": 1500, "following_count": 200, "statuses_count": 9000, "bot": false,
            "note": "", "fields": []},
        "status": {
            "id": "103186046267791694",
            "created_at": "2019-11-23T07:28:34.210Z",
            "in_reply_to_id": "103186044372624124",
            "in_reply_to_account_id": "297420",
            "visibility": "public",
            "url": "https://mastodon.social/@trwnh/103186046267791694",
            "content": "<p>i think so</p>",
            "account": {"id": "14715", "username": "trwnh", "acct": "trwnh"},
            "mentions": [{"id": "297420", "username": "haskal", "url": "https://cybre.space/@haskal", "acct": "haskal@cybre.space"}],
            "tags": []
        }
    })
}

/// The Account entity example (docs, entities/Account), HTML tidied.
fn doc_account() -> Value {
    json!({
        "id": "23634",
        "username": "noiob",
        "acct": "noiob@awoo.space",
        "display_name": "ikea shark fan account",
        "locked": false,
        "bot": false,
        "created_at": "2017-02-08T02:00:53.274Z",
        "note": "<p>:ms_rainbow_flag: <a href=\"https://awoo.space/tags/awoo\" class=\"mention hashtag\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">#<span>awoo</span></a>.space ~ compsci student ~ avatar by <span class=\"h-card\"><a href=\"https://weirder.earth/@dzuk\" class=\"u-url mention\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">@<span>dzuk</span></a></span></p>",
        "url": "https://awoo.space/@noiob",
        "avatar": "https://files.mastodon.social/accounts/avatars/000/023/634/original/6ca8804dc46800ad.png",
        "header": "https://files.mastodon.social/accounts/headers/000/023/634/original/256eb8d7ac40f49a.png",
        "followers_count": 547,
        "following_count": 404,
        "statuses_count": 28468,
        "last_status_at": "2019-11-17T00:02:23.693Z",
        "emojis": [],
        "fields": [
            {"name": "Pronouns", "value": "they/them", "verified_at": null},
            {"name": "Alt", "value": "<span class=\"h-card\"><a href=\"https://cybre.space/@noiob\" class=\"u-url mention\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">@<span>noiob</span></a></span>", "verified_at": null},
            {"name": "Website", "value": "<a href=\"http://shork.xyz\" rel=\"nofollow noopener noreferrer\" target=\"_blank\"><span class=\"invisible\">http://</span><span class=\"\">shork.xyz</span><span class=\"invisible\"></span></a>", "verified_at": "2019-11-10T10:31:10.744+00:00"},
            {"name": "Blog", "value": "<a href=\"https://blog.awoo.example/?a=1&amp;b=2\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">blog</a>", "verified_at": null}
        ]
    })
}

#[test]
fn documented_mention_that_replies_to_the_brand_is_a_reply() {
    let ty = types();
    // the example's notified account is trwnh (id 14715) on mastodon.social
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let e = event(&doc_mention(), &c);
    assert_eq!(e.event_id, "mastodon:mastodon.social:notification:34975861");
    assert_eq!(e.source, "mastodon:mastodon.social");
    assert_eq!(e.channel, socialcrm_schemas::Channel::Social);
    assert_eq!(e.event_type, "reply");
    assert_eq!(e.name, None);
    assert_eq!(e.occurred_at, t("2019-11-23T07:49:02.064Z"));
    assert_eq!(e.received_at, t("2024-03-01T12:00:00Z"));
    assert_eq!(e.schema_version, socialcrm_schemas::SCHEMA_VERSION);
    // a local account: the server's domain is appended
    assert_eq!(e.identifiers, vec![mastodon("@zsc@mastodon.social")]);
    assert_eq!(e.target, vec![mastodon("@trwnh@mastodon.social")]);
    assert_eq!(
        Value::Object(e.traits.clone()),
        json!({
            "name": "zsc",
            "mastodon_handle": "@zsc@mastodon.social",
            "mastodon_url": "https://mastodon.social/@zsc",
            "followers_count": 12,
            "following_count": 30,
            "statuses_count": 400,
            "bot": false,
            "avatar_url": "https://files.mastodon.social/accounts/avatars/000/971/724/original/9f1c.jpeg",
            "bio": "hi"
        })
    );
    assert_eq!(
        Value::Object(e.properties.to_map()),
        json!({
            "notification_id": "34975861",
            "notification_type": "mention",
            "account_id": "971724",
            "status_id": "103186126728896492",
            "status_url": "https://mastodon.social/@zsc/103186126728896492",
            "status_created_at": "2019-11-23T07:49:01.940Z",
            "text": "@trwnh sup!",
            "language": "en",
            "visibility": "public",
            "sensitive": false,
            "in_reply_to_id": "103186038209478945",
            "in_reply_to_account_id": "14715",
            "replies_count": 0,
            "reblogs_count": 0,
            "favourites_count": 1,
            "mentions": ["@trwnh@mastodon.social"]
        })
    );
    assert!(e.context.is_empty());
    assert!(e.revenue.is_none());

    // the same status, not replying to the brand: a mention
    let mut n = doc_mention();
    n["status"]["in_reply_to_account_id"] = json!("999");
    assert_eq!(event(&n, &c).event_type, "mention");
    n["status"]["in_reply_to_account_id"] = Value::Null;
    n["status"]["in_reply_to_id"] = Value::Null;
    let e = event(&n, &c);
    assert_eq!(e.event_type, "mention");
    assert!(!e.properties.to_map().contains_key("in_reply_to_id"));
}

#[test]
fn documented_favourite_is_a_like_of_the_brand() {
    let ty = types();
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let e = event(&doc_favourite(), &c);
    assert_eq!(e.event_id, "mastodon:mastodon.social:notification:34975535");
    assert_eq!(e.event_type, "like");
    assert_eq!(e.occurred_at, t("2019-11-23T07:29:18.903Z"));
    // a remote account keeps its own domain
    assert_eq!(e.identifiers, vec![mastodon("@haskal@cybre.space")]);
    assert_eq!(e.target, vec![mastodon("@trwnh@mastodon.social")]);
    let p = e.properties.to_map();
    assert_eq!(p["status_id"], "103186046267791694");
    assert_eq!(p["text"], "i think so");
    assert_eq!(p["notification_type"], "favourite");
    // the liked status is a reply *by the brand* to haskal: still a like
    assert_eq!(p["in_reply_to_account_id"], "297420");
    assert_eq!(e.traits["followers_count"], 1500);
    assert!(!e.traits.contains_key("bio"), "empty note: no bio");
}

#[test]
fn reblog_follow_and_status_types() {
    let ty = types();
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let mut n = doc_favourite();
    n["type"] = json!("reblog");
    let e = event(&n, &c);
    assert_eq!(e.event_type, "reshare");
    assert_eq!(e.target, vec![mastodon("@trwnh@mastodon.social")]);

    let follow = fake::notification(
        77,
        "follow",
        "2024-02-01T10:00:00.000Z",
        &doc_account(),
        None,
    );
    let e = event(&follow, &c);
    assert_eq!(e.event_type, "follow");
    assert_eq!(e.identifiers, vec![mastodon("@noiob@awoo.space")]);
    assert_eq!(e.target, vec![mastodon("@trwnh@mastodon.social")]);
    let p = e.properties.to_map();
    assert_eq!(
        Value::Object(p),
        json!({"notification_id": "77", "notification_type": "follow", "account_id": "23634"})
    );
    // bio links: fields' and note's web links; mentions and hashtags are not links
    assert_eq!(
        e.traits["links"],
        json!(["http://shork.xyz", "https://blog.awoo.example/?a=1&b=2"])
    );
    assert_eq!(e.traits["verified_links"], json!(["http://shork.xyz"]));
    assert_eq!(e.traits["name"], "ikea shark fan account");
    assert_eq!(e.traits["followers_count"], 547);
    assert_eq!(e.traits["following_count"], 404);
    assert_eq!(e.traits["statuses_count"], 28468);
    assert_eq!(e.traits["mastodon_url"], "https://awoo.space/@noiob");
    assert_eq!(
        e.traits["bio"],
        ":ms_rainbow_flag: #awoo.space ~ compsci student ~ avatar by @dzuk"
    );
    // claimed links never become identifiers
    assert_eq!(e.identifiers.len(), 1);

    // status: a subscribed account posted; mentions are the targets
    let mut post = doc_mention();
    post["type"] = json!("status");
    post["status"]["in_reply_to_account_id"] = Value::Null;
    post["status"]["mentions"] = json!([
        {"id": "5", "username": "ann", "url": "https://fosstodon.org/@ann", "acct": "Ann@Fosstodon.org"},
        {"id": "971724", "username": "zsc", "url": "https://mastodon.social/@zsc", "acct": "zsc"},
        {"id": "6", "username": "bad", "acct": "not a handle"}
    ]);
    post["status"]["tags"] = json!([{"name": "Rust", "url": "https://mastodon.social/tags/rust"}]);
    let e = event(&post, &c);
    assert_eq!(e.event_type, "post");
    // the author mentioning themselves is no edge; an invalid handle is left out
    assert_eq!(e.target, vec![mastodon("@ann@fosstodon.org")]);
    let p = e.properties.to_map();
    assert_eq!(p["tags"], json!(["rust"]));
    assert_eq!(
        p["mentions"],
        json!(["@ann@fosstodon.org", "@zsc@mastodon.social"])
    );
}

#[test]
fn mention_always_targets_the_brand_and_other_mentions() {
    let ty = types();
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let mut n = doc_mention();
    n["status"]["in_reply_to_account_id"] = Value::Null;
    n["status"]["mentions"] = json!([
        {"id": "8", "username": "bob", "acct": "bob@hachyderm.io"}
    ]);
    let e = event(&n, &c);
    assert_eq!(e.event_type, "mention");
    assert_eq!(
        e.target,
        vec![
            mastodon("@trwnh@mastodon.social"),
            mastodon("@bob@hachyderm.io")
        ]
    );
}

#[test]
fn text_is_plain_and_bounded() {
    let (s, cut) = html_to_text(
        "<p>Hello &amp; welcome<br>to <a href=\"https://x.example/a\"><span class=\"invisible\">https://</span><span class=\"\">x.example/a</span></a> &#39;ok&#39; &#x1F600;</p><p>second &lt;p&gt; para</p>",
        2000,
    );
    assert_eq!(
        s,
        "Hello & welcome\nto https://x.example/a 'ok' 😀\n\nsecond <p> para"
    );
    assert!(!cut);
    let (s, cut) = html_to_text("<p>ééééé</p>", 3);
    assert_eq!((s.as_str(), cut), ("ééé", true));
    assert_eq!(html_to_text("a < b & c", 100).0, "a < b & c");
    assert_eq!(html_to_text("", 100).0, "");

    let ty = types();
    let mut c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    c.max_text_chars = 5;
    let e = event(&doc_mention(), &c);
    let p = e.properties.to_map();
    assert_eq!(p["text"], "@trwn");
    assert_eq!(p["text_truncated"], true);
}

#[test]
fn links_skip_mentions_and_hashtags() {
    let html = r#"<p><a href="https://a.example/" class="" rel="me">a</a> <a class="mention hashtag" href="https://m.example/tags/x">#x</a> <a href='https://b.example/p?q=1&amp;r=2'>b</a> <a href="mailto:x@y.z">m</a> <a href="https://a.example/">dup</a></p>"#;
    assert_eq!(
        html_links(html),
        vec!["https://a.example/", "https://b.example/p?q=1&r=2"]
    );
}

#[test]
fn handles() {
    assert_eq!(
        mapping::handle("zsc", "mastodon.social").as_deref(),
        Ok("@zsc@mastodon.social")
    );
    assert_eq!(
        mapping::handle("Haskal@Cybre.Space", "mastodon.social").as_deref(),
        Ok("@haskal@cybre.space")
    );
    assert!(mapping::handle("", "mastodon.social").is_err());
    assert!(mapping::handle("a b", "mastodon.social").is_err());
}

#[test]
fn malformed_notifications_are_rejected_with_id_and_reason_and_the_rest_mapped() {
    let ty = types();
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let mut no_time = doc_favourite();
    no_time["id"] = json!("2");
    no_time["created_at"] = json!("yesterday");
    let mut no_account = doc_favourite();
    no_account["id"] = json!("3");
    no_account.as_object_mut().expect("obj").remove("account");
    let mut bad_acct = doc_favourite();
    bad_acct["id"] = json!("4");
    bad_acct["account"]["acct"] = json!(42);
    let mut no_status = doc_mention();
    no_status["id"] = json!("5");
    no_status["status"] = Value::Null;
    let mut no_id = doc_favourite();
    no_id.as_object_mut().expect("obj").remove("id");
    let mut unknown = doc_favourite();
    unknown["id"] = json!("6");
    unknown["type"] = json!("admin.sign_up");
    let mut status_no_id = doc_mention();
    status_no_id["id"] = json!("7");
    status_no_id["status"]
        .as_object_mut()
        .expect("obj")
        .remove("id");
    let items = vec![
        doc_mention(),
        no_time,
        no_account,
        json!("not an object"),
        bad_acct,
        no_status,
        no_id,
        unknown,
        status_no_id,
        doc_favourite(),
    ];
    let page = mapping::map_notifications(&items, &c);
    let ids: Vec<&str> = page.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "mastodon:mastodon.social:notification:34975861",
            "mastodon:mastodon.social:notification:34975535"
        ]
    );
    assert_eq!(
        page.skipped, 1,
        "a type not asked for is skipped, not rejected"
    );
    let got: Vec<(String, String)> = page
        .rejected
        .iter()
        .map(|r| (r.object_id.clone(), r.reason.clone()))
        .collect();
    let expect = [
        ("2", "`created_at` `yesterday` is not an ISO 8601 date-time"),
        ("3", "`account` is missing"),
        ("?", "not a JSON object"),
        ("4", "`account.acct` is missing or not a string"),
        ("5", "`status` is required in a `mention` notification"),
        ("?", "`id` is missing"),
        ("7", "`status.id` is missing"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:?}");
    for ((id, reason), (eid, ereason)) in got.iter().zip(expect) {
        assert_eq!(id, eid);
        assert!(reason.contains(ereason), "{reason} should say {ereason}");
    }
    // the raw object travels to the DLQ
    let raw: Value = serde_json::from_slice(&page.rejected[0].raw).expect("raw json");
    assert_eq!(raw["created_at"], "yesterday");
}

#[test]
fn types_not_asked_for_are_skipped() {
    let only_follows = vec!["follow".to_string()];
    let c = ctx(&only_follows, "14715", "@trwnh@mastodon.social");
    assert!(matches!(
        mapping::map_notification(&doc_mention(), &c),
        Ok(Mapped::Skipped(k)) if k == "mention"
    ));
}

#[test]
fn generated_data_maps_to_valid_events_with_twins_sharing_a_claimed_link() {
    let data = fake::generate(600, 42);
    assert_eq!(data.len(), 600);
    let again = fake::generate(600, 42);
    assert_eq!(
        data.notifications(),
        again.notifications(),
        "deterministic per seed"
    );
    let page = data.expected(&types());
    assert!(page.rejected.is_empty(), "{:?}", page.rejected.first());
    assert_eq!(page.events.len(), 600);
    let normalizer = Normalizer::default();
    let mut by_type = std::collections::BTreeMap::<String, usize>::new();
    for e in &page.events {
        let mut c = e.clone();
        c.validate_and_normalize(&normalizer, Utc::now())
            .unwrap_or_else(|err| panic!("{}: {err}", e.event_id));
        *by_type.entry(e.event_type.clone()).or_default() += 1;
        assert!(!e.target.is_empty() || e.event_type == "post", "{e:?}");
        assert!(serde_json::to_vec(e).expect("json").len() < 8 * 1024);
    }
    for ty in ["like", "reshare", "mention", "reply", "follow", "post"] {
        assert!(
            by_type.get(ty).copied().unwrap_or(0) > 10,
            "{ty}: {by_type:?}"
        );
    }
    // twins: different handles, one claimed website
    let mut by_site = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for e in &page.events {
        if let Some(Value::Array(links)) = e.traits.get("links") {
            for l in links {
                by_site
                    .entry(l.as_str().unwrap_or("").to_string())
                    .or_default()
                    .insert(e.identifiers[0].value.clone());
            }
        }
    }
    assert!(
        by_site.values().filter(|h| h.len() >= 2).count() >= 3,
        "a few people have two accounts"
    );
}

// --- the source against the fake server ---

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        max_retry_secs: 20,
        retry_max_interval_ms: 2000,
        request_timeout_secs: 10,
        ..RuntimeSettings::default()
    }
}

fn source_with(base: &str, f: impl FnOnce(&mut Config)) -> Source {
    let mut c = fake::test_config(base);
    f(&mut c);
    Source::new("brand_test", c, &settings()).expect("source")
}

fn min_id(cursor: &Value) -> u64 {
    cursor["min_id"]
        .as_str()
        .expect("min_id")
        .parse()
        .expect("numeric")
}

fn ids_of(page: &crate::runtime::Page) -> Vec<String> {
    page.events.iter().map(|e| e.event_id.clone()).collect()
}

fn expected_ids(data: &FakeData, from: usize) -> Vec<String> {
    let all = data.expected(&types());
    let notes = data.notifications();
    let keep: BTreeSet<String> = notes[from..]
        .iter()
        .map(|n| mapping::event_id(FAKE_DOMAIN, n["id"].as_str().expect("id")))
        .collect();
    all.events
        .into_iter()
        .map(|e| e.event_id)
        .filter(|id| keep.contains(id))
        .collect()
}

#[tokio::test]
async fn walks_every_page_forward_with_the_cursor_after_each_page() {
    let data = fake::generate(95, 7);
    let ids = data.ids();
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut src = source_with(&server.base_url, |c| c.page_size = 20);
    let mut cursor = src.initial_cursor(STREAM, None);
    assert_eq!(cursor, json!({"min_id": "0"}));
    let mut got: Vec<String> = Vec::new();
    for page_no in 0..5 {
        let page = src.fetch(STREAM, &cursor).await.expect("page");
        let served = ((page_no + 1) * 20).min(95);
        assert_eq!(page.objects as usize, served - page_no * 20);
        // the cursor is the highest id synced so far
        assert_eq!(min_id(&page.cursor), ids[served - 1], "page {page_no}");
        // a short page is not the end: only an empty one is
        assert!(!page.caught_up, "page {page_no}");
        assert!(page.rejected.is_empty());
        assert_eq!(
            page.position,
            page.events.iter().map(|e| e.occurred_at).max()
        );
        got.extend(ids_of(&page));
        cursor = page.cursor;
    }
    assert_eq!(
        got,
        expected_ids(&data, 0),
        "every notification, oldest first by page, once"
    );
    assert_eq!(got.len(), 95);
    // nothing more: an empty page, caught up, cursor unchanged
    let page = src.fetch(STREAM, &cursor).await.expect("empty");
    assert!(page.events.is_empty() && page.caught_up);
    assert_eq!(page.cursor, cursor);
    assert_eq!(page.objects, 0);

    // what was asked: bearer token, min_id, limit, types[]; brand and domain once
    let seen = server.controls.seen();
    let notif: Vec<_> = seen
        .iter()
        .filter(|s| s.uri.starts_with("/api/v1/notifications"))
        .collect();
    assert_eq!(notif.len(), 6);
    assert!(
        notif[0].uri.contains("min_id=0&limit=20"),
        "{}",
        notif[0].uri
    );
    for ty in ["mention", "reblog", "favourite", "follow", "status"] {
        assert!(
            notif[0].uri.contains(&format!("types%5B%5D={ty}")),
            "{}",
            notif[0].uri
        );
    }
    assert!(notif[0]
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {FAKE_TOKEN}")));
    assert_eq!(
        seen.iter()
            .filter(|s| s.uri.contains("verify_credentials"))
            .count(),
        1
    );
    assert_eq!(
        seen.iter().filter(|s| s.uri.contains("/instance")).count(),
        1
    );
}

#[tokio::test]
async fn without_a_usable_prev_link_the_cursor_follows_the_page_ids() {
    // a proxy that strips `Link`, or a server whose `prev` lags behind its page:
    // the cursor still ends each page at its newest id, so nothing is read twice
    for prev_link in [PrevLink::Absent, PrevLink::Oldest] {
        let mut data = fake::generate(95, 7);
        data.prev_link = prev_link;
        let ids = data.ids();
        let server = FakeServer::start(fake::router(data.clone())).await;
        let mut src = source_with(&server.base_url, |c| c.page_size = 20);
        let mut cursor = src.initial_cursor(STREAM, None);
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let p = src.fetch(STREAM, &cursor).await.expect("page");
            if p.caught_up {
                break;
            }
            let served = ((pages + 1) * 20).min(95);
            assert_eq!(
                min_id(&p.cursor),
                ids[served - 1],
                "{prev_link:?} page {pages}"
            );
            got.extend(ids_of(&p));
            cursor = p.cursor;
            pages += 1;
        }
        assert_eq!(pages, 5, "{prev_link:?}");
        assert_eq!(got, expected_ids(&data, 0), "{prev_link:?}");
    }
}

#[tokio::test]
async fn a_server_capping_limit_below_page_size_is_walked_to_the_end() {
    // Mastodon before 4.1 answered at most 30 notifications per page
    let mut data = fake::generate(100, 13);
    data.max_limit = 30;
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut src = source_with(&server.base_url, |c| c.page_size = 40);
    let mut cursor = src.initial_cursor(STREAM, None);
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let p = src.fetch(STREAM, &cursor).await.expect("page");
        sizes.push(p.objects);
        got.extend(ids_of(&p));
        cursor = p.cursor;
        if p.caught_up {
            break;
        }
    }
    assert_eq!(sizes, vec![30, 30, 30, 10, 0]);
    assert_eq!(got, expected_ids(&data, 0));
}

#[tokio::test]
async fn resuming_from_a_stored_cursor_continues_exactly_where_it_stopped() {
    let data = fake::generate(70, 11);
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut first = source_with(&server.base_url, |c| c.page_size = 25);
    let mut cursor = first.initial_cursor(STREAM, None);
    let mut got: Vec<String> = Vec::new();
    for _ in 0..2 {
        let p = first.fetch(STREAM, &cursor).await.expect("page");
        got.extend(ids_of(&p));
        cursor = p.cursor;
    }
    // the stored cursor survives a restart as JSON
    let mut cursor: Value =
        serde_json::from_str(&serde_json::to_string(&cursor).expect("ser")).expect("de");
    drop(first);
    let mut second = source_with(&server.base_url, |c| c.page_size = 25);
    loop {
        let p = second.fetch(STREAM, &cursor).await.expect("page");
        got.extend(ids_of(&p));
        cursor = p.cursor.clone();
        if p.caught_up {
            break;
        }
    }
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates");
    assert_eq!(got, expected_ids(&data, 0), "no gap");
}

#[tokio::test]
async fn since_finds_the_start_by_bisection_and_skips_older_notifications() {
    let data = fake::generate(300, 5);
    let notes = data.notifications();
    let ids = data.ids();
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut src = source_with(&server.base_url, |c| c.page_size = 80);
    let since = t(notes[120]["created_at"].as_str().expect("time"));
    let cursor = src.initial_cursor(STREAM, Some(since));
    assert_eq!(cursor, json!({"since": notes[120]["created_at"]}));
    let before = server.controls.seen().len();
    let seek = src.fetch(STREAM, &cursor).await.expect("seek");
    assert!(seek.events.is_empty() && !seek.caught_up);
    let start = min_id(&seek.cursor);
    assert!(
        start >= ids[119] && start < ids[120],
        "{start} between {} and {}",
        ids[119],
        ids[120]
    );
    let probes = server.controls.seen().len() - before - 2; // minus brand and domain
    assert!(probes <= 20, "{probes} probes for ids up to {}", ids[299]);
    let mut got = Vec::new();
    let mut cursor = seek.cursor;
    loop {
        let p = src.fetch(STREAM, &cursor).await.expect("page");
        got.extend(ids_of(&p));
        cursor = p.cursor;
        if p.caught_up {
            break;
        }
    }
    assert_eq!(got, expected_ids(&data, 120));
    assert!(
        cursor.get("since").is_none(),
        "dropped once caught up: {cursor}"
    );

    // a date after everything: nothing to backfill, the cursor is the newest id
    let later = t("2030-01-01T00:00:00Z");
    let p = src
        .fetch(STREAM, &src.initial_cursor(STREAM, Some(later)))
        .await
        .expect("seek");
    assert_eq!(min_id(&p.cursor), ids[299]);
    // a date before everything: from the start
    let earlier = t("2000-01-01T00:00:00Z");
    let p = src
        .fetch(STREAM, &src.initial_cursor(STREAM, Some(earlier)))
        .await
        .expect("seek");
    assert!(min_id(&p.cursor) < ids[0]);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let server = FakeServer::start(fake::router(fake::generate(5, 1))).await;
    server.controls.push_fault(
        Fault::too_many(1)
            .body(r#"{"error":"Too many requests"}"#)
            .on_path("/api/v1/notifications"),
    );
    let mut src = source_with(&server.base_url, |_| {});
    let started = Instant::now();
    let page = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("page after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page.events.len(), 5);
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![200, 200, 429, 200]);
}

#[tokio::test]
async fn server_error_is_retried() {
    let server = FakeServer::start(fake::router(fake::generate(5, 1))).await;
    server
        .controls
        .push_fault(Fault::status(503).on_path("/api/v1/notifications"));
    let mut src = source_with(&server.base_url, |_| {});
    let page = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("page after the retry");
    assert_eq!(page.events.len(), 5);
    let statuses: Vec<u16> = server.controls.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![200, 200, 503, 200]);
}

#[tokio::test]
async fn remaining_zero_makes_the_next_call_wait_for_the_reset() {
    let mut data = fake::generate(30, 3);
    data.rate_limit = 3;
    data.rate_window = Duration::from_secs(2);
    let server = FakeServer::start(fake::router(data)).await;
    let mut src = source_with(&server.base_url, |c| c.page_size = 20);
    let started = Instant::now();
    // calls 1-3: brand, domain, first page (the last says Remaining: 0)
    let p1 = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("p1");
    assert_eq!(server.controls.seen().len(), 3);
    let p2 = src.fetch(STREAM, &p1.cursor).await.expect("p2");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1800), "{waited:?}");
    assert_eq!((p1.events.len(), p2.events.len()), (20, 10));
    // it waited instead of running into a 429
    assert!(server.controls.seen().iter().all(|s| s.status == 200));
}

#[tokio::test]
async fn refused_token_is_an_auth_error_naming_the_instance_and_the_fix() {
    let server = FakeServer::start(fake::router(fake::generate(5, 1))).await;
    let mut src = source_with(&server.base_url, |c| {
        c.access_token = Secret::new("wrong-token-value")
    });
    let err = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect_err("401");
    let SourceError::Api(e) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert!(e.is_auth(), "{e}");
    assert_eq!(e.status(), Some(401));
    let msg = e.to_string();
    assert!(msg.contains("brand_test"), "{msg}");
    assert!(msg.contains("connectors.brand_test.access_token"), "{msg}");
    assert!(msg.contains("read:notifications"), "{msg}");
    assert!(!msg.contains("wrong-token-value"), "{msg}");
    // one call, not retried
    assert_eq!(server.controls.seen().len(), 1);
}

#[tokio::test]
async fn malformed_objects_are_skipped_with_a_rejection_and_the_cursor_moves_past_them() {
    let mut data = fake::generate(10, 9);
    let ids = data.ids();
    let mut bad = data.notifications()[3].clone();
    bad["id"] = json!((ids[3] + 1).to_string());
    bad["created_at"] = json!("not a time");
    data.insert_raw(ids[3] + 1, "favourite", &bad);
    let top = ids[9] + 5;
    // the newest object has no id at all: only the Link header says where it is
    data.insert_raw(
        top,
        "follow",
        &json!({"type": "follow", "created_at": "2024-03-02T00:00:00Z"}),
    );
    let server = FakeServer::start(fake::router(data.clone())).await;
    let mut src = source_with(&server.base_url, |_| {});
    let page = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("page");
    assert_eq!(page.objects, 12);
    assert_eq!(page.events.len(), 10);
    let rejected: Vec<(&str, &str)> = page
        .rejected
        .iter()
        .map(|r| (r.object_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, "?");
    assert!(rejected[0].1.contains("`id`"));
    assert_eq!(rejected[1].0, (ids[3] + 1).to_string());
    assert!(rejected[1].1.contains("created_at"));
    assert_eq!(min_id(&page.cursor), top);
}

#[tokio::test]
async fn types_are_asked_for_and_domain_falls_back_to_the_v1_instance() {
    let data = fake::generate(60, 4);
    let server = FakeServer::start(fake::router(data.clone())).await;
    server
        .controls
        .push_fault(Fault::status(404).on_path("/api/v2/instance"));
    let only = vec!["follow".to_string()];
    let mut src = source_with(&server.base_url, |c| c.types = only.clone());
    let page = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("page");
    let want = data.expected(&only);
    assert!(!want.events.is_empty());
    assert_eq!(
        ids_of(&page),
        want.events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>()
    );
    assert!(page.events.iter().all(|e| e.event_type == "follow"
        && e.source == "mastodon:social.example"
        && e.target == vec![mastodon("@brand@social.example")]));
    let uris: Vec<String> = server
        .controls
        .seen()
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert!(uris.iter().any(|u| u == "/api/v1/instance"), "{uris:?}");
}

#[tokio::test]
async fn a_configured_domain_saves_the_instance_call() {
    let server = FakeServer::start(fake::router(fake::generate(3, 2))).await;
    let mut src = source_with(&server.base_url, |c| c.domain = "Social.Example".into());
    let page = src
        .fetch(STREAM, &src.initial_cursor(STREAM, None))
        .await
        .expect("page");
    assert_eq!(page.events.len(), 3);
    assert!(page.events[0]
        .event_id
        .starts_with("mastodon:social.example:notification:"));
    assert!(!server
        .controls
        .seen()
        .iter()
        .any(|s| s.uri.contains("instance")));
}

#[tokio::test]
async fn an_unusable_stored_cursor_restarts_from_the_beginning() {
    let server = FakeServer::start(fake::router(fake::generate(3, 2))).await;
    let mut src = source_with(&server.base_url, |_| {});
    for bad in [json!("garbage"), json!({"min_id": ""}), json!({"page": 3})] {
        match src.fetch(STREAM, &bad).await {
            Err(SourceError::CursorInvalid { restart_from, .. }) => {
                assert_eq!(restart_from, json!({"min_id": "0"}))
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn ids_compare_numerically() {
    use std::cmp::Ordering::*;
    assert_eq!(id_cmp("9", "10"), Less);
    assert_eq!(id_cmp("0010", "10"), Equal);
    assert_eq!(id_cmp("110", "101"), Greater);
    assert_eq!(id_cmp("01HZX", "01HZY"), Less);
}

// --- config ---

fn parse(body: &str) -> Result<crate::registry::Instance, String> {
    let t: toml::Table = toml::from_str(&format!("[brand]\ntype = \"mastodon\"\n{body}"))
        .map_err(|e| e.to_string())?;
    crate::registry::parse_instances(&t).map(|mut m| m.remove("brand").expect("instance"))
}

#[test]
fn config_defaults_and_validation() {
    let ok = parse("instance_url = \"https://mastodon.social/\"\naccess_token = \"s3cr3t-token\"")
        .expect("valid");
    let crate::registry::SourceConfig::Mastodon(c) = &ok.config else {
        panic!("mastodon config")
    };
    assert_eq!(c.base_url(), "https://mastodon.social");
    assert_eq!(c.page_size, 80);
    assert_eq!(c.types, types());
    assert_eq!(c.domain, "");
    assert_eq!(c.max_text_chars, 2000);
    assert!(
        !format!("{ok:?}").contains("s3cr3t-token"),
        "secret in Debug"
    );

    let base = "instance_url = \"https://mastodon.social\"\naccess_token = \"x\"\n";
    let cases = [
        ("brand_acct = \"@a@b.c\"", "brand_acct"),
        ("page_size = 81", "connectors.brand.page_size"),
        ("page_size = 0", "connectors.brand.page_size"),
        ("types = [\"boost\"]", "connectors.brand.types"),
        ("types = []", "connectors.brand.types"),
        ("types = [\"follow\", \"follow\"]", "connectors.brand.types"),
        ("domain = \"not a domain\"", "connectors.brand.domain"),
        ("max_text_chars = 0", "connectors.brand.max_text_chars"),
    ];
    for (extra, field) in cases {
        let e = parse(&format!("{base}{extra}")).expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
    for (body, field) in [
        ("access_token = \"x\"", "instance_url"),
        ("instance_url = \"https://m.social\"", "access_token"),
        (
            "instance_url = \"http://mastodon.social\"\naccess_token = \"x\"",
            "connectors.brand.instance_url",
        ),
        (
            "instance_url = \"mastodon.social\"\naccess_token = \"x\"",
            "connectors.brand.instance_url",
        ),
        (
            "instance_url = \"https://m.social/?a=1\"\naccess_token = \"x\"",
            "connectors.brand.instance_url",
        ),
        (
            "instance_url = \"https://m.social\"\naccess_token = \"\"",
            "secret is empty",
        ),
    ] {
        let e = parse(body).expect_err(body);
        assert!(e.contains(field), "{body}: {e}");
    }
    // plain http only for loopback (the fake server)
    parse("instance_url = \"http://127.0.0.1:8080\"\naccess_token = \"x\"").expect("loopback");
    parse("instance_url = \"http://localhost:8080\"\naccess_token = \"x\"").expect("localhost");
    let _ = BRAND_ID;
}

/// The typed fast path (`PageItem` + `map_items`) gives exactly what the `Value`
/// mapping gives: the same events, skips and rejections (with reasons and raw
/// objects), also for objects the typed structs cannot read.
#[test]
fn typed_mapping_matches_value_mapping() {
    let data = fake::generate(2000, 11);
    let mut items = data.notifications();
    let base = doc_mention();
    let odd = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    items.extend([
        odd(&|v| v["id"] = json!(77)),
        odd(&|v| v["id"] = json!(" 78 ")),
        odd(&|v| v["id"] = json!(-3)),
        odd(&|v| v["id"] = json!("  ")),
        odd(&|v| v["id"] = json!(1.5)),
        odd(&|v| v["type"] = json!(5)),
        odd(&|v| v["type"] = json!("poll")),
        odd(&|v| v["created_at"] = json!("yesterday")),
        odd(&|v| v["account"] = json!(["x", "alice"])),
        odd(&|v| v["account"] = json!(null)),
        odd(&|v| v["account"]["acct"] = json!(12)),
        odd(&|v| v["account"]["acct"] = json!("not a handle!")),
        odd(&|v| v["account"]["url"] = json!(12)),
        odd(&|v| v["account"]["followers_count"] = json!(-1)),
        odd(&|v| v["account"]["followers_count"] = json!(2.5)),
        odd(&|v| v["account"]["fields"] = json!([1, {"value": "https://a.example"}])),
        odd(&|v| {
            v["account"]["fields"] = json!([{"value": "https://a.example", "verified_at": 3}])
        }),
        odd(&|v| v["account"]["fields"] = json!({"value": "https://a.example"})),
        odd(&|v| v["status"] = json!(null)),
        odd(&|v| v["status"] = json!("s")),
        odd(&|v| v["status"] = json!([])),
        odd(&|v| v["status"]["id"] = json!(null)),
        odd(&|v| v["status"]["id"] = json!(991)),
        odd(&|v| v["status"]["url"] = json!(null)),
        odd(&|v| v["status"]["url"] = json!(4)),
        odd(&|v| v["status"]["tags"] = json!([{"name": 3}, {"name": "Rust"}])),
        odd(&|v| v["status"]["tags"] = json!(["x"])),
        odd(&|v| v["status"]["mentions"] = json!([{"acct": 3}, 4, {"acct": "bob"}])),
        odd(&|v| v["status"]["mentions"] = json!({"acct": "bob"})),
        odd(&|v| v["status"]["media_attachments"] = json!({"a": 1})),
        odd(&|v| v["status"]["sensitive"] = json!("yes")),
        odd(&|v| v["status"]["in_reply_to_account_id"] = json!(14715)),
        odd(&|v| v["status"]["reblogs_count"] = json!(null)),
        json!([1, 2]),
        json!("notification"),
        json!(null),
    ]);
    let ty = types();
    let c = ctx(&ty, "14715", "@trwnh@mastodon.social");
    let want = mapping::map_notifications(&items, &c);
    let mut raw: Vec<String> = items.iter().map(Value::to_string).collect();
    // a duplicate key: the `Value` path keeps the last one
    let dup = base.to_string().replacen("{", "{\"type\":\"follow\",", 1);
    raw.push(dup);
    // the typed reading borrows strings without escapes from the page and copies
    // the others: the same notification with escapes in its strings
    let escaped = base
        .to_string()
        .replacen("\"mention\"", "\"\\u006dention\"", 1)
        .replace("\"acct\":\"", "\"acct\":\"\\u0020");
    assert_ne!(escaped, base.to_string());
    raw.push(escaped);
    let mut want_all = want;
    for extra in &raw[raw.len() - 2..] {
        let v: Value = serde_json::from_str(extra).expect("json");
        match mapping::map_notification(&v, &c) {
            Ok(Mapped::Event(e)) => want_all.events.push(*e),
            Ok(Mapped::Skipped(_)) => want_all.skipped += 1,
            Err(r) => want_all.rejected.push(r),
        }
    }
    let parsed: Vec<mapping::PageItem> = raw
        .iter()
        .map(|s| mapping::PageItem::parse_str(s))
        .collect();
    assert!(parsed.last().is_some_and(mapping::PageItem::is_typed));
    let got = mapping::map_items(&parsed, &c);
    let json = |es: &[socialcrm_schemas::CanonicalEvent]| -> Vec<String> {
        es.iter()
            .map(|e| serde_json::to_string(e).expect("event json"))
            .collect()
    };
    assert!(want_all.events.len() > 1500);
    assert_eq!(json(&got.events), json(&want_all.events));
    assert_eq!(got.skipped, want_all.skipped);
    let rej = |r: &[crate::runtime::Rejected]| -> Vec<(String, String, Vec<u8>)> {
        r.iter()
            .map(|r| (r.object_id.clone(), r.reason.clone(), r.raw.clone()))
            .collect()
    };
    assert!(want_all.rejected.len() > 10);
    assert_eq!(rej(&got.rejected), rej(&want_all.rejected));
    let ids: Vec<Option<String>> = parsed.iter().map(|p| p.id.clone()).collect();
    let want_ids: Vec<Option<String>> = items
        .iter()
        .map(mapping::notification_id)
        .chain(
            raw[raw.len() - 2..]
                .iter()
                .map(|r| mapping::notification_id(&serde_json::from_str(r).expect("json"))),
        )
        .collect();
    assert_eq!(ids, want_ids);
}

#[test]
fn addresses_in_profile_fields_travel_as_claims() {
    let fields = [
        "ann@shop.io",
        r#"<a href="mailto:Ann.Lee@Mail.example" rel="me">write me</a>"#,
        "@ann@social.example",
        "https://ann.example/contact@me",
        "see ann@shop.io.",
    ];
    let fields: Vec<mapping::Field<'_>> = fields.iter().map(|f| (*f, false)).collect();
    let got = mapping::claimed_emails(&fields);
    let values: Vec<&str> = got.iter().map(|i| i.value.as_str()).collect();
    assert_eq!(values, ["ann@shop.io", "Ann.Lee@Mail.example"]);
    assert!(got.iter().all(|i| i.id_type == "email"));
}

/// The cursor reads each notification's id alone (`raw_notification_id`), the
/// mapping reads it with the rest: both must see the same id as the `Value`
/// path (`notification_id`), malformed objects included.
#[test]
fn id_read_alone_is_the_value_paths_id() {
    let cases = [
        r#"{"id":"123","type":"mention"}"#,
        r#"{"type":"mention","id":" 42 "}"#,
        r#"{"id":77}"#,
        r#"{"id":"   "}"#,
        r#"{"id":null}"#,
        r#"{"id":-5}"#,
        r#"{"id":1.5}"#,
        r#"{"id":["1"]}"#,
        r#"{"id":{"x":1}}"#,
        r#"{"type":"follow"}"#,
        r#"{"id":"1","id":"2"}"#,
        r#"["1","mention"]"#,
        r#""just a string""#,
        r#"17"#,
        r#"null"#,
        r#"{"id":"9","account":{"id":"1","acct":7},"status":"not an object"}"#,
    ];
    for raw in cases {
        let boxed: Box<serde_json::value::RawValue> =
            serde_json::from_str(raw).expect("valid JSON");
        let v: Value = serde_json::from_str(raw).expect("valid JSON");
        assert_eq!(
            mapping::raw_notification_id(&boxed),
            mapping::notification_id(&v),
            "{raw}"
        );
        assert_eq!(
            mapping::PageItem::parse(&boxed).id,
            mapping::notification_id(&v),
            "{raw}"
        );
    }
}
