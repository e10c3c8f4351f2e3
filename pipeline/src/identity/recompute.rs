//! Re-resolution of one cluster (the identifiers connected by any recorded link,
//! accepted or not) from its births and links in event-time order, and the unlink
//! and split commands that add walls before re-resolving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use socialcrm_schemas::messages::{
    CommandAction, IdentityAction, IdentityCommand, IdentityMessage,
};
use socialcrm_schemas::{CanonicalEvent, Identifier};

use super::rules::{rule, Rules, Violation};
use super::{day_of, ledger_entry, Cause, Graph, Link, Wall, Walls};
use crate::profile::ProfileState;

/// One profile of a replay.
#[derive(Debug, Default, Clone)]
pub struct Part {
    /// In birth order (the first is the oldest).
    pub ids: Vec<Identifier>,
    pub link_days: BTreeMap<u32, u32>,
    pub flags: BTreeSet<String>,
    /// Merged into another part.
    pub gone: bool,
}

/// A link refused (partly) during a replay.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub link: u64,
    pub dropped: Identifier,
    pub kept_primary: Identifier,
    pub violation: Violation,
}

/// Result of replaying one cluster.
#[derive(Debug, Default)]
pub struct Replay {
    pub parts: Vec<Part>,
    pub refusals: Vec<Refusal>,
}

/// The greedy pass: births and links sorted by (time, event fingerprint), births
/// before links at the same instant; a link that would break a rule drops its
/// weakest identifier until it passes (or only one is left).
pub fn replay(
    rules: &Rules,
    walls: &Walls,
    births: &[(DateTime<Utc>, u64, Identifier)],
    links: &[(u64, &Link)],
) -> Replay {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Item {
        Birth(usize),
        Link(usize),
    }
    /// (event time, event fingerprint, births before links), the item, a tie-breaker.
    type Sorted = ((DateTime<Utc>, u64, u8), Item, String);
    let mut items: Vec<Sorted> = Vec::new();
    for (i, (at, fp, id)) in births.iter().enumerate() {
        // births of one event: strongest first, so the oldest part of a new
        // profile is its strongest identifier (its customer id derives from it)
        let tie = format!("{:04}{}", rules.rank(&id.id_type).min(9999), id.key());
        items.push(((*at, *fp, 0), Item::Birth(i), tie));
    }
    for (i, (k, l)) in links.iter().enumerate() {
        items.push(((l.at, l.event_fp, 1), Item::Link(i), format!("{k:016x}")));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));

    let born: HashMap<String, DateTime<Utc>> =
        births.iter().map(|(t, _, id)| (id.key(), *t)).collect();
    let mut out = Replay::default();
    let mut part_of: HashMap<String, usize> = HashMap::new();
    for (_, item, _) in items {
        match item {
            Item::Birth(i) => {
                let id = births[i].2.clone();
                part_of.insert(id.key(), out.parts.len());
                out.parts.push(Part {
                    ids: vec![id],
                    ..Part::default()
                });
            }
            Item::Link(i) => {
                let (lk, link) = links[i];
                let day = day_of(link.at);
                let mut kept: Vec<&Identifier> = link
                    .ids
                    .iter()
                    .filter(|id| part_of.contains_key(&id.key()))
                    .collect();
                while kept.len() >= 2 {
                    let mut ps: Vec<usize> = kept.iter().map(|id| part_of[&id.key()]).collect();
                    ps.sort_unstable();
                    ps.dedup();
                    let mut days: BTreeMap<u32, u32> = BTreeMap::new();
                    for p in &ps {
                        for (d, n) in &out.parts[*p].link_days {
                            *days.entry(*d).or_default() += n;
                        }
                    }
                    *days.entry(day).or_default() += 1;
                    let members = || ps.iter().flat_map(|p| out.parts[*p].ids.iter());
                    let v = rules.violation(members(), &days, walls).or_else(|| {
                        if !rules.has_windows() {
                            return None;
                        }
                        rules.window_violation(
                            members().filter_map(|i| born.get(&i.key()).map(|t| (i, *t))),
                        )
                    });
                    match v {
                        None => {
                            let into = ps[0];
                            for p in &ps[1..] {
                                let moved = std::mem::take(&mut out.parts[*p]);
                                for id in &moved.ids {
                                    part_of.insert(id.key(), into);
                                }
                                let t = &mut out.parts[into];
                                t.ids.extend(moved.ids);
                                for (d, n) in moved.link_days {
                                    *t.link_days.entry(d).or_default() += n;
                                }
                                t.flags.extend(moved.flags);
                                out.parts[*p].gone = true;
                            }
                            out.parts[into].link_days = days;
                            break;
                        }
                        Some(v) => {
                            // an unlink's wall: drop the weakest identifier whose
                            // removal ends the separation conflict; the weakest of
                            // all may have nothing to do with it (a device cookie
                            // seen with a login and an unlinked shared address)
                            let mut at = kept.len() - 1;
                            if v.0 == rule::UNLINKED && kept.len() > 2 {
                                if let Some(i) = (1..kept.len()).rev().find(|&i| {
                                    let mut rest: Vec<usize> = kept
                                        .iter()
                                        .enumerate()
                                        .filter(|(j, _)| *j != i)
                                        .map(|(_, id)| part_of[&id.key()])
                                        .collect();
                                    rest.sort_unstable();
                                    rest.dedup();
                                    let ids = rest.iter().flat_map(|p| out.parts[*p].ids.iter());
                                    rules
                                        .violation(ids, &days, walls)
                                        .is_none_or(|w| w.0 != rule::UNLINKED)
                                }) {
                                    at = i;
                                }
                            }
                            let dropped = Some(kept.remove(at)).cloned();
                            if let Some(dropped) = dropped {
                                if v.0 == rule::SIZE || v.0 == rule::LINK_RATE {
                                    let p = part_of[&kept[0].key()];
                                    out.parts[p].flags.insert(v.0.to_string());
                                }
                                out.refusals.push(Refusal {
                                    link: lk,
                                    dropped,
                                    kept_primary: kept[0].clone(),
                                    violation: v,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

impl Graph {
    /// Every identifier and link connected to `seeds` through recorded links.
    pub fn cluster(&self, seeds: &[String]) -> (BTreeSet<String>, BTreeSet<u64>) {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        let mut links: BTreeSet<u64> = BTreeSet::new();
        let mut stack: Vec<String> = seeds.to_vec();
        while let Some(k) = stack.pop() {
            if !ids.insert(k.clone()) {
                continue;
            }
            let Some(r) = self.ids.get(&k) else { continue };
            for l in &r.links {
                if links.insert(*l) {
                    if let Some(link) = self.links.get(l) {
                        stack.extend(link.ids.iter().map(Identifier::key));
                    }
                }
            }
        }
        (ids, links)
    }

    /// Re-resolves the cluster of `seeds` and applies the difference: identifiers
    /// that change profile, profiles that appear or retire, re-summed aggregates,
    /// and ledger entries for all of it (refusals only for the links of `cause`).
    pub(crate) fn recompute(
        &mut self,
        seeds: &[String],
        cause: &Cause,
        event: Option<(&CanonicalEvent, &str)>,
        ledger: &mut Vec<IdentityMessage>,
    ) {
        let (cluster_ids, cluster_links) = self.cluster(seeds);
        // every primary of the cluster needs its own contribution to be re-summed
        let cids: BTreeSet<String> = cluster_ids
            .iter()
            .filter_map(|k| self.customer_of(k).map(str::to_string))
            .collect();
        for c in &cids {
            if let Some(p) = self.profiles.get(c).cloned() {
                self.materialize(&p);
            }
        }
        if let Some((ev, primary)) = event {
            self.contribute(ev, primary);
        }
        let mut births = Vec::with_capacity(cluster_ids.len());
        for k in &cluster_ids {
            let (Some(r), Ok(id)) = (self.ids.get(k), Identifier::parse_key(k)) else {
                continue;
            };
            births.push((r.first_seen, r.first_event, id));
        }
        let links: Vec<(u64, &Link)> = cluster_links
            .iter()
            .filter_map(|k| self.links.get(k).map(|l| (*k, l)))
            .collect();
        let result = replay(&self.rules, &self.walls, &births, &links);
        let refusals: Vec<Refusal> = result
            .refusals
            .iter()
            .filter(|r| {
                links
                    .iter()
                    .any(|(k, l)| *k == r.link && l.event_fp == cause.fp)
            })
            .cloned()
            .collect();
        let conflicted = !result.refusals.is_empty();
        let parts: Vec<Part> = result.parts.into_iter().filter(|p| !p.gone).collect();
        drop(links);

        // customer ids: a part keeps the id its oldest identifier had, unless an
        // older part took it; otherwise the id derived from its oldest identifier
        let old_of: BTreeMap<String, String> = cluster_ids
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    self.customer_of(k).unwrap_or_default().to_string(),
                )
            })
            .collect();
        let old_cids: BTreeSet<String> =
            old_of.values().filter(|c| !c.is_empty()).cloned().collect();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut assigned: Vec<String> = Vec::with_capacity(parts.len());
        for part in &parts {
            let keep = part
                .ids
                .iter()
                .filter_map(|id| old_of.get(&id.key()))
                .find(|c| !c.is_empty() && !taken.contains(*c))
                .cloned();
            let cid = keep.unwrap_or_else(|| {
                let anchor = part.ids[0].key();
                let mut attempt = 0;
                loop {
                    let cid = super::customer_id_for(&anchor, attempt);
                    let live_elsewhere = !old_cids.contains(&cid)
                        && self.profiles.get(&cid).is_some_and(|p| p.is_active());
                    if !live_elsewhere && !taken.contains(&cid) {
                        break cid;
                    }
                    attempt += 1;
                }
            });
            taken.insert(cid.clone());
            assigned.push(cid);
        }

        // apply: identifiers, profiles, ledger
        for (part, cid) in parts.iter().zip(&assigned) {
            for id in &part.ids {
                let key = id.key();
                let old = old_of.get(&key).cloned().unwrap_or_default();
                if old == *cid {
                    continue;
                }
                if let Some(r) = self.ids.get_mut(&key) {
                    r.customer_id = cid.clone();
                    self.dirty_ids.insert(key.clone());
                }
                // events already stored under another customer follow their primary
                if !old.is_empty() && self.contrib.contains_key(&key) {
                    self.moved.insert(key.clone(), cid.clone());
                }
                let entry = if old.is_empty() {
                    let creates = part.ids.len() == 1 || !old_cids.contains(cid);
                    let action = if creates && part.ids[0] == *id {
                        IdentityAction::Create
                    } else {
                        IdentityAction::Link
                    };
                    ledger_entry(cause, action, cid, Some(id.clone()), None, None)
                } else {
                    ledger_entry(
                        cause,
                        IdentityAction::Split,
                        cid,
                        Some(id.clone()),
                        Some(old),
                        None,
                    )
                };
                ledger.push(entry);
            }
            let first_seen = part
                .ids
                .iter()
                .filter_map(|id| self.ids.get(&id.key()).map(|r| r.first_seen))
                .min()
                .unwrap_or(cause.at);
            let mut p = self
                .profiles
                .remove(cid)
                .map(Arc::unwrap_or_clone)
                .unwrap_or_else(|| ProfileState::new(cid.clone(), first_seen));
            if p.merged_into.take().is_some() {
                // a retired id comes back: old events under it resolve to it again
                self.dirty_aliases
                    .push((cid.clone(), cid.clone(), cause.at));
            }
            p.identifiers = part.ids.iter().cloned().collect();
            p.link_days = part.link_days.iter().map(|(d, n)| (*d, *n)).collect();
            p.flags = part.flags.iter().cloned().collect();
            p.conflicted = conflicted;
            p.reset_aggregates(first_seen);
            let mut primaries: Vec<String> = Vec::new();
            for id in &part.ids {
                let key = id.key();
                if let Some(c) = self.contrib.get(&key) {
                    p.add_aggregates(c);
                    if c.event_count > 0 {
                        primaries.push(key);
                    }
                }
            }
            p.sole_primary = (primaries.len() == 1).then(|| primaries[0].clone());
            if let Some(k) = &p.sole_primary {
                // a sole primary's contribution is the profile's aggregates again
                self.contrib.remove(k);
            }
            self.dirty_contrib.extend(primaries);
            self.profiles.insert(cid.clone(), Arc::new(p));
            self.dirty_profiles.insert(cid.clone());
        }
        for old in old_cids.difference(&taken) {
            // the part that holds most of its identifiers absorbs the retired id
            let mut best: BTreeMap<&String, usize> = BTreeMap::new();
            for (k, c) in &old_of {
                if c == old {
                    if let Some(i) = parts
                        .iter()
                        .position(|p| p.ids.iter().any(|id| id.key() == *k))
                    {
                        *best.entry(&assigned[i]).or_default() += 1;
                    }
                }
            }
            let Some(survivor) = best
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(c, _)| (*c).clone())
            else {
                continue;
            };
            if let Some(mut lost) = self.profiles.remove(old).map(Arc::unwrap_or_clone) {
                if let Some(s) = self.profiles.get_mut(&survivor).map(Arc::make_mut) {
                    s.merged_from.insert(old.clone());
                    s.merged_from.extend(lost.merged_from.iter().cloned());
                    s.merged_from.remove(&survivor);
                }
                self.retire(&mut lost, &survivor, cause.at);
                self.profiles.insert(old.clone(), Arc::new(lost));
            }
            ledger.push(ledger_entry(
                cause,
                IdentityAction::Merge,
                &survivor,
                None,
                Some(old.clone()),
                None,
            ));
        }
        for r in refusals {
            let cid = self
                .customer_of(&r.kept_primary.key())
                .unwrap_or_default()
                .to_string();
            ledger.push(ledger_entry(
                cause,
                IdentityAction::Reject,
                &cid,
                Some(r.dropped),
                None,
                Some((r.violation.0, r.violation.1)),
            ));
        }
    }

    /// Applies an operator's unlink or split: a wall between the two sides, then a
    /// replay of the cluster. Holds for identifiers not seen yet, too (a writer
    /// rebuilt from scratch meets the command before the events).
    pub fn apply_command(&mut self, cmd: &IdentityCommand) -> Result<Vec<IdentityMessage>, String> {
        let leave: Vec<String> = cmd.identifiers.iter().map(Identifier::key).collect();
        let stay: Vec<String> = cmd.others.iter().map(Identifier::key).collect();
        if leave.is_empty() || stay.is_empty() {
            return Err("a command needs identifiers on both sides (identifiers, others)".into());
        }
        if let Some(k) = leave.iter().find(|k| stay.contains(k)) {
            return Err(format!("{k} is on both sides"));
        }
        let what = match cmd.action {
            CommandAction::Unlink => format!("unlink {}", leave.join(", ")),
            CommandAction::Split => {
                format!("split {} ({} identifiers)", cmd.customer_id, leave.len())
            }
        };
        let note = if cmd.note.is_empty() {
            String::new()
        } else {
            format!(": {}", cmd.note)
        };
        let why = format!("{what}, command {}{note}", cmd.command_id);
        Ok(self.wall([leave, stay], why, cmd))
    }

    /// [`Graph::apply_command`] for one identifier against the rest of its profile.
    pub fn unlink(
        &mut self,
        key: &str,
        command_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<IdentityMessage>, String> {
        let cid = self
            .customer_of(key)
            .ok_or_else(|| format!("{key} is not a known identifier"))?
            .to_string();
        self.command_for(
            CommandAction::Unlink,
            &cid,
            &[key.to_string()],
            command_id,
            at,
        )
    }

    /// [`Graph::apply_command`] for `keys` against the rest of profile `customer_id`.
    pub fn split(
        &mut self,
        customer_id: &str,
        keys: &[String],
        command_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<IdentityMessage>, String> {
        self.command_for(CommandAction::Split, customer_id, keys, command_id, at)
    }

    fn command_for(
        &mut self,
        action: CommandAction,
        customer_id: &str,
        keys: &[String],
        command_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<IdentityMessage>, String> {
        let p = self
            .profiles
            .get(customer_id)
            .filter(|p| p.is_active())
            .ok_or_else(|| format!("{customer_id} is not a live profile"))?;
        let all: BTreeSet<String> = p.identifiers.iter().map(Identifier::key).collect();
        if let Some(k) = keys.iter().find(|k| !all.contains(*k)) {
            return Err(format!("{k} is not an identifier of {customer_id}"));
        }
        let parse = |k: &String| Identifier::parse_key(k).map_err(|e| format!("{k}: {e}"));
        let cmd = IdentityCommand {
            schema_version: socialcrm_schemas::SCHEMA_VERSION,
            command_id: command_id.to_string(),
            action,
            customer_id: customer_id.to_string(),
            identifiers: keys.iter().map(parse).collect::<Result<_, _>>()?,
            others: all
                .iter()
                .filter(|k| !keys.contains(k))
                .map(parse)
                .collect::<Result<_, _>>()?,
            note: String::new(),
            requested_at: at,
        };
        self.apply_command(&cmd)
    }

    fn wall(
        &mut self,
        sides: [Vec<String>; 2],
        why: String,
        cmd: &IdentityCommand,
    ) -> Vec<IdentityMessage> {
        let id = super::link_key(&[format!("wall:{}", cmd.command_id)]);
        if self.walls.list.contains_key(&id) {
            // applied already: a command rewritten on the topic after an erasure
            // (docs/privacy.md) changes nothing here
            return Vec::new();
        }
        let cause = Cause {
            event_id: format!("command:{}", cmd.command_id),
            fp: id,
            at: cmd.requested_at,
        };
        let seeds: Vec<String> = sides[0].clone();
        self.walls.add(Wall {
            id,
            sides,
            why: why.clone(),
            at: cmd.requested_at,
        });
        self.dirty_walls.insert(id);
        let mut ledger = Vec::new();
        self.recompute(&seeds, &cause, None, &mut ledger);
        if cmd.action == CommandAction::Unlink {
            for k in &seeds {
                let (Ok(i), Some(cid)) = (Identifier::parse_key(k), self.customer_of(k)) else {
                    continue;
                };
                let cid = cid.to_string();
                ledger.push(ledger_entry(
                    &cause,
                    IdentityAction::Unlink,
                    &cid,
                    Some(i),
                    Some(cmd.customer_id.clone()).filter(|c| *c != cid),
                    Some((rule::UNLINKED, why.clone())),
                ));
            }
        }
        ledger
    }
}
