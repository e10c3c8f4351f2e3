//! The Kafka producer every connector uses: idempotent, `acks=all`, keyed by the
//! actor's strongest identifier so one actor's events stay in order. `send_all`
//! returns only when Kafka acknowledged every event (or failed on one).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use socialcrm_schemas::kafka::KafkaConfig;
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
        let producer: FutureProducer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().max(1000).to_string(),
            )
            .create()?;
        Ok(EventProducer {
            producer,
            topic: kafka.topics.events.clone(),
            delivery_timeout,
        })
    }

    /// Sends every event and waits for Kafka's acknowledgement of all of them.
    /// A full local queue waits (back-pressure) instead of failing.
    pub async fn send_all(&self, events: &[CanonicalEvent]) -> Result<(), ProduceError> {
        let encoded: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| Ok((e.partition_key(), serde_json::to_vec(e)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        let sends = encoded
            .iter()
            .zip(events)
            .map(|((key, payload), ev)| async move {
                let rec = FutureRecord::to(&self.topic)
                    .key(key.as_str())
                    .payload(payload.as_slice());
                self.producer
                    .send(rec, Timeout::After(self.delivery_timeout))
                    .await
                    .map(|_| ())
                    .map_err(|(source, _)| ProduceError::Delivery {
                        event_id: ev.event_id.clone(),
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
