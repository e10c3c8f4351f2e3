//! Erasure of a person from the graph (docs/privacy.md): the live profile, the
//! retired ids merged into it, its identifiers, their contributions, their places
//! in recorded links and walls. What other people's profiles were built from stays
//! intact: a link that also joined other identifiers keeps them.

use std::collections::BTreeSet;

use socialcrm_schemas::messages::{IdentityAction, IdentityMessage};
use socialcrm_schemas::Identifier;

use super::{ledger_entry, link_key, Cause, Graph, Link, Wall, Walls};

/// What one erasure removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Erased {
    /// The live customer id first, then the retired ids merged into it.
    pub customer_ids: Vec<String>,
    /// Stored identifier keys (`type:value`) that left the graph.
    pub keys: BTreeSet<String>,
}

impl Graph {
    /// The live profile `customer_id` resolves to (following merges), if any.
    pub fn live_customer(&self, customer_id: &str) -> Option<String> {
        let mut cid = customer_id.to_string();
        for _ in 0..64 {
            let p = self.profiles.get(&cid)?;
            match &p.merged_into {
                Some(next) => cid = next.clone(),
                None => return Some(cid),
            }
        }
        None
    }

    /// Removes the live profile `customer_id` and everything the graph holds about
    /// it; `None` when no live profile has that id. The changes are marked dirty, so
    /// the batch's store commit deletes them; the caller writes no rows for them.
    pub fn erase_profile(
        &mut self,
        customer_id: &str,
        cause: &Cause,
    ) -> Option<(Erased, Vec<IdentityMessage>)> {
        let p = self
            .profiles
            .get(customer_id)
            .filter(|p| p.is_active())?
            .clone();
        let mut erased = Erased {
            customer_ids: vec![customer_id.to_string()],
            keys: p.identifiers.iter().map(Identifier::key).collect(),
        };
        // retired ids that still point here (one that came back as a live
        // profile of its own, after a split, is someone else's now)
        for r in &p.merged_from {
            if self.profiles.get(r).is_some_and(|rp| !rp.is_active()) {
                erased.customer_ids.push(r.clone());
            }
        }
        for c in &erased.customer_ids {
            self.profiles.remove(c);
            self.dirty_profiles.insert(c.clone());
        }
        let mut links: BTreeSet<u64> = BTreeSet::new();
        for k in &erased.keys {
            if let Some(r) = self.ids.remove(k) {
                links.extend(r.links);
            }
            self.dirty_ids.insert(k.clone());
            if self.contrib.remove(k).is_some() {
                self.dirty_contrib.insert(k.clone());
            }
            self.moved.remove(k);
        }
        for lk in links {
            self.strip_link(lk, &erased.keys);
        }
        self.strip_walls(&erased.keys);
        let cids: BTreeSet<&String> = erased.customer_ids.iter().collect();
        self.dirty_aliases
            .retain(|(r, s, _)| !cids.contains(r) && !cids.contains(s));
        let ledger = erased
            .customer_ids
            .iter()
            .map(|c| {
                let why = if c == customer_id {
                    format!("erased ({} identifiers)", erased.keys.len())
                } else {
                    format!("erased with {customer_id}, into which it was merged")
                };
                ledger_entry(
                    cause,
                    IdentityAction::Erase,
                    c,
                    None,
                    None,
                    Some(("erasure", why)),
                )
            })
            .collect();
        Some((erased, ledger))
    }

    /// Takes the erased identifiers out of a recorded link: the rest of the link
    /// stays (re-keyed) when it still joins two identifiers, so that what it linked
    /// among other people replays the same.
    fn strip_link(&mut self, lk: u64, gone: &BTreeSet<String>) {
        let Some(link) = self.links.remove(&lk) else {
            return;
        };
        self.dirty_links.insert(lk);
        let ids: Vec<Identifier> = link
            .ids
            .iter()
            .filter(|i| !gone.contains(&i.key()))
            .cloned()
            .collect();
        let keys: Vec<String> = ids.iter().map(Identifier::key).collect();
        for k in &keys {
            if let Some(r) = self.ids.get_mut(k) {
                r.links.retain(|l| *l != lk);
            }
        }
        if ids.len() < 2 {
            return;
        }
        let nk = link_key(&keys);
        let earlier = self
            .links
            .get(&nk)
            .is_some_and(|l| (l.at, l.event_fp) <= (link.at, link.event_fp));
        if !earlier {
            let known = self.links.contains_key(&nk);
            self.links.insert(
                nk,
                Link {
                    ids,
                    at: link.at,
                    event_fp: link.event_fp,
                    event_id: link.event_id,
                },
            );
            if !known {
                for k in &keys {
                    if let Some(r) = self.ids.get_mut(k) {
                        r.links.push(nk);
                    }
                }
            }
        }
        self.dirty_links.insert(nk);
    }

    /// Removes the erased identifiers from walls (and their values from the walls'
    /// descriptions); a wall left without one of its sides is removed.
    fn strip_walls(&mut self, gone: &BTreeSet<String>) {
        let touched: BTreeSet<u64> = gone
            .iter()
            .filter_map(|k| self.walls.by_id.get(k))
            .flatten()
            .map(|(id, _)| *id)
            .collect();
        for id in touched {
            let Some(mut w) = self.walls.remove(id) else {
                continue;
            };
            for side in w.sides.iter_mut() {
                side.retain(|k| !gone.contains(k));
            }
            for k in gone {
                w.why = w.why.replace(k.as_str(), "[erased]");
            }
            self.dirty_walls.insert(id);
            if w.sides.iter().all(|s| !s.is_empty()) {
                self.walls.add(w);
            }
        }
    }
}

impl Walls {
    /// Takes a wall out (and out of the index).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Wall> {
        let w = self.list.remove(&id)?;
        for k in w.sides.iter().flatten() {
            if let Some(v) = self.by_id.get_mut(k) {
                v.retain(|(wid, _)| *wid != id);
                if v.is_empty() {
                    self.by_id.remove(k);
                }
            }
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use socialcrm_schemas::{CanonicalEvent, IdType};

    fn ev(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
        crate::testing::event(id, at, ids)
    }

    fn cause() -> Cause {
        Cause {
            event_id: "command:erase-1".into(),
            fp: 1,
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_erased_person_leaves_no_trace_and_others_keep_their_links() {
        let mut g = Graph::new(&IdentityConfig::default());
        // Ann: a cookie, then her login with her email, then login and cookie
        // together (a merge); Bob: his login on the family pc
        g.process(
            &ev(
                "1",
                "2026-01-01T00:00:00Z",
                &[(IdType::AnonymousId, "ann-laptop")],
            ),
            &[],
        )
        .expect("ok");
        g.process(
            &ev(
                "2",
                "2026-01-02T00:00:00Z",
                &[(IdType::UserId, "ann"), (IdType::Email, "ann@x.io")],
            ),
            &[],
        )
        .expect("ok");
        g.process(
            &ev(
                "3",
                "2026-01-03T00:00:00Z",
                &[(IdType::UserId, "ann"), (IdType::AnonymousId, "ann-laptop")],
            ),
            &[],
        )
        .expect("ok");
        g.process(
            &ev(
                "4",
                "2026-01-04T00:00:00Z",
                &[(IdType::UserId, "bob"), (IdType::AnonymousId, "family-pc")],
            ),
            &[],
        )
        .expect("ok");
        // the family pc also saw Ann's login: refused (one user_id per profile), and
        // recorded as a link of {ann, family-pc}
        g.process(
            &ev(
                "5",
                "2026-01-05T00:00:00Z",
                &[(IdType::UserId, "ann"), (IdType::AnonymousId, "family-pc")],
            ),
            &[],
        )
        .expect("ok");
        g.unlink("email:ann@x.io", "cmd-1", chrono::Utc::now())
            .expect("unlink");
        let _ = g.take_delta();
        let ann = g.customer_of("user_id:ann").expect("ann").to_string();
        let bob = g.customer_of("user_id:bob").expect("bob").to_string();
        assert_ne!(ann, bob);
        let merged = g.profiles[&ann].merged_from.clone();
        assert!(!merged.is_empty(), "Ann's profiles were merged");

        let (erased, ledger) = g.erase_profile(&ann, &cause()).expect("erased");
        assert_eq!(erased.customer_ids[0], ann);
        assert!(
            erased.keys.contains("user_id:ann") && erased.keys.contains("anonymous_id:ann-laptop")
        );
        assert_eq!(ledger.len(), erased.customer_ids.len());
        assert!(ledger
            .iter()
            .all(|e| e.action == IdentityAction::Erase && e.identifier.is_none()));
        // nothing in the graph names Ann's identifiers or ids any more
        for k in &erased.keys {
            assert!(!g.ids.contains_key(k), "{k}");
            assert!(!g.contrib.contains_key(k), "{k}");
            assert!(!g.walls.by_id.contains_key(k), "{k}");
            for l in g.links.values() {
                assert!(l.ids.iter().all(|i| i.key() != *k), "{k} in {l:?}");
            }
            for w in g.walls.list.values() {
                assert!(!w.why.contains(k.as_str()) && !w.sides.iter().flatten().any(|s| s == k));
            }
        }
        for c in &erased.customer_ids {
            assert!(!g.profiles.contains_key(c), "{c}");
        }
        // Bob is untouched, and a replay of his cluster gives him the same profile
        let bob_ids: Vec<String> = g.profiles[&bob]
            .identifiers
            .iter()
            .map(Identifier::key)
            .collect();
        assert_eq!(bob_ids, vec!["anonymous_id:family-pc", "user_id:bob"]);
        let d = g.take_delta();
        assert!(d
            .profiles
            .iter()
            .filter(|(c, _)| erased.customer_ids.contains(c))
            .all(|(_, p)| p.is_none()));
        assert!(d
            .ids
            .iter()
            .all(|(k, rec)| !erased.keys.contains(k) || rec.is_none()));
        g.process(
            &ev(
                "6",
                "2026-01-06T00:00:00Z",
                &[(IdType::UserId, "bob"), (IdType::AnonymousId, "family-pc")],
            ),
            &[],
        )
        .expect("ok");
        assert_eq!(g.customer_of("anonymous_id:family-pc"), Some(bob.as_str()));
        assert_eq!(g.erase_profile(&ann, &cause()), None, "already gone");
    }
}
