//! A downstream consumer of `crm.profiles` (docs/consumers.md): reads the
//! compacted topic from the beginning, keeps the newest profile per `customer_id`
//! (a null value deletes it; an older `version` than the one held is ignored), and
//! prints a summary once it has read up to the end of every partition.
//!
//! ```sh
//! cargo run --example profiles_consumer -- --brokers 127.0.0.1:9092 --topic crm.profiles
//! ```
//!
//! A real service would keep consuming (`--follow`) and write each change to its
//! own store instead of a map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use socialcrm_schemas::messages::Profile;

#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The profiles topic (`[kafka.topics] profiles`).
    #[arg(long, default_value = "crm.profiles")]
    topic: String,
    /// Keep consuming after the end of the topic, printing each change.
    #[arg(long)]
    follow: bool,
}

/// The consumer's view: the newest profile per customer_id.
#[derive(Default)]
struct Profiles {
    by_id: HashMap<String, Profile>,
    messages: u64,
    tombstones: u64,
    stale: u64,
}

impl Profiles {
    /// Applies one message. The key is the customer_id; a `None` payload is a
    /// tombstone (the profile was merged into another, or erased).
    fn apply(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<Change> {
        self.messages += 1;
        let Some(bytes) = payload else {
            self.tombstones += 1;
            return Ok(match self.by_id.remove(key) {
                Some(_) => Change::Deleted,
                None => Change::Ignored,
            });
        };
        let p: Profile = serde_json::from_slice(bytes).with_context(|| format!("profile {key}"))?;
        // at-least-once delivery: a message can come again after a newer one;
        // the newest version wins, an equal one replaces (a replayed batch)
        if self
            .by_id
            .get(key)
            .is_some_and(|cur| cur.version > p.version)
        {
            self.stale += 1;
            return Ok(Change::Ignored);
        }
        self.by_id.insert(key.to_string(), p);
        Ok(Change::Upserted)
    }
}

#[derive(Debug)]
enum Change {
    Upserted,
    Deleted,
    Ignored,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        // librdkafka wants a group id, but partitions are assigned, not subscribed:
        // no offsets are committed, every run reads the whole topic
        .set("group.id", "profiles-consumer-example")
        .set("enable.auto.commit", "false")
        // report the end of each partition, to know when the snapshot is complete
        .set("enable.partition.eof", "true")
        .create()
        .context("kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .context("topic metadata")?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&args.topic, p.id(), Offset::Beginning)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "topic {} not found", args.topic);
    consumer.assign(&tpl)?;

    let mut profiles = Profiles::default();
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut caught_up = false;
    loop {
        if !caught_up && at_end.len() == tpl.count() {
            caught_up = true;
            summary(&profiles);
            if !args.follow {
                return Ok(());
            }
        }
        let m = match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                continue;
            }
            Some(m) => m.context("consume")?,
        };
        let key = m
            .key()
            .map(String::from_utf8_lossy)
            .context("a crm.profiles message without a key")?;
        let change = profiles.apply(&key, m.payload())?;
        if caught_up {
            println!("{key}: {change:?}");
        }
    }
}

fn summary(p: &Profiles) {
    println!(
        "{} messages: {} live profiles, {} tombstones, {} stale messages ignored",
        p.messages,
        p.by_id.len(),
        p.tombstones,
        p.stale
    );
    let events: u64 = p.by_id.values().map(|x| x.event_count).sum();
    let buyers = p.by_id.values().filter(|x| x.order_count > 0).count();
    let mut revenue: BTreeMap<&str, f64> = BTreeMap::new();
    let mut stages: BTreeMap<&str, usize> = BTreeMap::new();
    for x in p.by_id.values() {
        for (cur, amount) in &x.revenue {
            *revenue.entry(cur.as_str()).or_default() += amount;
        }
        *stages.entry(x.lifecycle_stage.as_str()).or_default() += 1;
    }
    println!("{events} events, {buyers} customers with orders, revenue {revenue:?}");
    println!("lifecycle stages {stages:?}");
    let mut top: Vec<&Profile> = p.by_id.values().collect();
    top.sort_by(|a, b| {
        b.engagement_score
            .total_cmp(&a.engagement_score)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    for x in top.iter().take(5) {
        let name = x.traits.get("name").and_then(|n| n.as_str()).unwrap_or("-");
        println!(
            "  {}  engagement {:5.1}  {:>3} events  {} identifiers  {name}",
            x.customer_id,
            x.engagement_score,
            x.event_count,
            x.identifiers.len()
        );
    }
}
