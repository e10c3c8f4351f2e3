//! The run loop against a real Kafka broker (127.0.0.1:9092, or
//! `SOCIALCRM_TEST_KAFKA`), with a scripted source: cursors move only after Kafka
//! acknowledged a page, unmappable objects land in the DLQ with their id, refused
//! credentials stop the run, an unusable cursor restarts its stream, a failed
//! poll does not stop the connector.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use serde_json::{json, Value};
use socialcrm_schemas::identifier::{IdType, Identifier};
use socialcrm_schemas::kafka::{KafkaConfig, Topics};
use socialcrm_schemas::{CanonicalEvent, Channel, JsonObject, SCHEMA_VERSION};

use super::config::RuntimeSettings;
use super::http::ApiError;
use super::*;

pub(crate) fn brokers() -> String {
    std::env::var("SOCIALCRM_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub(crate) async fn kafka() -> KafkaConfig {
    let tag: u32 = rand_tag();
    let k = KafkaConfig {
        brokers: brokers(),
        topics: Topics::with_prefix(&format!("rt{tag:08x}.")),
        event_partitions: 1,
        ..KafkaConfig::default()
    };
    k.ensure_topics().await.expect("topics (is Kafka running?)");
    k
}

fn rand_tag() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

fn event(id: u32) -> CanonicalEvent {
    let t: DateTime<Utc> = Utc
        .timestamp_opt(1_700_000_000 + i64::from(id), 0)
        .single()
        .expect("time");
    CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id: format!("script:{id}"),
        source: "script:test".into(),
        channel: Channel::Social,
        event_type: "mention".into(),
        name: None,
        occurred_at: t,
        received_at: t,
        identifiers: vec![Identifier::new(IdType::Telegram, (1000 + id).to_string())],
        target: Vec::new(),
        traits: Default::default(),
        properties: JsonObject::empty(),
        revenue: None,
        context: JsonObject::empty(),
    }
}

type Step = Result<Page, SourceError>;

/// A source that answers from a script and records the cursors it was asked with.
struct Script {
    steps: VecDeque<Step>,
    asked: Arc<Mutex<Vec<Value>>>,
}

impl Source for Script {
    fn kind(&self) -> &'static str {
        "script"
    }
    fn streams(&self) -> Vec<String> {
        vec!["s".into()]
    }
    fn initial_cursor(&self, _stream: &str, since: Option<DateTime<Utc>>) -> Value {
        json!({ "start": since.map(|s| s.timestamp()).unwrap_or(0) })
    }
    async fn fetch(&mut self, _stream: &str, cursor: &Value) -> Result<Page, SourceError> {
        self.asked.lock().expect("lock").push(cursor.clone());
        self.steps.pop_front().unwrap_or_else(|| {
            Ok(Page {
                cursor: cursor.clone(),
                caught_up: true,
                ..Page::default()
            })
        })
    }
}

fn page(ids: std::ops::Range<u32>, cursor: u32, caught_up: bool) -> Step {
    Ok(Page {
        events: ids.clone().map(event).collect(),
        cursor: json!({ "at": cursor }),
        caught_up,
        objects: ids.len() as u64,
        ..Page::default()
    })
}

fn opts(kafka: &KafkaConfig, dir: &std::path::Path) -> RunOptions {
    RunOptions {
        instance: "scripted".into(),
        settings: RuntimeSettings {
            state_dir: dir.display().to_string(),
            poll_interval_secs: 1,
            ..RuntimeSettings::default()
        },
        since: None,
        once: true,
        kafka: kafka.clone(),
        suppression: None,
    }
}

pub(crate) fn read_topic(topic: &str, min: usize) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("rt-reader-{}", rand_tag()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(300)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => panic!("consume: {e}"),
            None if out.len() >= min => break,
            None => {}
        }
    }
    out
}

fn stored(dir: &std::path::Path) -> Value {
    let raw = std::fs::read(dir.join("scripted.cursors.json")).expect("state file");
    let v: Value = serde_json::from_slice(&raw).expect("json");
    v["streams"]["s"]["cursor"].clone()
}

#[tokio::test]
async fn pages_are_produced_cursor_stored_and_bad_objects_go_to_the_dlq() {
    let k = kafka().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut bad = event(99);
    bad.identifiers.clear(); // invalid: no identifier
    let steps = VecDeque::from(vec![
        page(0..3, 3, false),
        Ok(Page {
            events: vec![event(3), bad],
            rejected: vec![Rejected::json(
                "obj-7",
                "missing created_at",
                &json!({"id": "obj-7"}),
            )],
            cursor: json!({ "at": 5 }),
            caught_up: true,
            objects: 3,
            ..Page::default()
        }),
    ]);
    let stats = run_source(
        Script {
            steps,
            asked: asked.clone(),
        },
        opts(&k, dir.path()),
        std::future::pending(),
    )
    .await
    .expect("run");
    assert_eq!(stats.pages, 2, "{stats:?}");
    assert_eq!(stats.events, 4, "{stats:?}");
    assert_eq!(stats.rejected, 2);
    assert_eq!(stored(dir.path()), json!({ "at": 5 }));
    // the second fetch was asked with the first page's cursor
    assert_eq!(asked.lock().expect("lock")[1], json!({ "at": 3 }));
    let events = read_topic(&k.topics.events, 4);
    assert_eq!(events.len(), 4);
    let dlq = read_topic(&k.topics.dlq, 2);
    let dlq: Vec<Value> = dlq
        .iter()
        .map(|p| serde_json::from_slice(p).expect("dlq json"))
        .collect();
    assert_eq!(dlq.len(), 2);
    let ids: Vec<&str> = dlq
        .iter()
        .filter_map(|d| d["origin"]["object_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"obj-7") && ids.contains(&"script:99"),
        "{dlq:?}"
    );
    assert!(dlq
        .iter()
        .all(|d| d["origin"]["connector"] == "scripted" && d["error_code"] == "bad_object"));
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/json/dlq.v1.schema.json"))
            .expect("schema");
    let v = jsonschema::validator_for(&schema).expect("validator");
    for d in &dlq {
        assert!(v.is_valid(d), "{d}");
    }

    // a second run resumes from the stored cursor
    let asked2 = Arc::new(Mutex::new(Vec::new()));
    run_source(
        Script {
            steps: VecDeque::new(),
            asked: asked2.clone(),
        },
        opts(&k, dir.path()),
        std::future::pending(),
    )
    .await
    .expect("rerun");
    assert_eq!(asked2.lock().expect("lock")[0], json!({ "at": 5 }));
}

#[tokio::test]
async fn events_of_suppressed_people_are_skipped_not_produced() {
    use socialcrm_schemas::privacy::PrivacyConfig;
    use socialcrm_schemas::suppression::{SuppressionHasher, SuppressionList};
    let k = kafka().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let list = SuppressionList::new(SuppressionHasher::new(&PrivacyConfig::default()));
    // event 1's actor (telegram:1001) was erased; event 2 only mentions them
    let erased = event(1).identifiers[0].key();
    list.replace([list.hasher().hash_key(&erased)].into());
    let mut mention = event(2);
    mention.target = event(1).identifiers;
    let steps = VecDeque::from(vec![Ok(Page {
        events: vec![event(0), event(1), mention, event(3)],
        cursor: json!({ "at": 4 }),
        caught_up: true,
        objects: 4,
        ..Page::default()
    })]);
    let mut o = opts(&k, dir.path());
    o.suppression = Some(list);
    let stats = run_source(
        Script {
            steps,
            asked: Arc::default(),
        },
        o,
        std::future::pending(),
    )
    .await
    .expect("run");
    assert_eq!(
        (stats.events, stats.suppressed, stats.rejected),
        (2, 2, 0),
        "{stats:?}"
    );
    let produced: Vec<Value> = read_topic(&k.topics.events, 2)
        .iter()
        .map(|p| serde_json::from_slice(p).expect("json"))
        .collect();
    let ids: Vec<&str> = produced
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["script:0", "script:3"]);
    assert!(read_topic(&k.topics.dlq, 0).is_empty(), "not a dead letter");
    assert_eq!(
        stored(dir.path()),
        json!({ "at": 4 }),
        "the cursor moves past them"
    );
}

#[tokio::test]
async fn kafka_down_means_no_cursor_move() {
    let mut k = kafka().await;
    // nothing listens here: the page is never acknowledged
    k.brokers = "127.0.0.1:1".into();
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = VecDeque::from(vec![page(0..2, 2, true)]);
    let run = run_source(
        Script {
            steps,
            asked: Arc::new(Mutex::new(Vec::new())),
        },
        opts(&k, dir.path()),
        tokio::time::sleep(Duration::from_secs(3)),
    );
    let stats = run.await.expect("stopped by shutdown, not an error");
    assert_eq!(stats.pages, 0);
    assert!(!dir.path().join("scripted.cursors.json").exists());
}

#[tokio::test]
async fn auth_stops_invalid_cursor_restarts_failed_poll_continues() {
    let k = kafka().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = ApiError::Auth {
        source_name: "scripted".into(),
        status: 401,
        url: "http://h/x".into(),
        fix: "set connectors.scripted.token".into(),
    };
    let server = ApiError::Server {
        source_name: "scripted".into(),
        status: 503,
        url: "http://h/x".into(),
        wait: None,
    };
    let asked = Arc::new(Mutex::new(Vec::new()));
    let steps = VecDeque::from(vec![
        Err(SourceError::CursorInvalid {
            message: "token expired".into(),
            restart_from: json!({ "at": 0 }),
        }),
        page(0..1, 1, false),
        Err(SourceError::Api(server)),
        // after the failed poll, the loop sleeps poll_interval and asks again
        page(1..2, 2, false),
        Err(SourceError::Api(auth)),
    ]);
    let mut o = opts(&k, dir.path());
    o.once = false;
    let e = run_source(
        Script {
            steps,
            asked: asked.clone(),
        },
        o,
        std::future::pending(),
    )
    .await
    .expect_err("auth stops");
    assert!(matches!(e, RunError::Auth(_)));
    assert!(e.to_string().contains("connectors.scripted.token"), "{e}");
    let asked = asked.lock().expect("lock").clone();
    assert_eq!(asked[1], json!({ "at": 0 }), "restarted from restart_from");
    assert_eq!(stored(dir.path()), json!({ "at": 2 }));

    // --since replaces the stored cursor with the source's cursor for that date
    let mut o = opts(&k, dir.path());
    o.since = Some(Utc.timestamp_opt(1_600_000_000, 0).single().expect("t"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    run_source(
        Script {
            steps: VecDeque::new(),
            asked: asked.clone(),
        },
        o,
        std::future::pending(),
    )
    .await
    .expect("since run");
    assert_eq!(
        asked.lock().expect("lock")[0],
        json!({ "start": 1_600_000_000 })
    );
}
