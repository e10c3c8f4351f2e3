//! Identity resolution (DESIGN §5, docs/identity.md).
//!
//! The model: every identifier is born at the earliest event that carries it, and
//! every distinct set of identifiers seen together in one event is a *link*. The
//! profiles are what a greedy pass over those births and links in event-time order
//! gives, under [`Rules`]: a link whose merge would break a rule drops its weakest
//! identifier (Segment-style) until it passes, and the drop is recorded.
//!
//! The streaming writer reaches that same result without replaying: a link that
//! breaks no rule and touches no profile that ever had a conflict is a plain union,
//! and every rule is monotone (a subset of a valid profile is valid), so for such
//! clusters the order cannot matter. Only a cluster with a conflict is re-resolved
//! from its recorded births and links ([`Graph::recompute`]) when a new link or an
//! earlier event reaches it; unlinks and splits are walls that the same replay
//! honours. Profile aggregates are kept per *primary* identifier (the strongest
//! identifier of each event), so a profile that changes shape is re-summed from its
//! identifiers' contributions, and the events in ClickHouse follow their primary.
//!
//! The graph lives in memory and is persisted by [`crate::store`] after every batch;
//! every change is tracked as dirty so the batch writes only what moved.

mod erase;
mod recompute;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socialcrm_schemas::event::RejectedIdentifier;
use socialcrm_schemas::messages::{IdentityAction, IdentityMessage};
use socialcrm_schemas::{CanonicalEvent, Identifier, SCHEMA_VERSION};

use crate::config::IdentityConfig;
use crate::profile::ProfileState;
pub use erase::Erased;
pub use rules::Rules;

/// Where one identifier points, and when it was born.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRecord {
    pub customer_id: String,
    /// Time of the earliest event that carried the identifier.
    #[serde(with = "crate::codec::time")]
    pub first_seen: DateTime<Utc>,
    /// Fingerprint of that event (breaks ties between births at the same time).
    #[serde(default)]
    pub first_event: u64,
    /// The links (identifier sets) the identifier is part of: an index over
    /// [`Graph::links`], not stored (rebuilt at load by [`Graph::index_links`]).
    #[serde(skip)]
    pub links: Vec<u64>,
}

/// One distinct set of identifiers seen together, with the earliest event that
/// carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Strongest first.
    pub ids: Vec<Identifier>,
    #[serde(with = "crate::codec::time")]
    pub at: DateTime<Utc>,
    pub event_fp: u64,
    pub event_id: String,
}

/// An unlink or split: identifiers on side 0 never share a profile with those on side 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wall {
    pub id: u64,
    pub sides: [Vec<String>; 2],
    /// `unlink email:a@b.co` / `split c_... (3 identifiers)`, with the command id.
    pub why: String,
    #[serde(with = "crate::codec::time")]
    pub at: DateTime<Utc>,
}

/// The walls, indexed by identifier.
#[derive(Debug, Clone, Default)]
pub struct Walls {
    pub(crate) by_id: FxHashMap<String, Vec<(u64, u8)>>,
    pub list: BTreeMap<u64, Wall>,
}

impl Walls {
    pub fn add(&mut self, w: Wall) {
        if self.list.contains_key(&w.id) {
            return;
        }
        for (side, keys) in w.sides.iter().enumerate() {
            for k in keys {
                self.by_id
                    .entry(k.clone())
                    .or_default()
                    .push((w.id, side as u8));
            }
        }
        self.list.insert(w.id, w);
    }
}

/// What caused a change: an event, or an operator's command.
#[derive(Debug, Clone)]
pub struct Cause {
    pub event_id: String,
    pub fp: u64,
    pub at: DateTime<Utc>,
}

impl Cause {
    fn of(ev: &CanonicalEvent, fp: u128) -> Cause {
        Cause {
            event_id: ev.event_id.clone(),
            fp: fp as u64,
            at: ev.received_at,
        }
    }
}

/// The identity graph and profiles of one workspace.
#[derive(Debug, Default)]
pub struct Graph {
    // FxHash: the keys are not attacker-chosen hash-flooding material here (they
    // are normalised identifiers behind validation), and SipHash cost ~15 % of
    // resolution time
    pub ids: FxHashMap<String, IdRecord>,
    /// Shared with the batch being written (copy on write): detaching a batch's
    /// changes costs a reference count, not a deep copy of every profile.
    pub profiles: FxHashMap<String, Arc<ProfileState>>,
    pub seen: FxHashSet<u128>,
    pub links: FxHashMap<u64, Link>,
    /// Aggregates of the events whose primary identifier is the key.
    pub contrib: FxHashMap<String, Arc<ProfileState>>,
    pub walls: Walls,
    pub(crate) rules: Rules,
    // hash sets: a batch marks hundreds of thousands of keys, and B-tree inserts
    // of strings cost more than the resolution itself
    pub(crate) dirty_ids: FxHashSet<String>,
    pub(crate) dirty_profiles: FxHashSet<String>,
    pub(crate) dirty_links: FxHashSet<u64>,
    pub(crate) dirty_contrib: FxHashSet<String>,
    pub(crate) dirty_walls: FxHashSet<u64>,
    pub(crate) new_seen: Vec<u128>,
    /// (retired, survivor) pairs changed in this batch.
    pub(crate) dirty_aliases: Vec<(String, String, DateTime<Utc>)>,
    /// Primary identifiers whose events now belong to another customer.
    pub(crate) moved: BTreeMap<String, String>,
    /// Suppression hashes of erased identifiers (`crate::privacy`): events that
    /// carry one are dropped.
    pub suppressed: FxHashSet<String>,
    /// (hash, identifier type) added in this batch.
    pub(crate) new_suppressed: Vec<(String, String)>,
    /// Lifted suppressions in force: hash → the lift's time (Unix seconds). Not in
    /// the store: read from ClickHouse `suppression_lifts` at start and changed by
    /// the commands on `crm.privacy.commands` (`crate::privacy`).
    pub lifted: FxHashMap<String, i64>,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The customer the event is attributed to.
    pub customer_id: String,
    /// The event's strongest identifier (`type:value`): its events follow it.
    pub primary: String,
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

/// Stable 64-bit key of a set of identifier keys (sorted).
pub fn link_key(keys: &[String]) -> u64 {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for k in sorted {
        h.update(k.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
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

/// Days since 1970-01-01 of `t`.
pub fn day_of(t: DateTime<Utc>) -> u32 {
    (t.timestamp().max(0) / 86_400) as u32
}

pub(crate) fn ledger_entry(
    cause: &Cause,
    action: IdentityAction,
    customer_id: &str,
    identifier: Option<Identifier>,
    merged: Option<String>,
    rule: Option<(&str, String)>,
) -> IdentityMessage {
    let subject = match (&identifier, &merged) {
        (Some(i), Some(m)) => format!("{}>{m}", i.key()),
        (Some(i), None) => i.key(),
        (None, Some(m)) => m.clone(),
        _ => String::new(),
    };
    IdentityMessage {
        schema_version: SCHEMA_VERSION,
        entry_id: entry_id(&cause.event_id, action, &subject),
        action,
        customer_id: customer_id.to_string(),
        identifier,
        merged_customer_id: merged,
        rule: rule.as_ref().map(|r| r.0.to_string()),
        reason: rule.map(|r| r.1),
        event_id: cause.event_id.clone(),
        at: cause.at,
    }
}

impl Graph {
    /// A graph under the rules of `cfg` (validated beforehand with
    /// [`IdentityConfig::validate`]; an invalid config falls back to the defaults).
    pub fn new(cfg: &IdentityConfig) -> Self {
        Graph {
            rules: Rules::new(cfg).unwrap_or_default(),
            ..Graph::default()
        }
    }

    /// The current customer of an identifier (`type:value`, normalised).
    pub fn customer_of(&self, key: &str) -> Option<&str> {
        self.ids
            .get(key)
            .map(|r| r.customer_id.as_str())
            .filter(|c| !c.is_empty())
    }

    /// Resolves the actor of a validated event, links/merges as needed, and counts
    /// the event on the resulting profile. `rejected` are identifiers that failed
    /// normalisation; they are recorded in the ledger.
    ///
    /// Fails (and changes nothing) when every identifier is blocked: such an event
    /// cannot be attributed to anyone and belongs in the dead-letter topic.
    pub fn process(
        &mut self,
        ev: &CanonicalEvent,
        rejected: &[RejectedIdentifier],
    ) -> Result<Outcome, String> {
        self.process_screened(ev, rejected, Vec::new())
    }

    /// [`Graph::process`] of an event from which the caller already removed
    /// identifiers under a rule (`screened`: identifier, rule, reason), e.g. values
    /// that the blocked rules refused before they were hashed (`crate::pii`); they
    /// are recorded in the ledger like the graph's own rejections.
    pub fn process_screened(
        &mut self,
        ev: &CanonicalEvent,
        rejected: &[RejectedIdentifier],
        screened: Vec<(Identifier, &'static str, String)>,
    ) -> Result<Outcome, String> {
        let fp = event_fingerprint(&ev.event_id);
        let mut rejects: Vec<(Identifier, &str, String)> = rejected
            .iter()
            .map(|r| (r.original.clone(), r.error.rule(), r.error.to_string()))
            .collect();
        rejects.extend(screened);

        // each identifier with its `type:value` key, built once per event
        let mut pairs: Vec<(Identifier, String)> = Vec::with_capacity(ev.identifiers.len());
        for id in &ev.identifiers {
            let key = id.key();
            // a known identifier passed the rules when it was first linked
            if !self.ids.contains_key(&key) {
                if let Some(why) = self.rules.blocked(id) {
                    rejects.push((id.clone(), rules::rule::BLOCKED, why));
                    continue;
                }
            }
            pairs.push((id.clone(), key));
        }
        if pairs.is_empty() {
            let reasons: Vec<String> = rejects.iter().map(|r| r.2.clone()).collect();
            return Err(format!(
                "every identifier is blocked: {}",
                reasons.join("; ")
            ));
        }
        // strongest first: the primary decides attribution; the weakest drops first
        self.sort_strongest_first(&mut pairs);
        // the event's own strongest identifier (a trusted claim may rank above it)
        let primary = pairs[0].1.clone();
        // claims: linked where a rule trusts them, otherwise only recorded
        let mut candidates: Vec<Identifier> = Vec::new();
        let mut trusted = false;
        for c in &ev.claimed {
            if pairs.iter().any(|(i, _)| i == c) || candidates.contains(c) {
                continue;
            }
            let key = c.key();
            if !self.ids.contains_key(&key) {
                if let Some(why) = self.rules.blocked(c) {
                    rejects.push((c.clone(), rules::rule::BLOCKED, why));
                    continue;
                }
            }
            if self.rules.claim_trusted(&pairs[0].0.id_type, &c.id_type) {
                pairs.push((c.clone(), key));
                trusted = true;
            } else {
                candidates.push(c.clone());
            }
        }
        if trusted {
            self.sort_strongest_first(&mut pairs);
        }
        let (ids, keys): (Vec<Identifier>, Vec<String>) = pairs.into_iter().unzip();

        if self.seen.contains(&fp) {
            let customer_id = self.customer_of(&primary).unwrap_or_default().to_string();
            return Ok(Outcome {
                customer_id,
                primary,
                duplicate: true,
                ledger: Vec::new(),
            });
        }
        self.seen.insert(fp);
        self.new_seen.push(fp);
        let cause = Cause::of(ev, fp);
        let mut ledger = Vec::new();

        let customer_id = self.resolve(ev, &cause, &ids, &keys, &primary, &mut ledger);

        for c in candidates {
            let why = format!(
                "claimed by {primary}, not linked: identity.trusted_claims has no \"{}>{}\"",
                ids[0].id_type, c.id_type
            );
            ledger.push(ledger_entry(
                &cause,
                IdentityAction::Candidate,
                &customer_id,
                Some(c),
                None,
                Some((rules::rule::CANDIDATE, why)),
            ));
        }
        for (id, rule, reason) in rejects {
            ledger.push(ledger_entry(
                &cause,
                IdentityAction::Reject,
                &customer_id,
                Some(id),
                None,
                Some((rule, reason)),
            ));
        }
        Ok(Outcome {
            customer_id,
            primary,
            duplicate: false,
            ledger,
        })
    }

    /// Sorts an event's identifiers strongest first (rank, then type and value) and
    /// drops repeats.
    fn sort_strongest_first(&self, pairs: &mut Vec<(Identifier, String)>) {
        if pairs.len() > 1 {
            pairs.sort_by(|(a, _), (b, _)| {
                self.rules
                    .rank(&a.id_type)
                    .cmp(&self.rules.rank(&b.id_type))
                    .then_with(|| a.id_type.cmp(&b.id_type))
                    .then_with(|| a.value.cmp(&b.value))
            });
            pairs.dedup_by(|a, b| a.1 == b.1);
        }
    }

    /// Births, the link, and the union or replay they call for; then counts the
    /// event. Returns the customer the event is attributed to (its primary's).
    fn resolve(
        &mut self,
        ev: &CanonicalEvent,
        cause: &Cause,
        ids: &[Identifier],
        keys: &[String],
        primary: &str,
        ledger: &mut Vec<IdentityMessage>,
    ) -> String {
        let at = ev.occurred_at;
        let born_key = (at, cause.fp);
        // 1. births: new identifiers, and known ones seen earlier than before; and
        // the profiles the known ones belong to (one lookup per identifier)
        let mut new_ids: Vec<usize> = Vec::new();
        let mut moved_earlier = false;
        let mut existing: Vec<String> = Vec::new();
        let mut primary_cid: Option<usize> = None;
        for (i, k) in keys.iter().enumerate() {
            match self.ids.get_mut(k) {
                None => new_ids.push(i),
                Some(r) => {
                    if born_key < (r.first_seen, r.first_event) {
                        r.first_seen = at;
                        r.first_event = cause.fp;
                        self.dirty_ids.insert(k.clone());
                        moved_earlier = true;
                    }
                    if !r.customer_id.is_empty() {
                        let at = match existing.iter().position(|e| *e == r.customer_id) {
                            Some(at) => at,
                            None => {
                                existing.push(r.customer_id.clone());
                                existing.len() - 1
                            }
                        };
                        if k == primary {
                            primary_cid = Some(at);
                        }
                    }
                }
            }
        }
        // 2. the link
        let mut new_link = None;
        if keys.len() >= 2 {
            let lk = link_key(keys);
            match self.links.get_mut(&lk) {
                Some(l) => {
                    if born_key < (l.at, l.event_fp) {
                        l.at = at;
                        l.event_fp = cause.fp;
                        l.event_id = ev.event_id.clone();
                        self.dirty_links.insert(lk);
                        moved_earlier = true;
                    }
                }
                None => {
                    self.links.insert(
                        lk,
                        Link {
                            ids: ids.to_vec(),
                            at,
                            event_fp: cause.fp,
                            event_id: ev.event_id.clone(),
                        },
                    );
                    self.dirty_links.insert(lk);
                    new_link = Some(lk);
                }
            }
        }
        for &i in &new_ids {
            self.ids.insert(
                keys[i].clone(),
                IdRecord {
                    customer_id: String::new(),
                    first_seen: at,
                    first_event: cause.fp,
                    links: Vec::new(),
                },
            );
            self.dirty_ids.insert(keys[i].clone());
        }
        if let Some(lk) = new_link {
            for k in keys {
                if let Some(r) = self.ids.get_mut(k) {
                    r.links.push(lk);
                }
            }
        }

        // 3. union, or replay of the cluster (`existing`: the profiles of the
        // identifiers known before this event, from step 1)
        let conflicted = existing
            .iter()
            .any(|c| self.profiles.get(c).is_some_and(|p| p.conflicted));
        let needs_replay = conflicted
            && (new_link.is_some() || moved_earlier || !new_ids.is_empty())
            || (new_link.is_some() || !new_ids.is_empty())
                && self.union_violation(&existing, ids, &new_ids, new_link.map(|_| day_of(at)));
        if needs_replay {
            self.recompute(keys, cause, Some((ev, primary)), ledger);
            let cid = self.customer_of(primary).unwrap_or_default().to_string();
            if let Some(p) = self.profiles.get_mut(&cid).map(Arc::make_mut) {
                p.last_seen = p.last_seen.max(at);
            }
            return cid;
        }
        if new_link.is_none() && new_ids.is_empty() {
            // nothing new to link (a known link that was refused keeps its
            // profiles apart): count the event on its primary's profile
            let Some(cid) = primary_cid.map(|i| existing.swap_remove(i)) else {
                return String::new();
            };
            self.count_event(&cid, ev, primary);
            return cid;
        }
        let survivor = if existing.is_empty() {
            let cid = self.create_profile(&keys[0], at);
            ledger.push(ledger_entry(
                cause,
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
            for loser in &existing[1..] {
                self.merge(cause, &survivor, loser, ledger);
            }
            survivor
        };
        for &i in &new_ids {
            if let Some(r) = self.ids.get_mut(&keys[i]) {
                r.customer_id = survivor.clone();
            }
            if let Some(p) = self.profiles.get_mut(&survivor).map(Arc::make_mut) {
                p.identifiers.insert(ids[i].clone());
            }
            if i != 0 || !existing.is_empty() {
                ledger.push(ledger_entry(
                    cause,
                    IdentityAction::Link,
                    &survivor,
                    Some(ids[i].clone()),
                    None,
                    None,
                ));
            }
        }
        if new_link.is_some() {
            if let Some(p) = self.profiles.get_mut(&survivor).map(Arc::make_mut) {
                *p.link_days.entry(day_of(at)).or_default() += 1;
            }
        }
        self.count_event(&survivor, ev, primary);
        debug_assert_eq!(self.customer_of(primary), Some(survivor.as_str()));
        survivor
    }

    /// Would merging the profiles `existing` with the new identifiers break a rule?
    fn union_violation(
        &self,
        existing: &[String],
        ids: &[Identifier],
        new_ids: &[usize],
        link_day: Option<u32>,
    ) -> bool {
        if existing.len() <= 1 && new_ids.is_empty() && link_day.is_none() {
            return false;
        }
        let profiles: Vec<&ProfileState> = existing
            .iter()
            .filter_map(|c| self.profiles.get(c).map(|p| &**p))
            .collect();
        let mut days: BTreeMap<u32, u32> = BTreeMap::new();
        for p in &profiles {
            for (d, n) in &p.link_days {
                *days.entry(*d).or_default() += n;
            }
        }
        if let Some(d) = link_day {
            *days.entry(d).or_default() += 1;
        }
        let all = profiles
            .iter()
            .flat_map(|p| p.identifiers.iter())
            .chain(new_ids.iter().map(|&i| &ids[i]));
        if self
            .rules
            .violation(all.clone(), &days, &self.walls)
            .is_some()
        {
            return true;
        }
        self.rules.has_windows()
            && self
                .rules
                .window_violation(
                    all.filter_map(|i| self.ids.get(&i.key()).map(|r| (i, r.first_seen))),
                )
                .is_some()
    }

    fn create_profile(&mut self, anchor: &str, at: DateTime<Utc>) -> String {
        let cid = self.free_customer_id(anchor, &BTreeSet::new());
        self.profiles
            .insert(cid.clone(), Arc::new(ProfileState::new(cid.clone(), at)));
        self.dirty_profiles.insert(cid.clone());
        cid
    }

    /// The first `customer_id_for(anchor, n)` that no live profile uses (a retired
    /// id may come back: a split returns a profile its old id); `taken` are ids
    /// already handed out in the same step.
    fn free_customer_id(&self, anchor: &str, taken: &BTreeSet<String>) -> String {
        let mut attempt = 0;
        loop {
            let cid = customer_id_for(anchor, attempt);
            let live = self.profiles.get(&cid).is_some_and(|p| p.is_active());
            if !live && !taken.contains(&cid) {
                return cid;
            }
            attempt += 1;
        }
    }

    fn merge(
        &mut self,
        cause: &Cause,
        survivor: &str,
        loser: &str,
        ledger: &mut Vec<IdentityMessage>,
    ) {
        let Some(mut lost) = self.profiles.remove(loser).map(Arc::unwrap_or_clone) else {
            return;
        };
        for id in &lost.identifiers {
            let key = id.key();
            if let Some(r) = self.ids.get_mut(&key) {
                r.customer_id = survivor.to_string();
                self.dirty_ids.insert(key);
            }
        }
        // primaries that stop being sole get their own contribution from now on
        if let Some(s) = self.profiles.get(survivor).cloned() {
            if lost.event_count > 0 && s.event_count > 0 && s.sole_primary != lost.sole_primary {
                self.materialize(&lost);
                self.materialize(&s);
            }
        }
        if let Some(s) = self.profiles.get_mut(survivor).map(Arc::make_mut) {
            s.absorb(&lost);
        }
        self.retire(&mut lost, survivor, cause.at);
        self.profiles.insert(loser.to_string(), Arc::new(lost));
        self.dirty_profiles.insert(survivor.to_string());
        ledger.push(ledger_entry(
            cause,
            IdentityAction::Merge,
            survivor,
            None,
            Some(loser.to_string()),
            None,
        ));
    }

    /// Marks `lost` as merged into `survivor`, with the aliases that make old
    /// customer ids resolve to it.
    fn retire(&mut self, lost: &mut ProfileState, survivor: &str, at: DateTime<Utc>) {
        self.dirty_aliases
            .push((lost.customer_id.clone(), survivor.to_string(), at));
        for older in &lost.merged_from {
            if older != survivor {
                self.dirty_aliases
                    .push((older.clone(), survivor.to_string(), at));
            }
        }
        lost.merged_into = Some(survivor.to_string());
        lost.identifiers.clear();
        self.dirty_profiles.insert(lost.customer_id.clone());
    }

    /// Detaches what changed since the last call (values cloned) and clears the
    /// dirty sets.
    pub fn take_delta(&mut self) -> crate::store::Delta {
        // the dirty sets' keys move into the delta (drained: the sets keep their
        // capacity for the next batch)
        fn detach<K: Eq + std::hash::Hash, V>(
            dirty: &mut FxHashSet<K>,
            current: impl Fn(&K) -> Option<V>,
        ) -> Vec<(K, Option<V>)> {
            dirty
                .drain()
                .map(|k| {
                    let v = current(&k);
                    (k, v)
                })
                .collect()
        }
        let delta = crate::store::Delta {
            ids: detach(&mut self.dirty_ids, |k| self.ids.get(k).cloned()),
            profiles: detach(&mut self.dirty_profiles, |k| self.profiles.get(k).cloned()),
            links: detach(&mut self.dirty_links, |k| self.links.get(k).cloned()),
            contrib: detach(&mut self.dirty_contrib, |k| self.contrib.get(k).cloned()),
            walls: detach(&mut self.dirty_walls, |k| self.walls.list.get(k).cloned()),
            seen: std::mem::take(&mut self.new_seen),
            aliases: std::mem::take(&mut self.dirty_aliases),
            moved: std::mem::take(&mut self.moved).into_iter().collect(),
            suppressed: std::mem::take(&mut self.new_suppressed),
        };
        self.clear_dirty();
        delta
    }

    /// Rebuilds every identifier's list of links from the links themselves
    /// (after loading the store).
    pub fn index_links(&mut self) {
        for r in self.ids.values_mut() {
            r.links.clear();
        }
        for (lk, l) in &self.links {
            for id in &l.ids {
                if let Some(r) = self.ids.get_mut(&id.key()) {
                    r.links.push(*lk);
                }
            }
        }
    }

    /// Counts an event on profile `cid`. While every event of a profile has the
    /// same primary identifier, the profile's aggregates are that primary's
    /// contribution and nothing else is kept; from the second primary on, each
    /// primary has its own contribution (so the profile can be re-summed).
    fn count_event(&mut self, cid: &str, ev: &CanonicalEvent, primary: &str) {
        let Some(p) = self.profiles.get_mut(cid) else {
            return;
        };
        let sole = p.event_count == 0 || p.sole_primary.as_deref() == Some(primary);
        if sole {
            Arc::make_mut(p).apply_event_of(ev, primary);
        } else {
            let before = Arc::clone(p);
            self.materialize(&before);
            // released before `make_mut` below, which would copy a shared profile
            drop(before);
            self.contribute(ev, primary);
            if let Some(p) = self.profiles.get_mut(cid).map(Arc::make_mut) {
                p.apply_event_of(ev, primary);
            }
        }
        if !self.dirty_profiles.contains(cid) {
            self.dirty_profiles.insert(cid.to_string());
        }
    }

    /// Counts an event on its primary identifier's own contribution.
    pub(crate) fn contribute(&mut self, ev: &CanonicalEvent, primary: &str) {
        match self.contrib.get_mut(primary) {
            Some(c) => Arc::make_mut(c).apply_event(ev),
            None => {
                let mut c = ProfileState::new(primary.to_string(), ev.occurred_at);
                c.apply_event(ev);
                self.contrib.insert(primary.to_string(), Arc::new(c));
            }
        }
        if !self.dirty_contrib.contains(primary) {
            self.dirty_contrib.insert(primary.to_string());
        }
    }

    /// Gives a profile's sole primary identifier its own contribution (a copy of
    /// the profile's aggregates), before the profile gains a second primary, is
    /// merged with another primary's profile, or is re-resolved.
    pub(crate) fn materialize(&mut self, p: &ProfileState) {
        let Some(k) = &p.sole_primary else { return };
        if p.event_count == 0 || self.contrib.contains_key(k) {
            return;
        }
        let mut c = ProfileState::new(k.clone(), p.first_seen);
        c.reset_aggregates(p.first_seen);
        c.add_aggregates(p);
        self.contrib.insert(k.clone(), Arc::new(c));
        self.dirty_contrib.insert(k.clone());
    }

    /// Forgets what the last batch changed (after it was persisted).
    pub fn clear_dirty(&mut self) {
        self.dirty_ids.clear();
        self.dirty_profiles.clear();
        self.dirty_links.clear();
        self.dirty_contrib.clear();
        self.dirty_walls.clear();
        self.new_seen.clear();
        self.dirty_aliases.clear();
        self.moved.clear();
        self.new_suppressed.clear();
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
        let Some(p) = self.profiles.get_mut(&cid).map(Arc::make_mut) else {
            return false;
        };
        if p.merged_into.is_some() {
            return false;
        }
        // a profile that absorbed others keeps the scores computed for itself
        if cid != customer_id && p.scores.as_ref().is_some_and(|s| s.run_id >= scores.run_id) {
            return false;
        }
        // an incremental update since this run is newer than the run (a restart
        // hands the run over again)
        if p.scores
            .as_ref()
            .is_some_and(|s| s.run_id == scores.run_id && s.incremental_at.is_some())
        {
            return true;
        }
        if p.scores.as_deref() != Some(&scores) {
            p.scores = Some(Box::new(scores));
            self.dirty_profiles.insert(cid);
        }
        true
    }

    /// Rescores the live profiles of `customers` (following merges) against the
    /// last run's distributions at unix second `now`; marks the changed ones for
    /// writing. Returns how many were rescored.
    pub fn rescore<'a>(
        &mut self,
        customers: impl IntoIterator<Item = &'a str>,
        model: &crate::scoring::incremental::IncrementalModel,
        now: i64,
    ) -> usize {
        let mut done: FxHashSet<String> = FxHashSet::default();
        for c in customers {
            let mut cid = c;
            for _ in 0..16 {
                match self
                    .profiles
                    .get(cid)
                    .and_then(|p| p.merged_into.as_deref())
                {
                    Some(next) => cid = next,
                    None => break,
                }
            }
            if done.contains(cid) {
                continue;
            }
            let cid = cid.to_string();
            let Some(p) = self.profiles.get_mut(&cid) else {
                continue;
            };
            if p.merged_into.is_some() || p.event_count == 0 {
                continue;
            }
            if let Some(new) = model.rescore(p, p.scores.as_deref(), now) {
                if p.scores.as_deref() != Some(&new) {
                    Arc::make_mut(p).scores = Some(Box::new(new));
                    self.dirty_profiles.insert(cid.clone());
                }
            }
            done.insert(cid);
        }
        done.len()
    }

    /// The live profile an identifier belongs to.
    pub fn profile_of(&self, key: &str) -> Option<&ProfileState> {
        self.customer_of(key)
            .and_then(|c| self.profiles.get(c))
            .map(|p| &**p)
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
