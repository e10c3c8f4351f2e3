//! Kafka plumbing of the harness: topics, the pre-fill producer, the bare consumer
//! (phase b1) and the reader that feeds the bare insert (phase b2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::gen::Dataset;
use crate::proc::{vm_hwm_kb_self, CpuUse, SelfCpu};

pub fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates topics (name, partitions); fails if one already exists (names are fresh).
pub async fn create_topics(brokers: &str, topics: &[(String, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        admin.create_topics(new.iter(), &opts),
    )
    .await
    .context("timeout creating topics")??;
    for r in res {
        if let Err((name, code)) = r {
            bail!("cannot create topic {name}: {code}");
        }
    }
    Ok(())
}

pub async fn delete_topics(brokers: &str, topics: &[String]) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base_config(brokers).create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = tokio::time::timeout(Duration::from_secs(60), admin.delete_topics(&names, &opts))
        .await
        .context("timeout deleting topics")??;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => bail!("cannot delete topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Sum of high watermarks of a topic (= messages written, for a fresh topic).
pub fn topic_size(brokers: &str, topic: &str) -> Result<(i64, usize)> {
    let c: BaseConsumer = base_config(brokers).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut total = 0;
    for p in &parts {
        let (lo, hi) = c.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        total += hi - lo;
    }
    Ok((total, parts.len()))
}

pub async fn broker_answers(brokers: &str) -> Result<()> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = base_config(&brokers).create()?;
        c.fetch_metadata(None, Duration::from_secs(10))
            .with_context(|| format!("Kafka at {brokers} does not answer"))?;
        Ok(())
    })
    .await?
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct CountCtx(Arc<Counts>);

impl ClientContext for CountCtx {}

impl ProducerContext for CountCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("[bench] delivery failed: {e}");
                }
                0
            }
        };
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    pub events: u64,
    pub bytes: u64,
    pub avg_event_bytes: u64,
    pub min_event_bytes: u64,
    pub max_event_bytes: u64,
    pub secs: f64,
    pub events_per_sec: f64,
}

/// Produces every event of `ds` to `topic` (idempotent producer, key =
/// `partition_key()`), and waits until all are acknowledged.
pub fn produce(
    brokers: &str,
    topic: &str,
    ds: &Dataset,
    timeout: Duration,
) -> Result<ProduceReport> {
    let counts = Arc::new(Counts::default());
    let producer: ThreadedProducer<CountCtx> = base_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1048576")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "400000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000")
        .create_with_context(CountCtx(counts.clone()))?;
    let start = Instant::now();
    let deadline = start + timeout;
    let (mut bytes, mut min, mut max) = (0u64, u64::MAX, 0u64);
    let n = ds.slots.len();
    for i in 0..n {
        let ev = ds.canonical(i);
        let key = ev.partition_key();
        let payload = serde_json::to_vec(&ev)?;
        let len = payload.len() as u64;
        bytes += len;
        min = min.min(len);
        max = max.max(len);
        let mut rec = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_slice());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() > deadline {
                        bail!("timeout producing (local queue stays full)");
                    }
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
        if (i + 1) % 200_000 == 0 {
            eprintln!(
                "[bench] produced {} / {n} ({:.1}s)",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    producer.flush(left).context("flushing the producer")?;
    let ok = counts.ok.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    if failed > 0 || ok != n as u64 {
        bail!("produce: {ok} acknowledged, {failed} failed, {n} sent");
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(ProduceReport {
        events: n as u64,
        bytes,
        avg_event_bytes: bytes / n.max(1) as u64,
        min_event_bytes: if n == 0 { 0 } else { min },
        max_event_bytes: max,
        secs,
        events_per_sec: n as f64 / secs,
    })
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ConsumeReport {
    pub events: u64,
    pub bytes: u64,
    /// From consumer creation to the last expected message.
    pub secs: f64,
    /// From consumer creation to the first message (group join, first fetch).
    pub first_message_secs: f64,
    pub events_per_sec: f64,
    /// Excluding the time to the first message.
    pub events_per_sec_after_first: f64,
    pub vm_hwm_kb: u64,
    pub cpu: CpuUse,
}

/// Phase b1: a consumer configured like the pipeline's (StreamConsumer, fresh
/// group, same fetch settings) that reads `expect` messages and does nothing else.
pub async fn bare_consume(
    brokers: &str,
    topic: &str,
    group: &str,
    expect: u64,
    timeout: Duration,
) -> Result<ConsumeReport> {
    let cpu = SelfCpu::start();
    let start = Instant::now();
    let consumer: StreamConsumer = base_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "200000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first = None;
    while n < expect {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("timeout: consumed {n} of {expect}"))??;
        if first.is_none() {
            first = Some(start.elapsed());
        }
        bytes += m.payload().map_or(0, <[u8]>::len) as u64;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let first = first.map_or(0.0, |d| d.as_secs_f64());
    Ok(ConsumeReport {
        events: n,
        bytes,
        secs,
        first_message_secs: first,
        events_per_sec: n as f64 / secs,
        events_per_sec_after_first: n as f64 / (secs - first).max(1e-9),
        vm_hwm_kb: vm_hwm_kb_self(),
        cpu: cpu.finish(secs),
    })
}

/// Reads every message of `topic` (assigned from the beginning, no group) and
/// hands (partition, offset, payload) to `f`.
pub fn read_all(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut f: impl FnMut(i32, i64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let consumer: BaseConsumer = base_config(brokers)
        .set("group.id", "socialcrm-bench-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut want = 0i64;
    for t in md.topics() {
        for p in t.partitions() {
            let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            want += hi - lo;
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut n = 0i64;
    while n < want {
        if Instant::now() > deadline {
            bail!("timeout reading {topic}: {n} of {want}");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                f(m.partition(), m.offset(), m.payload().unwrap_or_default())?;
                n += 1;
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(n as u64)
}
