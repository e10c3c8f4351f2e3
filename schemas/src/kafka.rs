//! Kafka settings and topic names (DESIGN §3.3) shared by every process, and the
//! idempotent creation of the topics.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// `[kafka]` section of the config file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topic names.
    #[serde(default)]
    pub topics: Topics,
    /// Partitions for topics created by `socialcrm migrate` (events topic).
    #[serde(default = "default_event_partitions")]
    pub event_partitions: i32,
    /// Replication factor for topics created by `socialcrm migrate`.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Extra librdkafka properties, e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.username"`, `"sasl.password" = "${KAFKA_PASSWORD}"`. Values are never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    // property values may be credentials (sasl.password, ssl.key.password): only keys
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("event_partitions", &self.event_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Topic names (DESIGN §3.3 defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Canonical events, input of the pipeline.
    #[serde(default = "default_events")]
    pub events: String,
    /// Rejected inputs with reason and origin.
    #[serde(default = "default_dlq")]
    pub dlq: String,
    /// Identity changes (links, merges, rejections, unlinks, erasures).
    #[serde(default = "default_identity")]
    pub identity: String,
    /// Full current profiles, compacted, key `customer_id`.
    #[serde(default = "default_profiles")]
    pub profiles: String,
    /// Operator commands to the identity writer (`socialcrm identity unlink|split`),
    /// one partition, compacted, key `command_id`: the durable log of those rules.
    #[serde(default = "default_commands")]
    pub commands: String,
    /// Erasure requests to the identity writer (`socialcrm privacy erase`), one
    /// partition, compacted, key `request_id`; hashes only (docs/privacy.md).
    #[serde(default = "default_privacy_commands")]
    pub privacy_commands: String,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_event_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_events() -> String {
    "crm.events".into()
}
fn default_dlq() -> String {
    "crm.dlq".into()
}
fn default_identity() -> String {
    "crm.identity".into()
}
fn default_profiles() -> String {
    "crm.profiles".into()
}
fn default_commands() -> String {
    "crm.identity.commands".into()
}
fn default_privacy_commands() -> String {
    "crm.privacy.commands".into()
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            events: default_events(),
            dlq: default_dlq(),
            identity: default_identity(),
            profiles: default_profiles(),
            commands: default_commands(),
            privacy_commands: default_privacy_commands(),
        }
    }
}

impl Topics {
    /// Same names with a prefix (tests use random prefixes to stay apart).
    pub fn with_prefix(prefix: &str) -> Topics {
        let d = Topics::default();
        Topics {
            events: format!("{prefix}{}", d.events),
            dlq: format!("{prefix}{}", d.dlq),
            identity: format!("{prefix}{}", d.identity),
            profiles: format!("{prefix}{}", d.profiles),
            commands: format!("{prefix}{}", d.commands),
            privacy_commands: format!("{prefix}{}", d.privacy_commands),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            topics: Topics::default(),
            event_partitions: default_event_partitions(),
            replication_factor: default_replication(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Base librdkafka config: brokers plus the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Creates the topics if missing (events with `event_partitions`, the two
    /// command topics with 1, the others with 3; profiles and the command topics
    /// compacted). Existing topics
    /// are left alone.
    pub async fn ensure_topics(&self) -> Result<Vec<String>, rdkafka::error::KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let compact = [("cleanup.policy", "compact")];
        let rf = || TopicReplication::Fixed(self.replication_factor);
        let topics = [
            NewTopic::new(&self.topics.events, self.event_partitions, rf()),
            NewTopic::new(&self.topics.dlq, 3, rf()),
            NewTopic::new(&self.topics.identity, 3, rf()),
            NewTopic::new(&self.topics.profiles, 3, rf()).set(compact[0].0, compact[0].1),
            NewTopic::new(&self.topics.commands, 1, rf()).set(compact[0].0, compact[0].1),
            NewTopic::new(&self.topics.privacy_commands, 1, rf()).set(compact[0].0, compact[0].1),
        ];
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics(topics.iter(), &opts).await?;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(
                        |_| tracing::error!(topic = %name, error = %code, "cannot create topic"),
                    )
                }
            }
        }
        Ok(created)
    }
}

/// How long the start-up access check waits for an answer from the brokers.
pub const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka refused the config's credentials or TLS settings: a permanent error, shown
/// at start instead of librdkafka's endless reconnects. Never holds a property value.
#[derive(Debug, thiserror::Error)]
#[error("[kafka] {brokers}: {what}: {detail} (check {hint})")]
pub struct AccessError {
    pub brokers: String,
    /// `authentication failed` or `TLS handshake failed`.
    pub what: &'static str,
    /// librdkafka's message (it names the mechanism, never the password).
    pub detail: String,
    /// The settings to look at.
    pub hint: &'static str,
}

/// Errors librdkafka reports while the access check runs.
#[derive(Default)]
struct CheckContext {
    errors: std::sync::Mutex<Vec<(RDKafkaErrorCode, String)>>,
}

impl rdkafka::ClientContext for CheckContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            if let Ok(mut e) = self.errors.lock() {
                e.push((code, reason.to_string()));
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for CheckContext {}

impl KafkaConfig {
    /// Connects once, before a process starts its work, and fails when the brokers
    /// refuse the credentials (SASL) or the TLS handshake, so that a wrong password
    /// stops the process with the setting named instead of being retried forever.
    /// Brokers that cannot be reached are not an error here (the callers wait for
    /// Kafka as they always did); nor is a check that ends by `timeout`.
    pub async fn check_access_async(&self, timeout: Duration) -> Result<(), AccessError> {
        let cfg = self.clone();
        match tokio::task::spawn_blocking(move || cfg.check_access(timeout)).await {
            Ok(r) => r,
            // the check itself could not run: the clients that follow report problems
            Err(_) => Ok(()),
        }
    }

    /// [`KafkaConfig::check_access_async`], blocking.
    pub fn check_access(&self, timeout: Duration) -> Result<(), AccessError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer<CheckContext> = match self
            .client_config()
            .create_with_context(CheckContext::default())
        {
            Ok(c) => c,
            // a bad property: the client that follows reports it with its name
            Err(_) => return Ok(()),
        };
        let started = std::time::Instant::now();
        let deadline = started + timeout;
        loop {
            let step = Duration::from_millis(500);
            let answered = consumer.fetch_metadata(None, step).is_ok();
            // serve the error callbacks: one event per poll, and a log event (librdkafka
            // logs each failure before reporting it) also answers `None`, so no early
            // stop on `None`; 200 non-blocking polls drain far more than 500 ms bring
            for _ in 0..200 {
                let _ = consumer.poll(Duration::ZERO);
            }
            let errors = consumer
                .context()
                .errors
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            let found = |code: RDKafkaErrorCode| {
                errors
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, r)| r.clone())
            };
            if let Some(detail) = found(RDKafkaErrorCode::Authentication) {
                return Err(AccessError {
                    brokers: self.brokers.clone(),
                    what: "authentication failed",
                    detail,
                    hint: "[kafka.properties] sasl.mechanism, sasl.username and sasl.password",
                });
            }
            // a refused certificate comes as an SSL error, or first as a transport
            // failure that quotes OpenSSL
            let tls = found(RDKafkaErrorCode::SSL).or_else(|| {
                errors
                    .iter()
                    .find(|(c, r)| {
                        *c == RDKafkaErrorCode::BrokerTransportFailure
                            && (r.contains("SSL routines") || r.contains("certificate verify"))
                    })
                    .map(|(_, r)| r.clone())
            });
            if let Some(detail) = tls {
                return Err(AccessError {
                    brokers: self.brokers.clone(),
                    what: "TLS handshake failed",
                    detail,
                    hint: "[kafka] brokers and [kafka.properties] security.protocol and ssl.ca.location",
                });
            }
            if answered {
                return Ok(());
            }
            // brokers that stay down (connection refused) end the check early
            let now = std::time::Instant::now();
            let down_for_long = found(RDKafkaErrorCode::AllBrokersDown).is_some()
                && now >= started + Duration::from_secs(5);
            if down_for_long || now >= deadline {
                let seen: Vec<String> = errors.iter().map(|(c, _)| format!("{c:?}")).collect();
                tracing::warn!(brokers = %self.brokers, errors = ?seen, "kafka not reachable yet; continuing, the clients retry");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    fn with_props(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "broker.example:9093".into(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    /// Brokers that refuse every connection are not an access error: the check ends
    /// after about 5 s and the callers wait for Kafka as before.
    #[test]
    fn an_unreachable_broker_is_not_an_access_error() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        let t = std::time::Instant::now();
        assert!(cfg.check_access(Duration::from_secs(60)).is_ok());
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(15),
            "{took:?}"
        );
        let e = AccessError {
            brokers: "b:9094".into(),
            what: "authentication failed",
            detail: "SASL authentication error".into(),
            hint: "[kafka.properties] sasl.password",
        };
        assert_eq!(
            e.to_string(),
            "[kafka] b:9094: authentication failed: SASL authentication error (check [kafka.properties] sasl.password)"
        );
    }

    /// The SASL/SSL settings of docs/security.md reach librdkafka, and librdkafka
    /// accepts them: it is built with OpenSSL (without it, `SSL` and SCRAM are
    /// refused when the client is created). No broker is contacted.
    #[test]
    fn tls_and_sasl_properties_are_passed_to_librdkafka() {
        let cases: [&[(&str, &str)]; 3] = [
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "crm"),
                ("sasl.password", "secret"),
            ],
            &[
                ("security.protocol", "SSL"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "crm"),
                ("sasl.password", "secret"),
            ],
        ];
        for props in cases {
            let cfg = with_props(props);
            let client = cfg.client_config();
            assert_eq!(client.get("bootstrap.servers"), Some("broker.example:9093"));
            for (k, v) in props {
                assert_eq!(client.get(k), Some(*v), "{k}");
            }
            let made: Result<BaseProducer, _> = client.create();
            assert!(made.is_ok(), "{props:?}: {:?}", made.err());
        }
        // a misspelt property is refused by librdkafka when the client is created
        let bad: Result<BaseProducer, _> = with_props(&[("security.protocl", "SSL")])
            .client_config()
            .create();
        let e = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("security.protocl"), "{e}");
    }
}
