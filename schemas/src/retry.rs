//! The one retry module (DESIGN §4): exponential backoff with jitter around the
//! `backoff` crate. `backoff` is unmaintained (RUSTSEC-2025-0012); everything that
//! retries goes through [`retry`], so swapping it touches only this file.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a failure is worth retrying, and after how long if the peer said so.
pub trait Retryable {
    /// True for transient failures (timeouts, 5xx, 408/429, broker unavailable).
    fn is_retryable(&self) -> bool;
    /// A wait imposed by the peer (`Retry-After`, rate-limit reset), if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Backoff settings; every field has a sane default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// First wait.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Longest single wait.
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
    /// Give up after this much total time; 0 = retry forever (back-pressure).
    #[serde(default)]
    pub max_elapsed_secs: u64,
    /// Growth factor between waits.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Jitter: each wait is randomised by ± this fraction.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_initial_ms() -> u64 {
    200
}
fn default_max_interval_ms() -> u64 {
    30_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.5
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_ms: default_initial_ms(),
            max_interval_ms: default_max_interval_ms(),
            max_elapsed_secs: 0,
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

impl RetryPolicy {
    /// Forever, with the given first and longest wait (used for sinks: back-pressure, no drop).
    pub fn forever(initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            initial_ms: initial.as_millis() as u64,
            max_interval_ms: max.as_millis() as u64,
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(self.initial_ms.max(1)))
            .with_max_interval(Duration::from_millis(self.max_interval_ms.max(1)))
            .with_multiplier(self.multiplier.max(1.0))
            .with_randomization_factor(self.jitter.clamp(0.0, 1.0))
            .with_max_elapsed_time(if self.max_elapsed_secs == 0 {
                None
            } else {
                Some(Duration::from_secs(self.max_elapsed_secs))
            })
            .build()
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy's total time runs
/// out. Each retry is logged with `what` and the error.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    let cap = (policy.max_elapsed_secs > 0).then(|| Duration::from_secs(policy.max_elapsed_secs));
    backoff::future::retry_notify(
        policy.backoff(),
        || {
            let fut = op();
            async move {
                fut.await.map_err(|e| {
                    if !e.is_retryable() {
                        return backoff::Error::Permanent(e);
                    }
                    let retry_after = e.retry_after();
                    // a wait the peer imposes bypasses the backoff's own clock; the
                    // total cap must still hold
                    if let (Some(cap), Some(wait)) = (cap, retry_after) {
                        if started.elapsed() + wait > cap {
                            tracing::warn!(operation = what, error = %e, wait_ms = wait.as_millis() as u64,
                                cap_secs = cap.as_secs(), "giving up: the requested wait exceeds the total retry time");
                            return backoff::Error::Permanent(e);
                        }
                    }
                    backoff::Error::Transient { err: e, retry_after }
                })
            }
        },
        |e: E, wait: Duration| {
            metrics::counter!("socialcrm_retries_total", "operation" => what.to_string()).increment(1);
            tracing::warn!(operation = what, error = %e, wait_ms = wait.as_millis() as u64, "retrying");
        },
    )
    .await
}

impl Retryable for clickhouse::error::Error {
    fn is_retryable(&self) -> bool {
        use clickhouse::error::Error as E;
        match self {
            E::Network(_) | E::TimedOut => true,
            // Server-side errors: too many parts, memory limits, etc. are transient;
            // syntax and schema errors are not.
            E::BadResponse(msg) => {
                let m = msg.to_ascii_lowercase();
                !(m.contains("syntax error")
                    || m.contains("unknown_identifier")
                    || m.contains("no such column")
                    || m.contains("unknown table")
                    || m.contains("doesn't exist")
                    || crate::clickhouse_config::is_auth_failure(&m)
                    || m.contains("code: 62"))
            }
            _ => false,
        }
    }
}

impl Retryable for rdkafka::error::KafkaError {
    fn is_retryable(&self) -> bool {
        use rdkafka::error::RDKafkaErrorCode as C;
        !matches!(
            self.rdkafka_error_code(),
            Some(C::MessageSizeTooLarge)
                | Some(C::InvalidMessage)
                | Some(C::TopicAuthorizationFailed)
                | Some(C::UnknownTopicOrPartition)
                | Some(C::ClusterAuthorizationFailed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e{}", self.0)
        }
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[derive(Debug)]
    struct Wait(Duration);
    impl std::fmt::Display for Wait {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "wait {:?}", self.0)
        }
    }
    impl Retryable for Wait {
        fn is_retryable(&self) -> bool {
            true
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(self.0)
        }
    }

    #[tokio::test]
    async fn peer_imposed_waits_honour_the_total_cap() {
        let p = RetryPolicy {
            max_elapsed_secs: 1,
            ..RetryPolicy::forever(Duration::from_millis(1), Duration::from_millis(5))
        };
        // short imposed waits are honoured until the cap
        let n = AtomicU32::new(0);
        let t = std::time::Instant::now();
        let r: Result<(), Wait> = retry(&p, "t", || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(Wait(Duration::from_millis(300)))
        })
        .await;
        assert!(r.is_err());
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!((3..=4).contains(&n.load(Ordering::SeqCst)));
        // a wait longer than the cap is not started at all
        let t = std::time::Instant::now();
        let r: Result<(), Wait> =
            retry(&p, "t", || async { Err(Wait(Duration::from_secs(60))) }).await;
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds_and_stops_on_permanent() {
        let p = RetryPolicy::forever(Duration::from_millis(1), Duration::from_millis(5));
        let n = AtomicU32::new(0);
        let r: Result<u32, E> = retry(&p, "t", || async {
            let k = n.fetch_add(1, Ordering::SeqCst);
            if k < 3 {
                Err(E(true))
            } else {
                Ok(k)
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        let m = AtomicU32::new(0);
        let r: Result<u32, E> = retry(&p, "t", || async {
            m.fetch_add(1, Ordering::SeqCst);
            Err(E(false))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(m.load(Ordering::SeqCst), 1);
    }
}
