//! Unit and property tests of identity resolution.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use proptest::prelude::*;
use socialcrm_schemas::messages::IdentityAction;
use socialcrm_schemas::{CanonicalEvent, IdType, Identifier};

use super::*;
use crate::config::IdentityConfig;

fn ev(id: &str, at: &str, ids: &[(IdType, &str)]) -> CanonicalEvent {
    crate::testing::event(id, at, ids)
}

/// Processes a web event of `ids` at `at`, which must be attributable.
fn feed(g: &mut Graph, id: &str, at: &str, ids: &[(IdType, &str)]) -> Outcome {
    g.process(&ev(id, at, ids), &[]).expect("attributable")
}

#[test]
fn scores_follow_merges_and_only_changes_are_written() {
    let mut g = Graph::new(&IdentityConfig::default());
    let old = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "a1")],
    )
    .customer_id;
    let young = feed(
        &mut g,
        "2",
        "2026-01-05T00:00:00Z",
        &[(IdType::Email, "x@y.co")],
    )
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
        incremental_at: None,
    };
    assert!(g.apply_scores(&young, s("r1", 50.0)));
    assert_eq!(g.take_delta().profiles.len(), 1);
    // the same scores again: nothing to write
    assert!(g.apply_scores(&young, s("r1", 50.0)));
    assert!(g.take_delta().profiles.is_empty());
    assert!(!g.apply_scores("c_unknown", s("r1", 1.0)));
    // merge young into old (oldest survives); scores of the retired id reach the survivor
    feed(
        &mut g,
        "3",
        "2026-01-06T00:00:00Z",
        &[(IdType::AnonymousId, "a1"), (IdType::Email, "x@y.co")],
    );
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
    let a = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "anon-1")],
    );
    let b = feed(
        &mut g,
        "2",
        "2026-01-02T00:00:00Z",
        &[(IdType::AnonymousId, "anon-2")],
    );
    assert_ne!(a.customer_id, b.customer_id);
    let c = feed(
        &mut g,
        "3",
        "2026-01-03T00:00:00Z",
        &[
            (IdType::AnonymousId, "anon-1"),
            (IdType::UserId, "u1"),
            (IdType::Email, "a@b.co"),
        ],
    );
    assert_eq!(c.customer_id, a.customer_id);
    let d = feed(
        &mut g,
        "4",
        "2026-01-04T00:00:00Z",
        &[(IdType::AnonymousId, "anon-2"), (IdType::Email, "a@b.co")],
    );
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
    let again = feed(
        &mut g,
        "4",
        "2026-01-04T00:00:00Z",
        &[(IdType::Email, "a@b.co")],
    );
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
    let a = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::Email, "info@shop.com"), (IdType::UserId, "a")],
    );
    let b = feed(
        &mut g,
        "2",
        "2026-01-01T00:00:00Z",
        &[(IdType::Email, "info@shop.com"), (IdType::UserId, "b")],
    );
    assert_ne!(a.customer_id, b.customer_id);
    assert!(a
        .ledger
        .iter()
        .any(|l| l.action == IdentityAction::Reject && l.rule.as_deref() == Some("blocked_value")));
}

#[test]
fn size_cap_rejects_links() {
    let cfg = IdentityConfig {
        max_identifiers_per_profile: 2,
        ..IdentityConfig::default()
    };
    let mut g = Graph::new(&cfg);
    let o = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[
            (IdType::AnonymousId, "x"),
            (IdType::AnonymousId, "y"),
            (IdType::AnonymousId, "z"),
        ],
    );
    assert_eq!(g.profiles[&o.customer_id].identifiers.len(), 2);
    assert!(o
        .ledger
        .iter()
        .any(|l| l.rule.as_deref() == Some("profile_size_cap")));
}

fn key(t: IdType, v: &str) -> String {
    Identifier::new(t, v).key()
}

#[test]
fn a_shared_anonymous_id_does_not_merge_two_users() {
    // a family computer: two people log in on the same browser
    let mut g = Graph::new(&IdentityConfig::default());
    let a = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "family-pc"), (IdType::UserId, "ann")],
    );
    let b = feed(
        &mut g,
        "2",
        "2026-01-02T00:00:00Z",
        &[(IdType::AnonymousId, "family-pc"), (IdType::UserId, "bob")],
    );
    assert_ne!(a.customer_id, b.customer_id);
    assert_eq!(
        b.customer_id,
        g.customer_of(&key(IdType::UserId, "bob")).expect("bob")
    );
    let rejected = b
        .ledger
        .iter()
        .find(|l| l.action == IdentityAction::Reject)
        .expect("the refused link is recorded");
    assert_eq!(rejected.rule.as_deref(), Some(rules::rule::LIMIT));
    assert_eq!(
        rejected.identifier.as_ref().map(Identifier::key),
        Some(key(IdType::AnonymousId, "family-pc"))
    );
    // the cookie stays with the first user; bob's events stay with bob
    assert_eq!(
        g.customer_of(&key(IdType::AnonymousId, "family-pc")),
        Some(a.customer_id.as_str())
    );
    assert_eq!(g.profiles[&b.customer_id].event_count, 1);
    assert_eq!(g.profiles[&a.customer_id].event_count, 1);
}

#[test]
fn an_earlier_event_arriving_late_gives_the_same_profiles() {
    let e1 = ev(
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "pc"), (IdType::UserId, "ann")],
    );
    let e2 = ev(
        "2",
        "2026-01-02T00:00:00Z",
        &[(IdType::AnonymousId, "pc"), (IdType::UserId, "bob")],
    );
    let page = ev("3", "2026-01-03T00:00:00Z", &[(IdType::AnonymousId, "pc")]);
    let run = |order: &[&CanonicalEvent]| {
        let mut g = Graph::new(&IdentityConfig::default());
        for e in order {
            g.process(e, &[]).expect("ok");
        }
        let p = g
            .profile_of(&key(IdType::AnonymousId, "pc"))
            .expect("pc")
            .clone();
        (g.partition(), p.event_count, p.identifiers.len())
    };
    let in_order = run(&[&e1, &e2, &page]);
    // bob's link arrives first; ann's earlier one must take the cookie back
    let late = run(&[&page, &e2, &e1]);
    assert_eq!(in_order, late);
    // ann: her identify and the anonymous page view
    assert_eq!(in_order.1, 2);
}

#[test]
fn a_junk_email_shared_by_thousands_builds_no_giant_profile() {
    let mut g = Graph::new(&IdentityConfig::default());
    for i in 0..2000 {
        feed(
            &mut g,
            &format!("e{i}"),
            "2026-01-01T00:00:00Z",
            &[
                (IdType::UserId, &format!("u{i}")),
                (IdType::Email, "test@test.com"),
            ],
        );
    }
    assert_eq!(g.partition().len(), 2000);
    assert!(!g.ids.contains_key(&key(IdType::Email, "test@test.com")));
    // a shared address that is not on any list: the user_id limit keeps people apart
    let mut g = Graph::new(&IdentityConfig::default());
    for i in 0..500 {
        feed(
            &mut g,
            &format!("e{i}"),
            "2026-01-01T00:00:00Z",
            &[
                (IdType::UserId, &format!("u{i}")),
                (IdType::Email, "orders@shop.io"),
            ],
        );
    }
    let biggest = g.partition().iter().map(BTreeSet::len).max().unwrap_or(0);
    assert_eq!(biggest, 2);
}

#[test]
fn identify_null_merges_nobody() {
    let mut g = Graph::new(&IdentityConfig::default());
    for (i, who) in ["a1", "a2", "a3"].iter().enumerate() {
        let out = feed(
            &mut g,
            &format!("e{i}"),
            "2026-01-01T00:00:00Z",
            &[(IdType::AnonymousId, who), (IdType::UserId, "null")],
        );
        assert!(out
            .ledger
            .iter()
            .any(|l| l.rule.as_deref() == Some(rules::rule::BLOCKED)));
    }
    assert_eq!(g.partition().len(), 3);
}

#[test]
fn size_cap_and_link_rate_flag_the_profile() {
    let cfg = IdentityConfig {
        max_links_per_day: 2,
        ..IdentityConfig::default()
    };
    let mut g = Graph::new(&cfg);
    for i in 0..4 {
        feed(
            &mut g,
            &format!("e{i}"),
            "2026-01-01T00:00:00Z",
            &[
                (IdType::UserId, "u"),
                (IdType::AnonymousId, &format!("a{i}")),
            ],
        );
    }
    let p = g.profile_of(&key(IdType::UserId, "u")).expect("u");
    assert_eq!(p.identifiers.len(), 3);
    assert!(p.flags.contains(rules::rule::LINK_RATE), "{:?}", p.flags);
    // the next day is a new day
    feed(
        &mut g,
        "e9",
        "2026-01-02T00:00:00Z",
        &[(IdType::UserId, "u"), (IdType::AnonymousId, "a9")],
    );
    assert_eq!(
        g.profile_of(&key(IdType::UserId, "u"))
            .map(|p| p.identifiers.len()),
        Some(4)
    );
}

#[test]
fn unlink_detaches_for_good_and_moves_the_events() {
    let mut g = Graph::new(&IdentityConfig::default());
    let first = feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "pc")],
    );
    feed(
        &mut g,
        "2",
        "2026-01-02T00:00:00Z",
        &[(IdType::AnonymousId, "pc"), (IdType::Email, "ann@shop.io")],
    );
    feed(
        &mut g,
        "3",
        "2026-01-03T00:00:00Z",
        &[(IdType::Email, "ann@shop.io")],
    );
    let cid = first.customer_id.clone();
    assert_eq!(g.profiles[&cid].event_count, 3);
    g.take_delta();

    let ledger = g
        .unlink(
            &key(IdType::Email, "ann@shop.io"),
            "cmd-1",
            "2026-02-01T00:00:00Z".parse().expect("t"),
        )
        .expect("unlinked");
    let email_cid = g
        .customer_of(&key(IdType::Email, "ann@shop.io"))
        .expect("email")
        .to_string();
    assert_ne!(email_cid, cid);
    // deterministic: the email's own id
    assert_eq!(
        email_cid,
        customer_id_for(&key(IdType::Email, "ann@shop.io"), 0)
    );
    assert_eq!(g.profiles[&cid].event_count, 1);
    // event 2 had the email as its strongest identifier
    assert_eq!(g.profiles[&email_cid].event_count, 2);
    assert!(ledger.iter().any(|l| l.action == IdentityAction::Unlink));
    assert!(ledger.iter().any(|l| l.action == IdentityAction::Split
        && l.merged_customer_id.as_deref() == Some(cid.as_str())));
    let delta = g.take_delta();
    assert!(delta
        .moved
        .iter()
        .any(|(k, c)| *k == key(IdType::Email, "ann@shop.io") && *c == email_cid));
    assert_eq!(delta.walls.len(), 1);

    // a replay of the linking event, or a new one, does not glue them back
    feed(
        &mut g,
        "4",
        "2026-02-02T00:00:00Z",
        &[(IdType::AnonymousId, "pc"), (IdType::Email, "ann@shop.io")],
    );
    assert_ne!(
        g.customer_of(&key(IdType::Email, "ann@shop.io")),
        g.customer_of(&key(IdType::AnonymousId, "pc"))
    );
    assert!(g
        .unlink("email:nobody@shop.io", "cmd-2", Utc::now())
        .is_err());
}

#[test]
fn an_unlink_keeps_the_identifiers_that_were_not_in_conflict() {
    // the laptop cookie, the login and a shared family address arrive together;
    // unlinking the address must not also cut the cookie off the login
    let mut g = Graph::new(&IdentityConfig::default());
    feed(
        &mut g,
        "1",
        "2026-01-01T00:00:00Z",
        &[(IdType::AnonymousId, "laptop")],
    );
    feed(
        &mut g,
        "2",
        "2026-01-02T00:00:00Z",
        &[
            (IdType::UserId, "dana"),
            (IdType::Email, "family@shop.io"),
            (IdType::AnonymousId, "laptop"),
        ],
    );
    feed(
        &mut g,
        "3",
        "2026-01-03T00:00:00Z",
        &[(IdType::AnonymousId, "laptop")],
    );
    g.unlink(
        &key(IdType::Email, "family@shop.io"),
        "cmd-1",
        "2026-02-01T00:00:00Z".parse().expect("t"),
    )
    .expect("unlinked");
    let dana = g
        .customer_of(&key(IdType::UserId, "dana"))
        .map(str::to_string);
    assert_eq!(
        g.customer_of(&key(IdType::AnonymousId, "laptop"))
            .map(str::to_string),
        dana,
        "the cookie stays with the login"
    );
    assert_ne!(
        g.customer_of(&key(IdType::Email, "family@shop.io"))
            .map(str::to_string),
        dana
    );
    let p = &g.profiles[dana.as_deref().expect("dana")];
    assert_eq!(p.event_count, 3, "every event of the cookie and the login");
}

#[test]
fn split_gives_back_deterministic_ids() {
    let build = || {
        let mut g = Graph::new(&IdentityConfig::default());
        feed(
            &mut g,
            "1",
            "2026-01-01T00:00:00Z",
            &[(IdType::AnonymousId, "x")],
        );
        feed(
            &mut g,
            "2",
            "2026-01-02T00:00:00Z",
            &[(IdType::AnonymousId, "y")],
        );
        feed(
            &mut g,
            "3",
            "2026-01-03T00:00:00Z",
            &[
                (IdType::AnonymousId, "x"),
                (IdType::AnonymousId, "y"),
                (IdType::Email, "z@shop.io"),
            ],
        );
        g
    };
    let mut a = build();
    let y_before = customer_id_for(&key(IdType::AnonymousId, "y"), 0);
    let cid = a
        .customer_of(&key(IdType::AnonymousId, "x"))
        .expect("x")
        .to_string();
    assert_ne!(cid, y_before, "y's profile was merged into x's");
    a.split(
        &cid,
        &[
            key(IdType::AnonymousId, "y"),
            key(IdType::Email, "z@shop.io"),
        ],
        "cmd-9",
        Utc::now(),
    )
    .expect("split");
    // y's old id comes back, x keeps the survivor
    assert_eq!(
        a.customer_of(&key(IdType::AnonymousId, "y")),
        Some(y_before.as_str())
    );
    assert_eq!(
        a.customer_of(&key(IdType::AnonymousId, "x")),
        Some(cid.as_str())
    );
    assert!(a.profiles[&y_before].is_active());
    let mut b = build();
    b.split(
        &cid,
        &[
            key(IdType::AnonymousId, "y"),
            key(IdType::Email, "z@shop.io"),
        ],
        "cmd-9",
        Utc::now(),
    )
    .expect("split");
    assert_eq!(a.partition(), b.partition());
    assert!(a
        .split(&cid, &[key(IdType::AnonymousId, "x")], "cmd-10", Utc::now())
        .is_err());
}

/// The oracle: the rules applied by brute force to events sorted by event time,
/// with plain sets: every identifier is born at its first event; each distinct
/// identifier set links once, at its first event; a link that breaks a rule drops
/// its weakest identifier until it passes.
fn oracle(cfg: &IdentityConfig, events: &[CanonicalEvent]) -> Vec<BTreeSet<String>> {
    let rank = |t: &str| {
        IdType::ALL
            .iter()
            .position(|x| x.as_str() == t)
            .unwrap_or(99)
    };
    let limit = |t: &str| -> usize {
        if let Some(n) = cfg.limits.get(t) {
            return *n;
        }
        match t {
            "user_id" | "shopify" => 1,
            "email" | "phone" => 5,
            _ => 100,
        }
    };
    let valid = |ids: &BTreeSet<String>, days: &BTreeMap<u32, u32>| -> bool {
        if ids.len() > cfg.max_identifiers_per_profile {
            return false;
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in ids {
            let (t, v) = k.split_once(':').expect("key");
            let scope = if t == "shopify" {
                format!("{t}/{}", v.split('/').next().unwrap_or(""))
            } else {
                t.to_string()
            };
            let c = counts.entry(scope).or_default();
            *c += 1;
            if *c > limit(t) {
                return false;
            }
        }
        days.values().all(|n| *n <= cfg.max_links_per_day)
    };
    let mut sorted: Vec<&CanonicalEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (e.occurred_at, event_fingerprint(&e.event_id) as u64));
    let mut parts: Vec<(BTreeSet<String>, BTreeMap<u32, u32>)> = Vec::new();
    let mut linked: HashSet<BTreeSet<String>> = HashSet::new();
    let find = |parts: &Vec<(BTreeSet<String>, BTreeMap<u32, u32>)>, k: &str| {
        parts.iter().position(|p| p.0.contains(k))
    };
    for e in sorted {
        let mut ids: Vec<&Identifier> = e.identifiers.iter().collect();
        ids.sort_by_key(|i| (rank(&i.id_type), i.id_type.clone(), i.value.clone()));
        ids.dedup();
        let keys: Vec<String> = ids.iter().map(|i| i.key()).collect();
        for k in &keys {
            if find(&parts, k).is_none() {
                parts.push((BTreeSet::from([k.clone()]), BTreeMap::new()));
            }
        }
        let set: BTreeSet<String> = keys.iter().cloned().collect();
        if keys.len() < 2 || !linked.insert(set) {
            continue;
        }
        let day = (e.occurred_at.timestamp() / 86_400) as u32;
        let mut kept = keys.clone();
        while kept.len() >= 2 {
            let mut idx: Vec<usize> = kept.iter().filter_map(|k| find(&parts, k)).collect();
            idx.sort_unstable();
            idx.dedup();
            let mut ids = BTreeSet::new();
            let mut days = BTreeMap::new();
            for i in &idx {
                ids.extend(parts[*i].0.iter().cloned());
                for (d, n) in &parts[*i].1 {
                    *days.entry(*d).or_insert(0) += n;
                }
            }
            *days.entry(day).or_insert(0) += 1;
            if valid(&ids, &days) {
                for i in idx.iter().rev() {
                    parts.remove(*i);
                }
                parts.push((ids, days));
                break;
            }
            kept.pop();
        }
    }
    let mut out: Vec<BTreeSet<String>> = parts.into_iter().map(|p| p.0).collect();
    out.sort();
    out
}

fn shuffle(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..order.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn partition_matches_oracle_in_any_order(
        events in prop::collection::vec(
            (prop::collection::vec((0usize..4, 0u8..8), 1..4), 0u8..4),
            1..40,
        ),
        seeds in prop::collection::vec(any::<u64>(), 4),
        tight in any::<bool>(),
    ) {
        let cfg = if tight {
            IdentityConfig {
                max_identifiers_per_profile: 5,
                max_links_per_day: 3,
                limits: BTreeMap::from([("email".to_string(), 2), ("anonymous_id".to_string(), 3)]),
                ..IdentityConfig::default()
            }
        } else {
            IdentityConfig::default()
        };
        let types = [IdType::UserId, IdType::Email, IdType::AnonymousId, IdType::Shopify];
        let evs: Vec<CanonicalEvent> = events.iter().enumerate().map(|(i, (ids, day))| {
            let ids: Vec<(IdType, String)> = ids.iter().map(|(t, v)| {
                let v = match types[*t] {
                    IdType::Shopify => format!("s{}.myshopify.com/{v}", v % 2),
                    IdType::Email => format!("p{v}@shop.io"),
                    _ => format!("v{v}"),
                };
                (types[*t], v)
            }).collect();
            let refs: Vec<(IdType, &str)> = ids.iter().map(|(t, v)| (*t, v.as_str())).collect();
            ev(&format!("e{i}"), &format!("2026-01-{:02}T0{}:00:00Z", 1 + day, i % 3), &refs)
        }).collect();
        let expected = oracle(&cfg, &evs);
        let mut first: Option<Graph> = None;
        for seed in &seeds {
            let mut g = Graph::new(&cfg);
            let order = shuffle(evs.len(), *seed);
            for i in &order { g.process(&evs[*i], &[]).expect("attributable"); }
            // duplicates change nothing
            for i in &order { prop_assert!(g.process(&evs[*i], &[]).expect("attributable").duplicate); }
            prop_assert_eq!(g.partition(), expected.clone());
            // every event counted once, on the profile of its strongest identifier
            let total: u64 = g.profiles.values().filter(|p| p.is_active()).map(|p| p.event_count).sum();
            prop_assert_eq!(total, evs.len() as u64);
            if let Some(f) = &first {
                for e in &evs {
                    let k = e.identifiers.iter().min_by_key(|i| (i.id_type.parse::<IdType>().map(IdType::priority).unwrap_or(99), i.value.clone())).map(Identifier::key).unwrap_or_default();
                    let ca = f.profile_of(&k).map(|p| p.event_count);
                    let cb = g.profile_of(&k).map(|p| p.event_count);
                    prop_assert_eq!(ca, cb);
                }
            } else {
                first = Some(g);
            }
        }
    }
}

#[test]
fn claims_link_only_where_a_rule_trusts_them() {
    let claim = |g: &mut Graph, id: &str| {
        let mut e = ev(
            id,
            "2026-01-02T00:00:00Z",
            &[(IdType::Mastodon, "@ann@social.example")],
        );
        e.claimed = vec![Identifier::new(IdType::Email, "ann@shop.io")];
        g.process(&e, &[]).expect("ok")
    };
    let shop = ev(
        "o",
        "2026-01-01T00:00:00Z",
        &[(IdType::Email, "ann@shop.io")],
    );
    // default: a bio address is a candidate only
    let mut g = Graph::new(&IdentityConfig::default());
    g.process(&shop, &[]).expect("ok");
    let out = claim(&mut g, "m1");
    let cand = out
        .ledger
        .iter()
        .find(|l| l.action == IdentityAction::Candidate)
        .expect("candidate recorded");
    assert_eq!(cand.rule.as_deref(), Some(rules::rule::CANDIDATE));
    assert!(cand
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("mastodon>email"));
    assert_ne!(
        g.customer_of(&key(IdType::Email, "ann@shop.io")),
        g.customer_of(&key(IdType::Mastodon, "@ann@social.example"))
    );
    // trusted: the claim links, and the event stays the Mastodon account's
    let cfg = IdentityConfig {
        trusted_claims: vec!["mastodon>email".into()],
        ..IdentityConfig::default()
    };
    let mut g = Graph::new(&cfg);
    g.process(&shop, &[]).expect("ok");
    let out = claim(&mut g, "m1");
    assert_eq!(out.primary, key(IdType::Mastodon, "@ann@social.example"));
    assert_eq!(
        g.customer_of(&key(IdType::Email, "ann@shop.io")),
        g.customer_of(&key(IdType::Mastodon, "@ann@social.example"))
    );
    assert_eq!(g.contrib[&out.primary].event_count, 1);
}

#[test]
fn a_limit_can_hold_within_a_time_window() {
    let cfg = IdentityConfig {
        limits: BTreeMap::from([("email".to_string(), 1)]),
        limit_window_days: BTreeMap::from([("email".to_string(), 30)]),
        ..IdentityConfig::default()
    };
    let mut g = Graph::new(&cfg);
    for (i, (at, email)) in [
        ("2026-01-01T00:00:00Z", "a@shop.io"),
        ("2026-01-10T00:00:00Z", "b@shop.io"),
        ("2026-03-01T00:00:00Z", "c@shop.io"),
    ]
    .iter()
    .enumerate()
    {
        feed(
            &mut g,
            &format!("e{i}"),
            at,
            &[(IdType::UserId, "u"), (IdType::Email, email)],
        );
    }
    let p = g.profile_of(&key(IdType::UserId, "u")).expect("u");
    let emails: Vec<&str> = p
        .identifiers
        .iter()
        .filter(|i| i.id_type == "email")
        .map(|i| i.value.as_str())
        .collect();
    // b came 9 days after a; c two months later
    assert_eq!(emails, ["a@shop.io", "c@shop.io"]);
    assert!(Rules::new(&IdentityConfig {
        limit_window_days: BTreeMap::from([("email".to_string(), 0)]),
        ..IdentityConfig::default()
    })
    .is_err());
}
