//! The Kafka producer every connector uses: idempotent, `acks=all`, keyed by the
//! actor's strongest identifier so one actor's events stay in order. `send_all`
//! returns only when Kafka acknowledged every event (or failed on one).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use socialcrm_schemas::kafka::KafkaConfig;
use socialcrm_schemas::retry::Retryable;
use socialcrm_schemas::CanonicalEvent;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka did not acknowledge event {event_id}: {source}")]
    Delivery {
        event_id: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("kafka producer: {0}")]
    Create(#[from] rdkafka::error::KafkaError),
}

impl Retryable for ProduceError {
    fn is_retryable(&self) -> bool {
        match self {
            ProduceError::Delivery { source, .. } => source.is_retryable(),
            ProduceError::Encode(_) => false,
            ProduceError::Create(_) => true,
        }
    }
}

/// A canonical event as it goes to Kafka.
#[derive(Debug)]
pub struct Encoded {
    pub event_id: String,
    /// The actor's strongest identifier (`CanonicalEvent::partition_key`).
    pub key: String,
    /// The JSON encoding.
    pub payload: Vec<u8>,
}

impl Encoded {
    pub fn new(ev: &CanonicalEvent) -> Result<Self, serde_json::Error> {
        Ok(Encoded {
            event_id: ev.event_id.clone(),
            key: ev.partition_key(),
            payload: serde_json::to_vec(ev)?,
        })
    }
}

/// `linger.ms` of [`EventProducer::pipelined`] (the collector's too).
pub const PIPELINED_LINGER_MS: u32 = 5;

/// Idempotent producer of canonical events to the events topic.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    /// How long a delivery may take before it counts as failed.
    delivery_timeout: Duration,
}

impl EventProducer {
    pub fn new(kafka: &KafkaConfig, delivery_timeout: Duration) -> Result<Self, ProduceError> {
        Self::for_topic(kafka, &kafka.topics.events, delivery_timeout)
    }

    /// The same producer settings for another topic (the DLQ).
    pub fn for_topic(
        kafka: &KafkaConfig,
        topic: &str,
        delivery_timeout: Duration,
    ) -> Result<Self, ProduceError> {
        Self::with_linger(kafka, topic, delivery_timeout, PIPELINED_LINGER_MS)
    }

    /// `linger_ms`: how long the client waits to fill a batch before sending. The
    /// collector (many concurrent requests) and the pull connectors that fetch
    /// ahead use 5 ([`pipelined`](Self::pipelined)); Telegram, which waits for each
    /// page's acknowledgement before the next fetch, uses 0
    /// ([`low_latency`](Self::low_latency)).
    pub fn with_linger(
        kafka: &KafkaConfig,
        topic: &str,
        delivery_timeout: Duration,
        linger_ms: u32,
    ) -> Result<Self, ProduceError> {
        Self::build(kafka, topic, delivery_timeout, linger_ms, false)
    }

    /// The producer of pull connectors, which wait for each page's
    /// acknowledgement (Telegram before it may even ask for the next page): no
    /// linger, and Nagle's algorithm off on the broker sockets, so that a page's
    /// last, small produce request is not held back until the previous one was
    /// answered (librdkafka leaves Nagle on by default).
    pub fn low_latency(
        kafka: &KafkaConfig,
        topic: &str,
        delivery_timeout: Duration,
    ) -> Result<Self, ProduceError> {
        Self::build(kafka, topic, delivery_timeout, 0, true)
    }

    /// The producer of pull connectors that fetch pages ahead (every one but
    /// Telegram): many pages are in flight, so waiting
    /// [`PIPELINED_LINGER_MS`] to fill batches across pages costs no throughput
    /// and saves produce requests (the broker's CPU per event about halves with
    /// the local benchmark, docs/benchmarks.md).
    pub fn pipelined(
        kafka: &KafkaConfig,
        topic: &str,
        delivery_timeout: Duration,
    ) -> Result<Self, ProduceError> {
        Self::build(kafka, topic, delivery_timeout, PIPELINED_LINGER_MS, true)
    }

    fn build(
        kafka: &KafkaConfig,
        topic: &str,
        delivery_timeout: Duration,
        linger_ms: u32,
        no_nagle: bool,
    ) -> Result<Self, ProduceError> {
        let mut config = kafka.client_config();
        if no_nagle {
            config.set("socket.nagle.disable", "true");
        }
        let producer: FutureProducer = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().max(1000).to_string(),
            )
            .create()?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
            delivery_timeout,
        })
    }

    /// Sends every event and waits for Kafka's acknowledgement of all of them.
    /// A full local queue waits (back-pressure) instead of failing.
    pub async fn send_all(&self, events: &[CanonicalEvent]) -> Result<(), ProduceError> {
        let encoded = events
            .iter()
            .map(Encoded::new)
            .collect::<Result<Vec<_>, _>>()?;
        self.send_encoded(&encoded).await
    }

    /// [`send_all`](Self::send_all) for events already encoded (by a caller that
    /// needed their size).
    pub async fn send_encoded(&self, events: &[Encoded]) -> Result<(), ProduceError> {
        let sends = events.iter().map(|e| async move {
            let rec = FutureRecord::to(&self.topic)
                .key(e.key.as_str())
                .payload(e.payload.as_slice());
            self.producer
                .send(rec, Timeout::After(self.delivery_timeout))
                .await
                .map(|_| ())
                .map_err(|(source, _)| ProduceError::Delivery {
                    event_id: e.event_id.clone(),
                    source,
                })
        });
        for r in join_all(sends).await {
            r?;
        }
        metrics::counter!("socialcrm_events_produced_total").increment(events.len() as u64);
        Ok(())
    }

    /// Waits until everything queued was delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }
}
