//! Who may send to the collector and how fast: the write keys in force (digests
//! compared in constant time, each granting a source) and a token bucket per key.
//! A reloaded `[collector]` section replaces keys and limits as a whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use socialcrm_schemas::secret::KeyRing;

use super::config::{CollectorConfig, RateLimit};

/// What a write key grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The key's name (`keys[].name` or `write_keys[i]`): logs and metrics.
    pub name: String,
    /// `source` (and `event_id` prefix) of its events.
    pub source: String,
}

/// The settings in force: swapped as a whole on reload, so a request sees either
/// the old keys and limits or the new ones, never a mix.
pub struct Live {
    pub config: CollectorConfig,
    pub keys: KeyRing<Grant>,
}

impl Live {
    /// From a validated config.
    pub fn new(config: CollectorConfig) -> Live {
        let keys = KeyRing::new(config.resolved_keys().into_iter().map(|k| {
            (
                k.key,
                Grant {
                    name: k.name,
                    source: k.source,
                },
            )
        }));
        Live { config, keys }
    }
}

/// The current settings, replaceable while requests are served.
pub struct Settings {
    live: RwLock<Arc<Live>>,
    limiter: Limiter,
}

impl Settings {
    pub fn new(config: CollectorConfig) -> Settings {
        Settings {
            live: RwLock::new(Arc::new(Live::new(config))),
            limiter: Limiter::default(),
        }
    }

    pub fn current(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes one request from `grant`'s bucket: `Err(wait)` when over the limit.
    pub fn admit(&self, live: &Live, grant: &Grant) -> Result<(), Duration> {
        self.limiter
            .take(&grant.name, live.config.rate_limit_per_key, Instant::now())
    }

    /// Applies a reloaded `[collector]` section. Refused whole (old settings stay)
    /// when invalid. Settings that need a restart keep their running values; the
    /// returned notes name them.
    pub fn reload(&self, mut new: CollectorConfig) -> Result<Vec<String>, String> {
        new.validate()?;
        let old = self.current();
        let mut notes = Vec::new();
        let o = &old.config;
        if new.listen != o.listen {
            notes.push("collector.listen".to_string());
            new.listen = o.listen.clone();
        }
        if new.ack_timeout_ms != o.ack_timeout_ms {
            notes.push("collector.ack_timeout_ms".to_string());
            new.ack_timeout_ms = o.ack_timeout_ms;
        }
        if new.default_phone_region != o.default_phone_region {
            notes.push("collector.default_phone_region".to_string());
            new.default_phone_region = o.default_phone_region.clone();
        }
        let live = Live::new(new);
        let names: Vec<String> = live
            .config
            .resolved_keys()
            .into_iter()
            .map(|k| k.name)
            .collect();
        *self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(live);
        // buckets of removed keys go; kept keys keep their level
        self.limiter.retain(|n| names.iter().any(|k| k == n));
        Ok(notes)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key name.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// One token from `name`'s bucket (full when new), refilled at
    /// `requests_per_sec` up to `burst`; `Err(wait)` until the next token when empty.
    pub fn take(&self, name: &str, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        if limit.requests_per_sec == 0 {
            return Ok(());
        }
        let rate = f64::from(limit.requests_per_sec);
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let b = buckets.entry(name.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|name, _| keep(name));
    }
}

/// `Retry-After` in whole seconds (at least 1) for a wait.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let l = Limiter::default();
        let lim = RateLimit {
            requests_per_sec: 2,
            burst: 3,
        };
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.take("a", lim, t0).is_ok(), "burst request {i}");
        }
        let wait = l.take("a", lim, t0).expect_err("over the burst");
        assert!(
            (Duration::from_millis(490)..=Duration::from_millis(510)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
        // another key has its own bucket
        assert!(l.take("b", lim, t0).is_ok());
        // half a second later one token is back, not more
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take("a", lim, t1).is_ok());
        assert!(l.take("a", lim, t1).is_err());
        // after a long pause the bucket is full again, but no fuller than the burst
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.take("a", lim, t2).is_ok());
        }
        assert!(l.take("a", lim, t2).is_err());
        // 0 = no limit
        let off = RateLimit {
            requests_per_sec: 0,
            burst: 0,
        };
        for _ in 0..10_000 {
            assert!(l.take("c", off, t0).is_ok());
        }
    }

    fn config(text: &str) -> CollectorConfig {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn reload_swaps_keys_and_refuses_bad_configs_whole() {
        let s = Settings::new(config(
            "write_keys = [\"old-key-1\"]\n[[keys]]\nname = \"eu\"\nkey = \"eu-key-123\"\nsource = \"web-eu\"\n",
        ));
        let live = s.current();
        assert_eq!(
            live.keys.find("old-key-1").map(|g| g.source.as_str()),
            Some("web")
        );
        let eu = live.keys.find("eu-key-123").expect("eu key").clone();
        assert_eq!(eu.source, "web-eu");
        assert!(s.admit(&live, &eu).is_ok());

        // removing a key and changing the listener: the key goes, the listener stays
        let notes = s
            .reload(config(
                "listen = \"127.0.0.1:9999\"\n[[keys]]\nname = \"eu\"\nkey = \"eu-key-123\"\nsource = \"web-eu\"\n",
            ))
            .expect("reloaded");
        assert_eq!(notes, ["collector.listen"]);
        let live = s.current();
        assert!(live.keys.find("old-key-1").is_none());
        assert!(live.keys.find("eu-key-123").is_some());
        assert_eq!(live.config.listen, "127.0.0.1:8088");

        // a bad config changes nothing
        let e = s
            .reload(config("[[keys]]\nname = \"eu\"\nkey = \"short\"\n"))
            .expect_err("refused");
        assert!(e.contains("collector.keys[0] (eu)"), "{e}");
        assert!(s.current().keys.find("eu-key-123").is_some());

        // a new rate limit applies at once
        s.reload(config(
            "rate_limit_per_key = { requests_per_sec = 1, burst = 1 }\n[[keys]]\nname = \"eu\"\nkey = \"eu-key-123\"\nsource = \"web-eu\"\n",
        ))
        .expect("reloaded");
        let live = s.current();
        let eu = live.keys.find("eu-key-123").expect("eu").clone();
        assert!(s.admit(&live, &eu).is_ok());
        assert!(s.admit(&live, &eu).is_err());
    }
}
