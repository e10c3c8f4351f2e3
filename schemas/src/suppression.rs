//! Suppression of erased people (docs/privacy.md, "Suppression"): the salted hash
//! under which an erased identifier is remembered, and the checks every process
//! that takes in events runs against the list (the pipeline drops, connectors skip).
//!
//! The list holds `sha256:` + hex SHA-256(salt ‖ 0x00 ‖ `type:value`) of the
//! identifier *as stored* (after normalisation and, for the types
//! `privacy.hash_identifier_types` names, after hashing), never a clear value.
//!
//! A suppression can be lifted (`socialcrm privacy unsuppress`): from the lift on,
//! events that *occurred* after it are accepted again; older ones (a replay, a
//! backfill) stay dropped, so the lift never brings back what the erasure removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::identifier::{Identifier, Normalizer};
use crate::privacy::{salted_hash, Hasher, PrivacyConfig};
use crate::CanonicalEvent;

/// Salt of the suppression hashes when `privacy.salt` is empty. It is public (it is
/// in this source file): anyone holding a list of candidate addresses can test them
/// against `crm.suppressions`. Fine on a laptop; set a secret `privacy.salt` anywhere
/// else.
pub const LOCAL_DEFAULT_SALT: &str = "socialcrm-local-default-salt (public, set privacy.salt)";

/// Hashes identifiers for the suppression list.
#[derive(Clone)]
pub struct SuppressionHasher {
    salt: Vec<u8>,
    default_salt: bool,
    /// How identifiers are stored (hashed types), to hash the stored form.
    stored: Option<Hasher>,
}

impl std::fmt::Debug for SuppressionHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppressionHasher")
            .field("salt", &"<redacted>")
            .field("default_salt", &self.default_salt)
            .finish()
    }
}

impl SuppressionHasher {
    /// The hasher of `[privacy]`: its salt, or [`LOCAL_DEFAULT_SALT`] when empty.
    pub fn new(cfg: &PrivacyConfig) -> SuppressionHasher {
        let default_salt = cfg.salt.is_empty();
        let salt = if default_salt {
            LOCAL_DEFAULT_SALT
        } else {
            &cfg.salt
        };
        SuppressionHasher {
            salt: salt.as_bytes().to_vec(),
            default_salt,
            stored: cfg.hasher(),
        }
    }

    /// True when `privacy.salt` is empty and the public default salt is used.
    pub fn uses_default_salt(&self) -> bool {
        self.default_salt
    }

    /// The suppression hash of a stored identifier key (`type:value`).
    pub fn hash_key(&self, key: &str) -> String {
        salted_hash(&self.salt, key)
    }

    /// A fingerprint of the salt (reveals neither the salt nor any value): hashes
    /// made under another salt never match, so every list records it.
    pub fn salt_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"socialcrm-suppression-salt\0");
        h.update(&self.salt);
        hex::encode(&h.finalize()[..8])
    }

    /// The stored key of a normalised identifier (hashed when its type is).
    pub fn stored_key(&self, id: &Identifier) -> String {
        match &self.stored {
            Some(h) => {
                let mut id = id.clone();
                h.protect_identifier(&mut id);
                id.key()
            }
            None => id.key(),
        }
    }
}

/// Every identifier an event carries (actor, claimed, target).
pub fn event_identifiers(ev: &CanonicalEvent) -> impl Iterator<Item = &Identifier> {
    ev.identifiers
        .iter()
        .chain(ev.claimed.iter())
        .chain(ev.target.iter())
}

/// The identifiers a raw event payload names, read leniently (a payload that
/// failed validation may still name a suppressed person): every `{type, value}`
/// of `identifiers`, `claimed` and `target` that normalises.
pub fn raw_identifiers(payload: &[u8], normalizer: &Normalizer) -> Vec<Identifier> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for field in ["identifiers", "claimed", "target"] {
        for i in v[field].as_array().into_iter().flatten() {
            if let (Some(t), Some(val)) = (i["type"].as_str(), i["value"].as_str()) {
                if let Ok(id) = normalizer.normalize(t, val) {
                    out.push(id);
                }
            }
        }
    }
    out
}

/// Lifted suppressions in force: hash → the lift's time (Unix seconds).
pub type Lifts = HashMap<String, i64>;

/// True when a lift at `lifted_at` lets an event that occurred at `occurred_at`
/// (Unix seconds) through: only events of a later second than the lift.
pub fn lift_admits(lifted_at: Option<&i64>, occurred_at: i64) -> bool {
    lifted_at.is_some_and(|l| occurred_at > *l)
}

/// A suppression list shared between tasks (a connector refreshes it from
/// ClickHouse while its pages are checked).
#[derive(Debug, Clone)]
pub struct SuppressionList {
    hasher: SuppressionHasher,
    hashes: Arc<RwLock<HashSet<String>>>,
    lifts: Arc<RwLock<Lifts>>,
}

impl SuppressionList {
    pub fn new(hasher: SuppressionHasher) -> SuppressionList {
        SuppressionList {
            hasher,
            hashes: Arc::default(),
            lifts: Arc::default(),
        }
    }

    /// Replaces the lifts in force.
    pub fn replace_lifts(&self, lifts: Lifts) {
        if let Ok(mut l) = self.lifts.write() {
            *l = lifts;
        }
    }

    pub fn hasher(&self) -> &SuppressionHasher {
        &self.hasher
    }

    /// Replaces the list.
    pub fn replace(&self, hashes: HashSet<String>) {
        if let Ok(mut h) = self.hashes.write() {
            *h = hashes;
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.read().map(|h| h.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type of the first suppressed identifier of a normalised event, if any.
    pub fn suppressed(&self, ev: &CanonicalEvent) -> Option<String> {
        let h = self.hashes.read().ok()?;
        if h.is_empty() {
            return None;
        }
        let lifts = self.lifts.read().ok()?;
        let at = ev.occurred_at.timestamp();
        event_identifiers(ev)
            .find(|i| {
                let hash = self.hasher.hash_key(&self.hasher.stored_key(i));
                h.contains(&hash) && !lift_admits(lifts.get(&hash), at)
            })
            .map(|i| i.id_type.clone())
    }

    /// Reads the lifts in force from ClickHouse `suppression_lifts` (under this
    /// salt, applied by the identity writer: a request whose command never reached
    /// it counts for nobody): per hash the newest lift, unless a later erasure
    /// suppressed the identifier again (a newer `suppressions.added_at`).
    pub async fn load_lifts(
        &self,
        ch: &clickhouse::Client,
    ) -> Result<Lifts, clickhouse::error::Error> {
        let salt_id = self.hasher.salt_id();
        let lifted: Vec<(String, i64)> = ch
            .query("SELECT hash, toInt64(max(lifted_at)) FROM suppression_lifts WHERE salt_id = ? AND status = 'applied' GROUP BY hash")
            .bind(&salt_id)
            .fetch_all()
            .await?;
        if lifted.is_empty() {
            return Ok(Lifts::new());
        }
        let added: HashMap<String, i64> = ch
            .query("SELECT hash, toInt64(max(added_at)) FROM suppressions WHERE salt_id = ? AND hash IN (SELECT hash FROM suppression_lifts WHERE status = 'applied') GROUP BY hash")
            .bind(&salt_id)
            .fetch_all::<(String, i64)>()
            .await?
            .into_iter()
            .collect();
        Ok(effective_lifts(lifted, &added))
    }

    /// Reads the list from ClickHouse `suppressions` (hashes under this salt), and
    /// how many hashes were made under another salt (they cannot match).
    pub async fn load(
        &self,
        ch: &clickhouse::Client,
    ) -> Result<(HashSet<String>, u64), clickhouse::error::Error> {
        let rows: Vec<(String, String)> = ch
            .query("SELECT hash, salt_id FROM suppressions FINAL")
            .fetch_all()
            .await?;
        let salt_id = self.hasher.salt_id();
        let other = rows.iter().filter(|(_, s)| *s != salt_id).count() as u64;
        let set = rows
            .into_iter()
            .filter(|(_, s)| *s == salt_id)
            .map(|(h, _)| h)
            .collect();
        Ok((set, other))
    }
}

/// The lifts still in force: a lift of a hash that is not (or no longer) on the
/// list lifts nothing, and an erasure after the lift ends it.
pub fn effective_lifts(lifted: Vec<(String, i64)>, added: &HashMap<String, i64>) -> Lifts {
    lifted
        .into_iter()
        .filter(|(h, at)| added.get(h).is_some_and(|a| at >= a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdType;

    fn privacy(salt: &str, types: &[&str]) -> PrivacyConfig {
        PrivacyConfig {
            salt: salt.into(),
            hash_identifier_types: types.iter().map(|t| t.to_string()).collect(),
            ..PrivacyConfig::default()
        }
    }

    #[test]
    fn hashes_depend_on_the_salt_and_the_stored_form() {
        let a = SuppressionHasher::new(&privacy("first-salt-0123456", &[]));
        let b = SuppressionHasher::new(&privacy("other-salt-0123456", &[]));
        let d = SuppressionHasher::new(&privacy("", &[]));
        assert!(d.uses_default_salt() && !a.uses_default_salt());
        let k = "email:ann@example.com";
        assert_eq!(a.hash_key(k), a.hash_key(k));
        assert_ne!(a.hash_key(k), b.hash_key(k));
        assert_ne!(a.salt_id(), b.salt_id());
        assert!(a.hash_key(k).starts_with("sha256:") && a.hash_key(k).len() == 71);
        // SHA-256("first-salt-0123456" ‖ 0x00 ‖ "email:ann@example.com"), by sha256sum
        assert_eq!(
            a.hash_key(k),
            "sha256:a138ad248076cd13652403168ff727ecd55e30ecd10002de1b80a73107121708"
        );
        assert!(!format!("{a:?}").contains("first-salt"));
        // a hashed type is suppressed under its stored (hashed) form
        let h = SuppressionHasher::new(&privacy("first-salt-0123456", &["email"]));
        let id = Identifier::new(IdType::Email, "ann@example.com");
        assert_ne!(h.stored_key(&id), id.key());
        assert!(h.stored_key(&id).starts_with("email:sha256:"));
        assert_eq!(a.stored_key(&id), id.key());
    }

    #[test]
    fn events_are_suppressed_by_any_identifier_they_carry() {
        let list = SuppressionList::new(SuppressionHasher::new(&privacy("", &[])));
        let n = Normalizer::new(None).expect("normalizer");
        let mut ev = CanonicalEvent::bare(
            "e1",
            "web",
            "track",
            chrono::Utc::now(),
            vec![Identifier::new(IdType::UserId, "bob")],
        );
        assert_eq!(list.suppressed(&ev), None, "empty list");
        let ann = Identifier::new(IdType::Email, "ann@example.com");
        list.replace(HashSet::from([list.hasher().hash_key(&ann.key())]));
        assert_eq!(list.suppressed(&ev), None);
        ev.target = vec![ann.clone()];
        assert_eq!(list.suppressed(&ev).as_deref(), Some("email"));
        ev.target.clear();
        ev.claimed = vec![ann.clone()];
        assert_eq!(list.suppressed(&ev).as_deref(), Some("email"));
        // a payload that fails validation still names its identifiers
        let raw = br#"{"identifiers":[{"type":"email","value":" Ann@Example.com "}],"bad":1}"#;
        assert_eq!(raw_identifiers(raw, &n), vec![ann]);
        assert!(raw_identifiers(b"not json", &n).is_empty());
    }

    #[test]
    fn a_lift_admits_only_events_that_occurred_after_it() {
        let list = SuppressionList::new(SuppressionHasher::new(&privacy("", &[])));
        let ann = Identifier::new(IdType::Email, "ann@example.com");
        let hash = list.hasher().hash_key(&ann.key());
        list.replace(HashSet::from([hash.clone()]));
        let lifted_at = 1_800_000_000;
        let at = |secs: i64| {
            CanonicalEvent::bare(
                "e",
                "web",
                "track",
                chrono::DateTime::from_timestamp(secs, 0).expect("time"),
                vec![ann.clone()],
            )
        };
        list.replace_lifts(Lifts::from([(hash.clone(), lifted_at)]));
        assert_eq!(list.suppressed(&at(lifted_at + 1)), None, "after the lift");
        assert_eq!(
            list.suppressed(&at(lifted_at)).as_deref(),
            Some("email"),
            "the lift's own second"
        );
        assert_eq!(
            list.suppressed(&at(lifted_at - 86_400)).as_deref(),
            Some("email"),
            "an old event (a replay) stays dropped"
        );
        // a lift of a hash that is not suppressed lifts nothing; an erasure after the
        // lift ends it; a lift after the erasure holds
        let added = HashMap::from([
            (hash.clone(), lifted_at - 10),
            ("sha256:b".into(), lifted_at + 5),
        ]);
        let lifts = effective_lifts(
            vec![
                (hash.clone(), lifted_at),
                ("sha256:b".into(), lifted_at),
                ("sha256:c".into(), lifted_at),
            ],
            &added,
        );
        assert_eq!(lifts, Lifts::from([(hash, lifted_at)]));
    }
}
