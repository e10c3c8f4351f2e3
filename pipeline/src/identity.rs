//! Identity resolution (DESIGN §5): deterministic union of the identifiers seen
//! together in one event, with the oldest profile surviving a merge.
//!
//! The graph lives in memory and is persisted by [`crate::store`] after every batch;
//! every change is tracked as dirty so the batch writes only what moved.

use std::collections::{BTreeSet, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socialcrm_schemas::event::RejectedIdentifier;
use socialcrm_schemas::identifier::is_junk;
use socialcrm_schemas::messages::{IdentityAction, IdentityMessage};
use socialcrm_schemas::{CanonicalEvent, IdType, Identifier, SCHEMA_VERSION};

use crate::config::IdentityConfig;
use crate::profile::ProfileState;

/// Where one identifier points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRecord {
    pub customer_id: String,
    pub first_seen: DateTime<Utc>,
}

/// The identity graph and profiles of one workspace.
#[derive(Debug, Default)]
pub struct Graph {
    // FxHash: the keys are not attacker-chosen hash-flooding material here (they
    // are normalised identifiers behind validation), and SipHash cost ~15 % of
    // resolution time
    pub ids: FxHashMap<String, IdRecord>,
    pub profiles: FxHashMap<String, ProfileState>,
    pub seen: FxHashSet<u128>,
    rules: Rules,
    pub(crate) dirty_ids: BTreeSet<String>,
    pub(crate) dirty_profiles: BTreeSet<String>,
    pub(crate) new_seen: Vec<u128>,
    /// (retired, survivor) pairs changed in this batch.
    pub(crate) dirty_aliases: Vec<(String, String, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Default)]
struct Rules {
    blocked: HashSet<String>,
    max_identifiers: usize,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The customer the event is attributed to.
    pub customer_id: String,
    /// True when the event_id was already counted (a replay): nothing changed.
    pub duplicate: bool,
    pub ledger: Vec<IdentityMessage>,
}

/// Stable 128-bit fingerprint of an event id (the seen-set key).
pub fn event_fingerprint(event_id: &str) -> u128 {
    let d = Sha256::digest(event_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// `c_` + 16 hex digits derived from the identifier that created the profile.
pub fn customer_id_for(anchor: &str, attempt: u32) -> String {
    let input = if attempt == 0 {
        anchor.to_string()
    } else {
        format!("{anchor}#{attempt}")
    };
    let d = Sha256::digest(input.as_bytes());
    format!("c_{}", hex::encode(&d[..8]))
}

fn entry_id(event_id: &str, action: IdentityAction, subject: &str) -> String {
    let d = Sha256::digest(format!("{event_id}|{}|{subject}", action.as_str()).as_bytes());
    hex::encode(&d[..16])
}

impl Graph {
    pub fn new(cfg: &IdentityConfig) -> Self {
        Graph {
            rules: Rules {
                blocked: cfg
                    .blocked_values
                    .iter()
                    .map(|v| v.trim().to_lowercase())
                    .collect(),
                max_identifiers: cfg.max_identifiers_per_profile.max(1),
            },
            ..Graph::default()
        }
    }

    /// The current customer of an identifier (`type:value`, normalised).
    pub fn customer_of(&self, key: &str) -> Option<&str> {
        self.ids.get(key).map(|r| r.customer_id.as_str())
    }

    fn ledger(
        ev: &CanonicalEvent,
        action: IdentityAction,
        customer_id: &str,
        identifier: Option<Identifier>,
        merged: Option<String>,
        rule: Option<(&str, String)>,
    ) -> IdentityMessage {
        let subject = match (&identifier, &merged) {
            (Some(i), _) => i.key(),
            (None, Some(m)) => m.clone(),
            _ => String::new(),
        };
        IdentityMessage {
            schema_version: SCHEMA_VERSION,
            entry_id: entry_id(&ev.event_id, action, &subject),
            action,
            customer_id: customer_id.to_string(),
            identifier,
            merged_customer_id: merged,
            rule: rule.as_ref().map(|r| r.0.to_string()),
            reason: rule.map(|r| r.1),
            event_id: ev.event_id.clone(),
            at: ev.received_at,
        }
    }

    /// Resolves the actor of a validated event, links/merges as needed, and counts
    /// the event on the resulting profile. `rejected` are identifiers that failed
    /// normalisation; they are recorded in the ledger.
    ///
    /// Fails (and changes nothing) when every identifier is on the blocked list: such
    /// an event cannot be attributed to anyone and belongs in the dead-letter topic.
    pub fn process(
        &mut self,
        ev: &CanonicalEvent,
        rejected: &[RejectedIdentifier],
    ) -> Result<Outcome, String> {
        let fp = event_fingerprint(&ev.event_id);
        if self.seen.contains(&fp) {
            let customer_id = ev
                .identifiers
                .iter()
                .find_map(|i| self.customer_of(&i.key()))
                .unwrap_or_default()
                .to_string();
            return Ok(Outcome {
                customer_id,
                duplicate: true,
                ledger: Vec::new(),
            });
        }

        let mut ledger = Vec::new();
        let mut rejects: Vec<(Identifier, &str, String)> = rejected
            .iter()
            .map(|r| (r.original.clone(), r.error.rule(), r.error.to_string()))
            .collect();

        // configured blocklist on top of the built-in junk values
        let mut ids: Vec<Identifier> = Vec::with_capacity(ev.identifiers.len());
        for id in &ev.identifiers {
            let blocked = !self.rules.blocked.is_empty()
                && self.rules.blocked.contains(&id.value.to_lowercase());
            if blocked || is_junk(&id.value) {
                rejects.push((
                    id.clone(),
                    "blocked_value",
                    format!("{} is on the blocked list", id.key()),
                ));
            } else {
                ids.push(id.clone());
            }
        }
        // strongest first, so the anchor of a new profile is deterministic
        ids.sort_by_key(|i| {
            (
                i.id_type
                    .parse::<IdType>()
                    .map(IdType::priority)
                    .unwrap_or(usize::MAX),
                i.value.clone(),
            )
        });

        if ids.is_empty() {
            let reasons: Vec<String> = rejects.iter().map(|r| r.2.clone()).collect();
            return Err(format!(
                "every identifier is blocked: {}",
                reasons.join("; ")
            ));
        }
        self.seen.insert(fp);
        self.new_seen.push(fp);
        let customer_id = self.link_all(ev, &ids, &mut ledger, &mut rejects);

        for (id, rule, reason) in rejects {
            ledger.push(Self::ledger(
                ev,
                IdentityAction::Reject,
                &customer_id,
                Some(id),
                None,
                Some((rule, reason)),
            ));
        }

        if let Some(p) = self.profiles.get_mut(&customer_id) {
            p.apply_event(ev);
            self.dirty_profiles.insert(customer_id.clone());
        }
        Ok(Outcome {
            customer_id,
            duplicate: false,
            ledger,
        })
    }

    fn create_profile(&mut self, anchor: &str, at: DateTime<Utc>) -> String {
        let mut attempt = 0;
        let cid = loop {
            let cid = customer_id_for(anchor, attempt);
            if !self.profiles.contains_key(&cid) {
                break cid;
            }
            attempt += 1;
        };
        self.profiles
            .insert(cid.clone(), ProfileState::new(cid.clone(), at));
        self.dirty_profiles.insert(cid.clone());
        cid
    }

    fn link_all(
        &mut self,
        ev: &CanonicalEvent,
        ids: &[Identifier],
        ledger: &mut Vec<IdentityMessage>,
        rejects: &mut Vec<(Identifier, &'static str, String)>,
    ) -> String {
        let keys: Vec<String> = ids.iter().map(Identifier::key).collect();
        let mut existing: Vec<String> = Vec::new();
        for k in &keys {
            if let Some(r) = self.ids.get(k) {
                if !existing.contains(&r.customer_id) {
                    existing.push(r.customer_id.clone());
                }
            }
        }

        let survivor = if existing.is_empty() {
            let cid = self.create_profile(&keys[0], ev.occurred_at);
            ledger.push(Self::ledger(
                ev,
                IdentityAction::Create,
                &cid,
                Some(ids[0].clone()),
                None,
                None,
            ));
            cid
        } else {
            // oldest profile survives: earliest first_seen, then smallest id
            existing.sort_by(|a, b| {
                let fa = self.profiles.get(a).map(|p| p.first_seen);
                let fb = self.profiles.get(b).map(|p| p.first_seen);
                fa.cmp(&fb).then_with(|| a.cmp(b))
            });
            let survivor = existing[0].clone();
            let total: usize = existing
                .iter()
                .filter_map(|c| self.profiles.get(c))
                .map(|p| p.identifiers.len())
                .sum();
            if existing.len() > 1 && total > self.rules.max_identifiers {
                // the merge would exceed the size cap: keep the profiles apart and
                // record the identifiers that would have glued them together
                for (id, key) in ids.iter().zip(keys.iter()) {
                    let owner = self.ids.get(key).map(|r| r.customer_id.clone());
                    if let Some(owner) = owner.filter(|o| *o != survivor) {
                        rejects.push((
                            id.clone(),
                            "profile_size_cap",
                            format!(
                                "merging {owner} into {survivor} would exceed {} identifiers",
                                self.rules.max_identifiers
                            ),
                        ));
                    }
                }
            } else {
                for loser in &existing[1..] {
                    self.merge(ev, &survivor, loser, ledger);
                }
            }
            survivor
        };

        for (id, key) in ids.iter().zip(keys.iter()) {
            if self.ids.contains_key(key) {
                continue;
            }
            let size = self
                .profiles
                .get(&survivor)
                .map(|p| p.identifiers.len())
                .unwrap_or(0);
            if size >= self.rules.max_identifiers {
                rejects.push((
                    id.clone(),
                    "profile_size_cap",
                    format!("profile {survivor} already has {size} identifiers"),
                ));
                continue;
            }
            self.ids.insert(
                key.clone(),
                IdRecord {
                    customer_id: survivor.clone(),
                    first_seen: ev.occurred_at,
                },
            );
            self.dirty_ids.insert(key.clone());
            if let Some(p) = self.profiles.get_mut(&survivor) {
                p.identifiers.insert(id.clone());
            }
            let created_with = ledger
                .iter()
                .any(|l| l.action == IdentityAction::Create && l.identifier.as_ref() == Some(id));
            if !created_with {
                ledger.push(Self::ledger(
                    ev,
                    IdentityAction::Link,
                    &survivor,
                    Some(id.clone()),
                    None,
                    None,
                ));
            }
        }
        survivor
    }

    fn merge(
        &mut self,
        ev: &CanonicalEvent,
        survivor: &str,
        loser: &str,
        ledger: &mut Vec<IdentityMessage>,
    ) {
        let Some(mut lost) = self.profiles.remove(loser) else {
            return;
        };
        for id in &lost.identifiers {
            let key = id.key();
            if let Some(r) = self.ids.get_mut(&key) {
                r.customer_id = survivor.to_string();
                self.dirty_ids.insert(key);
            }
        }
        if let Some(s) = self.profiles.get_mut(survivor) {
            s.absorb(&lost);
        }
        self.dirty_aliases
            .push((loser.to_string(), survivor.to_string(), ev.received_at));
        for older in &lost.merged_from {
            self.dirty_aliases
                .push((older.clone(), survivor.to_string(), ev.received_at));
        }
        lost.merged_into = Some(survivor.to_string());
        lost.identifiers.clear();
        self.profiles.insert(loser.to_string(), lost);
        self.dirty_profiles.insert(loser.to_string());
        self.dirty_profiles.insert(survivor.to_string());
        ledger.push(Self::ledger(
            ev,
            IdentityAction::Merge,
            survivor,
            None,
            Some(loser.to_string()),
            None,
        ));
    }

    /// Detaches what changed since the last call (values cloned) and clears the
    /// dirty sets.
    pub fn take_delta(&mut self) -> crate::store::Delta {
        let delta = crate::store::Delta {
            ids: self
                .dirty_ids
                .iter()
                .map(|k| (k.clone(), self.ids.get(k).cloned()))
                .collect(),
            profiles: self
                .dirty_profiles
                .iter()
                .map(|k| (k.clone(), self.profiles.get(k).cloned()))
                .collect(),
            seen: std::mem::take(&mut self.new_seen),
            aliases: std::mem::take(&mut self.dirty_aliases),
        };
        self.clear_dirty();
        delta
    }

    /// Forgets what the last batch changed (after it was persisted).
    pub fn clear_dirty(&mut self) {
        self.dirty_ids.clear();
        self.dirty_profiles.clear();
        self.new_seen.clear();
        self.dirty_aliases.clear();
    }

    /// Sets the scores of `customer_id` (following merges to the live profile);
    /// marks the profile for writing when they changed. False when unknown.
    pub fn apply_scores(
        &mut self,
        customer_id: &str,
        scores: crate::profile::ProfileScores,
    ) -> bool {
        let mut cid = customer_id.to_string();
        for _ in 0..16 {
            match self.profiles.get(&cid).and_then(|p| p.merged_into.clone()) {
                Some(next) => cid = next,
                None => break,
            }
        }
        let Some(p) = self.profiles.get_mut(&cid) else {
            return false;
        };
        if p.merged_into.is_some() {
            return false;
        }
        // a profile that absorbed others keeps the scores computed for itself
        if cid != customer_id && p.scores.as_ref().is_some_and(|s| s.run_id >= scores.run_id) {
            return false;
        }
        if p.scores.as_ref() != Some(&scores) {
            p.scores = Some(scores);
            self.dirty_profiles.insert(cid);
        }
        true
    }

    /// The live profile an identifier belongs to.
    pub fn profile_of(&self, key: &str) -> Option<&ProfileState> {
        self.customer_of(key).and_then(|c| self.profiles.get(c))
    }

    /// Partition of identifiers into live profiles (for tests and tools).
    pub fn partition(&self) -> Vec<BTreeSet<String>> {
        let mut parts: Vec<BTreeSet<String>> = self
            .profiles
            .values()
            .filter(|p| p.is_active() && !p.identifiers.is_empty())
            .map(|p| p.identifiers.iter().map(Identifier::key).collect())
            .collect();
        parts.sort();
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ev(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        crate::testing::event(id, at, ids)
    }

    #[test]
    fn scores_follow_merges_and_only_changes_are_written() {
        let mut g = Graph::new(&IdentityConfig::default());
        let old = g
            .process(
                &ev("1", "2026-01-01T00:00:00Z", &[(IdType::AnonymousId, "a1")]),
                &[],
            )
            .expect("a1")
            .customer_id;
        let young = g
            .process(
                &ev("2", "2026-01-05T00:00:00Z", &[(IdType::Email, "x@y.co")]),
                &[],
            )
            .expect("x")
            .customer_id;
        g.take_delta();
        let s = |run: &str, e: f64| crate::profile::ProfileScores {
            run_id: run.into(),
            engagement_score: e,
            influence_score: 0.0,
            lifecycle_stage: "prospect".into(),
            rfm_segment: String::new(),
            rfm: [0, 0, 0],
            top_categories: vec![],
            top_channels: vec![],
        };
        assert!(g.apply_scores(&young, s("r1", 50.0)));
        assert_eq!(g.take_delta().profiles.len(), 1);
        // the same scores again: nothing to write
        assert!(g.apply_scores(&young, s("r1", 50.0)));
        assert!(g.take_delta().profiles.is_empty());
        assert!(!g.apply_scores("c_unknown", s("r1", 1.0)));
        // merge young into old (oldest survives); scores of the retired id reach the survivor
        g.process(
            &ev(
                "3",
                "2026-01-06T00:00:00Z",
                &[(IdType::AnonymousId, "a1"), (IdType::Email, "x@y.co")],
            ),
            &[],
        )
        .expect("merge");
        g.take_delta();
        assert!(g.apply_scores(&young, s("r2", 70.0)));
        assert_eq!(
            g.profiles
                .get(&old)
                .and_then(|p| p.scores.as_ref())
                .map(|x| x.engagement_score),
            Some(70.0)
        );
        // but a run that scored the survivor itself wins over the retired id's older score
        assert!(g.apply_scores(&old, s("r3", 20.0)));
        assert!(!g.apply_scores(&young, s("r2", 99.0)));
        assert_eq!(
            g.profiles
                .get(&old)
                .and_then(|p| p.scores.as_ref())
                .map(|x| x.engagement_score),
            Some(20.0)
        );
    }

    #[test]
    fn anonymous_then_identify_then_other_device_is_one_customer() {
        let mut g = Graph::new(&IdentityConfig::default());
        let a = g
            .process(
                &ev(
                    "1",
                    "2026-01-01T00:00:00Z",
                    &[(IdType::AnonymousId, "anon-1")],
                ),
                &[],
            )
            .expect("attributable");
        let b = g
            .process(
                &ev(
                    "2",
                    "2026-01-02T00:00:00Z",
                    &[(IdType::AnonymousId, "anon-2")],
                ),
                &[],
            )
            .expect("attributable");
        assert_ne!(a.customer_id, b.customer_id);
        let c = g
            .process(
                &ev(
                    "3",
                    "2026-01-03T00:00:00Z",
                    &[
                        (IdType::AnonymousId, "anon-1"),
                        (IdType::UserId, "u1"),
                        (IdType::Email, "a@b.co"),
                    ],
                ),
                &[],
            )
            .expect("attributable");
        assert_eq!(c.customer_id, a.customer_id);
        let d = g
            .process(
                &ev(
                    "4",
                    "2026-01-04T00:00:00Z",
                    &[(IdType::AnonymousId, "anon-2"), (IdType::Email, "a@b.co")],
                ),
                &[],
            )
            .expect("attributable");
        // anon-2's profile is younger: it merges into anon-1's
        assert_eq!(d.customer_id, a.customer_id);
        assert!(d.ledger.iter().any(|l| l.action == IdentityAction::Merge
            && l.merged_customer_id.as_deref() == Some(b.customer_id.as_str())));
        let p = g.profile_of("anonymous_id:anon-2").expect("profile");
        assert_eq!(p.customer_id, a.customer_id);
        assert_eq!(p.event_count, 4);
        assert_eq!(p.identifiers.len(), 4);
        assert_eq!(
            g.profiles[&b.customer_id].merged_into.as_deref(),
            Some(a.customer_id.as_str())
        );
        // replay of an event changes nothing
        let again = g
            .process(
                &ev("4", "2026-01-04T00:00:00Z", &[(IdType::Email, "a@b.co")]),
                &[],
            )
            .expect("attributable");
        assert!(again.duplicate);
        assert_eq!(g.profile_of("email:a@b.co").map(|p| p.event_count), Some(4));
    }

    #[test]
    fn an_event_with_only_blocked_identifiers_is_refused() {
        let cfg = IdentityConfig {
            blocked_values: vec!["info@shop.com".into()],
            ..IdentityConfig::default()
        };
        let mut g = Graph::new(&cfg);
        let e = ev(
            "1",
            "2026-01-01T00:00:00Z",
            &[(IdType::Email, "info@shop.com")],
        );
        let err = g.process(&e, &[]).expect_err("nobody to attribute to");
        assert!(err.contains("blocked"), "{err}");
        assert!(g.profiles.is_empty() && g.seen.is_empty());
    }

    #[test]
    fn blocked_values_never_link() {
        let cfg = IdentityConfig {
            blocked_values: vec!["info@shop.com".into()],
            ..IdentityConfig::default()
        };
        let mut g = Graph::new(&cfg);
        let a = g
            .process(
                &ev(
                    "1",
                    "2026-01-01T00:00:00Z",
                    &[(IdType::Email, "info@shop.com"), (IdType::UserId, "a")],
                ),
                &[],
            )
            .expect("attributable");
        let b = g
            .process(
                &ev(
                    "2",
                    "2026-01-01T00:00:00Z",
                    &[(IdType::Email, "info@shop.com"), (IdType::UserId, "b")],
                ),
                &[],
            )
            .expect("attributable");
        assert_ne!(a.customer_id, b.customer_id);
        assert!(a
            .ledger
            .iter()
            .any(|l| l.action == IdentityAction::Reject
                && l.rule.as_deref() == Some("blocked_value")));
    }

    #[test]
    fn size_cap_rejects_links() {
        let cfg = IdentityConfig {
            max_identifiers_per_profile: 2,
            ..IdentityConfig::default()
        };
        let mut g = Graph::new(&cfg);
        let o = g
            .process(
                &ev(
                    "1",
                    "2026-01-01T00:00:00Z",
                    &[
                        (IdType::AnonymousId, "x"),
                        (IdType::AnonymousId, "y"),
                        (IdType::AnonymousId, "z"),
                    ],
                ),
                &[],
            )
            .expect("attributable");
        assert_eq!(g.profiles[&o.customer_id].identifiers.len(), 2);
        assert!(o
            .ledger
            .iter()
            .any(|l| l.rule.as_deref() == Some("profile_size_cap")));
    }

    /// Oracle: connected components of the "seen together" graph.
    fn oracle(events: &[Vec<String>]) -> Vec<BTreeSet<String>> {
        let mut adj: HashMap<String, Vec<String>> = HashMap::new();
        for e in events {
            for a in e {
                adj.entry(a.clone()).or_default().extend(e.iter().cloned());
            }
        }
        let mut seen = HashSet::new();
        let mut parts = Vec::new();
        let mut keys: Vec<&String> = adj.keys().collect();
        keys.sort();
        for k in keys {
            if seen.contains(k) {
                continue;
            }
            let mut comp = BTreeSet::new();
            let mut stack = vec![k.clone()];
            while let Some(n) = stack.pop() {
                if seen.insert(n.clone()) {
                    comp.insert(n.clone());
                    stack.extend(adj[&n].iter().cloned());
                }
            }
            parts.push(comp);
        }
        parts.sort();
        parts
    }

    proptest! {
        #[test]
        fn partition_matches_oracle_in_any_order(
            events in prop::collection::vec(prop::collection::vec((0usize..3, 0u8..12), 1..4), 1..30),
            seed in any::<u64>(),
        ) {
            let types = [IdType::Email, IdType::UserId, IdType::AnonymousId];
            let evs: Vec<CanonicalEvent> = events.iter().enumerate().map(|(i, ids)| {
                let ids: Vec<(IdType, String)> = ids.iter().map(|(t, v)| (types[*t], format!("v{v}@x.io"))).collect();
                let refs: Vec<(IdType, &str)> = ids.iter().map(|(t, v)| (*t, v.as_str())).collect();
                ev(&format!("e{i}"), &format!("2026-01-{:02}T00:00:00Z", 1 + i % 28), &refs)
            }).collect();
            let keys: Vec<Vec<String>> = evs.iter().map(|e| e.identifiers.iter().map(Identifier::key).collect()).collect();
            let expected = oracle(&keys);
            // a deterministic shuffle from the seed
            let mut order: Vec<usize> = (0..evs.len()).collect();
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut g = Graph::new(&IdentityConfig::default());
            for i in &order { g.process(&evs[*i], &[]).expect("attributable"); }
            // duplicates change nothing
            for i in &order { prop_assert!(g.process(&evs[*i], &[]).expect("attributable").duplicate); }
            prop_assert_eq!(g.partition(), expected);
            let total: u64 = g.profiles.values().filter(|p| p.is_active()).map(|p| p.event_count).sum();
            prop_assert_eq!(total, evs.len() as u64);
        }
    }
}
