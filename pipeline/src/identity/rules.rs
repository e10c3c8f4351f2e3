//! The identity rules of one workspace, compiled from `[identity]`: blocked values,
//! priorities, per-profile limits, the size cap, the daily link cap and trusted
//! claims (docs/identity.md). [`Rules::violation`] is the one check every merge goes
//! through, in the streaming path and in a cluster replay alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use regex::RegexSet;
use socialcrm_schemas::identifier::is_junk;
use socialcrm_schemas::{IdType, Identifier};

use crate::config::IdentityConfig;

/// Default number of identifiers of one type a profile may hold. Social and shop
/// ids count per network or store (`shopify:<shop>/...`).
pub fn default_limit(t: IdType) -> usize {
    match t {
        IdType::UserId => 1,
        IdType::Email | IdType::Phone => 5,
        IdType::AnonymousId | IdType::DeviceId => 100,
        IdType::Shopify
        | IdType::Woocommerce
        | IdType::X
        | IdType::Mastodon
        | IdType::Telegram
        | IdType::Bluesky
        | IdType::Reddit => 1,
    }
}

/// Rule names, as they appear in the ledger's `rule` column.
pub mod rule {
    pub const BLOCKED: &str = "blocked_value";
    pub const LIMIT: &str = "identifier_limit";
    pub const SIZE: &str = "profile_size_cap";
    pub const LINK_RATE: &str = "link_rate";
    pub const UNLINKED: &str = "unlinked";
    pub const CANDIDATE: &str = "untrusted_claim";
}

/// A violated rule: (rule name, reason for humans).
pub type Violation = (&'static str, String);

#[derive(Debug, Clone)]
pub struct Rules {
    blocked: HashSet<String>,
    patterns: RegexSet,
    /// Indexed by [`IdType::priority`] (the built-in order).
    limits: [usize; IdType::ALL.len()],
    /// Days: the limit of the type holds within any window of this length (by
    /// the identifiers' first events) instead of over the profile's whole life.
    windows: [Option<u32>; IdType::ALL.len()],
    rank: [usize; IdType::ALL.len()],
    pub max_identifiers: usize,
    pub max_links_per_day: u32,
    trusted_claims: HashSet<(IdType, IdType)>,
}

impl Default for Rules {
    fn default() -> Self {
        // the defaults are valid by construction
        Rules::new(&IdentityConfig::default()).unwrap_or_else(|_| Rules {
            blocked: HashSet::new(),
            patterns: RegexSet::empty(),
            limits: IdType::ALL.map(default_limit),
            windows: [None; IdType::ALL.len()],
            rank: std::array::from_fn(|i| i),
            max_identifiers: 1000,
            max_links_per_day: 100,
            trusted_claims: HashSet::new(),
        })
    }
}

fn id_type(field: &str, s: &str) -> Result<IdType, String> {
    s.trim().parse::<IdType>().map_err(|_| {
        let known: Vec<&str> = IdType::ALL.iter().map(|t| t.as_str()).collect();
        format!(
            "{field}: unknown identifier type {s:?} (known: {})",
            known.join(", ")
        )
    })
}

impl Rules {
    /// Compiles and checks `[identity]`; errors name the field.
    pub fn new(cfg: &IdentityConfig) -> Result<Rules, String> {
        let patterns = RegexSet::new(&cfg.blocked_patterns)
            .map_err(|e| format!("identity.blocked_patterns: {e}"))?;
        if cfg.max_identifiers_per_profile == 0 {
            return Err("identity.max_identifiers_per_profile must be > 0".into());
        }
        if cfg.max_links_per_day == 0 {
            return Err("identity.max_links_per_day must be > 0".into());
        }
        let mut limits = IdType::ALL.map(default_limit);
        for (t, n) in &cfg.limits {
            let t = id_type("identity.limits", t)?;
            if *n == 0 {
                return Err(format!("identity.limits.{t} must be > 0"));
            }
            limits[t.priority()] = *n;
        }
        let mut windows = [None; IdType::ALL.len()];
        for (t, d) in &cfg.limit_window_days {
            let t = id_type("identity.limit_window_days", t)?;
            if *d == 0 {
                return Err(format!("identity.limit_window_days.{t} must be > 0"));
            }
            windows[t.priority()] = Some(*d);
        }
        let mut order: Vec<IdType> = Vec::new();
        for t in &cfg.priority {
            let t = id_type("identity.priority", t)?;
            if order.contains(&t) {
                return Err(format!("identity.priority: {t} is listed twice"));
            }
            order.push(t);
        }
        for t in IdType::ALL {
            if !order.contains(&t) {
                order.push(t);
            }
        }
        let mut rank = [0; IdType::ALL.len()];
        for (i, t) in order.iter().enumerate() {
            rank[t.priority()] = i;
        }
        let mut trusted_claims = HashSet::new();
        for c in &cfg.trusted_claims {
            let (a, b) = c.split_once('>').ok_or_else(|| {
                format!("identity.trusted_claims: {c:?} must be \"<actor type>><claimed type>\"")
            })?;
            trusted_claims.insert((
                id_type("identity.trusted_claims", a)?,
                id_type("identity.trusted_claims", b)?,
            ));
        }
        Ok(Rules {
            blocked: cfg
                .blocked_values
                .iter()
                .map(|v| v.trim().to_lowercase())
                .collect(),
            patterns,
            limits,
            windows,
            rank,
            max_identifiers: cfg.max_identifiers_per_profile,
            max_links_per_day: cfg.max_links_per_day,
            trusted_claims,
        })
    }

    /// Why `id` may never link, if it may not.
    pub fn blocked(&self, id: &Identifier) -> Option<String> {
        if is_junk(&id.value) {
            return Some(format!("{} is a junk value", id.key()));
        }
        if !self.blocked.is_empty() && self.blocked.contains(&id.value.to_lowercase()) {
            return Some(format!("{} is on identity.blocked_values", id.key()));
        }
        if self.patterns.is_match(&id.value) {
            return Some(format!("{} matches identity.blocked_patterns", id.key()));
        }
        None
    }

    /// Rank of a type: 0 is the strongest. Unknown types rank last.
    pub fn rank(&self, id_type: &str) -> usize {
        id_type
            .parse::<IdType>()
            .map(|t| self.rank[t.priority()])
            .unwrap_or(usize::MAX)
    }

    pub fn claim_trusted(&self, actor: &str, claimed: &str) -> bool {
        match (actor.parse::<IdType>(), claimed.parse::<IdType>()) {
            (Ok(a), Ok(b)) => self.trusted_claims.contains(&(a, b)),
            _ => false,
        }
    }

    /// The checks a profile made of `ids` (with `link_days` linking events per day)
    /// must pass; `walls` says which side of which unlink/split each identifier is on.
    /// Every rule is monotone: a subset of a valid profile is valid, which is what
    /// makes conflict-free unions order-independent.
    pub fn violation<'a>(
        &self,
        ids: impl Iterator<Item = &'a Identifier>,
        link_days: &BTreeMap<u32, u32>,
        walls: &super::Walls,
    ) -> Option<Violation> {
        let mut n = 0usize;
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        let mut sides: HashMap<u64, (u8, &str)> = HashMap::new();
        for id in ids {
            n += 1;
            if n > self.max_identifiers {
                return Some((
                    rule::SIZE,
                    format!(
                        "a profile holds at most {} identifiers",
                        self.max_identifiers
                    ),
                ));
            }
            let Ok(t) = id.id_type.parse::<IdType>() else {
                continue;
            };
            let scope = match t {
                IdType::Shopify | IdType::Woocommerce => {
                    id.value.split_once('/').map_or("", |(store, _)| store)
                }
                _ => "",
            };
            let c = counts.entry((t.as_str(), scope)).or_default();
            *c += 1;
            let limit = self.limits[t.priority()];
            if *c > limit && self.windows[t.priority()].is_none() {
                let per = if scope.is_empty() {
                    String::new()
                } else {
                    format!(" of store {scope}")
                };
                return Some((
                    rule::LIMIT,
                    format!("a profile holds at most {limit} {t} identifier(s){per}"),
                ));
            }
            if !walls.by_id.is_empty() {
                if let Some(ws) = walls.by_id.get(&id.key()) {
                    for (w, side) in ws {
                        match sides.get(w) {
                            Some((s, other)) if *s != *side => {
                                let why = walls.list.get(w).map_or("", |w| w.why.as_str());
                                return Some((
                                    rule::UNLINKED,
                                    format!(
                                        "{} and {other} were separated ({why}); they do not link again",
                                        id.key(),
                                    ),
                                ));
                            }
                            Some(_) => {}
                            None => {
                                sides.insert(*w, (*side, id.value.as_str()));
                            }
                        }
                    }
                }
            }
        }
        if let Some((day, c)) = link_days.iter().find(|(_, c)| **c > self.max_links_per_day) {
            return Some((
                rule::LINK_RATE,
                format!(
                    "{c} linking events on {} exceed identity.max_links_per_day = {}",
                    day_label(*day),
                    self.max_links_per_day
                ),
            ));
        }
        None
    }
}

impl Rules {
    pub fn has_windows(&self) -> bool {
        self.windows.iter().any(Option::is_some)
    }

    /// The windowed limits: at most `limit` identifiers of a type (per store) born
    /// within any `window` days. Monotone like every other rule.
    pub fn window_violation<'a>(
        &self,
        ids: impl Iterator<Item = (&'a Identifier, DateTime<Utc>)>,
    ) -> Option<Violation> {
        let mut births: HashMap<(IdType, &str), Vec<i64>> = HashMap::new();
        for (id, born) in ids {
            let Ok(t) = id.id_type.parse::<IdType>() else {
                continue;
            };
            if self.windows[t.priority()].is_none() {
                continue;
            }
            let scope = match t {
                IdType::Shopify | IdType::Woocommerce => {
                    id.value.split_once('/').map_or("", |(store, _)| store)
                }
                _ => "",
            };
            births.entry((t, scope)).or_default().push(born.timestamp());
        }
        for ((t, _), mut times) in births {
            let (Some(days), limit) = (self.windows[t.priority()], self.limits[t.priority()])
            else {
                continue;
            };
            times.sort_unstable();
            let span = i64::from(days) * 86_400;
            let mut i = 0;
            for j in 0..times.len() {
                while times[j] - times[i] >= span {
                    i += 1;
                }
                if j - i + 1 > limit {
                    return Some((
                        rule::LIMIT,
                        format!(
                            "a profile gains at most {limit} {t} identifier(s) within {days} days"
                        ),
                    ));
                }
            }
        }
        None
    }
}

/// Days since 1970-01-01, as `YYYY-MM-DD`.
pub fn day_label(day: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let bad = |f: fn(&mut IdentityConfig)| {
            let mut c = IdentityConfig::default();
            f(&mut c);
            Rules::new(&c).expect_err("invalid")
        };
        assert!(
            bad(|c| c.blocked_patterns = vec!["(".into()]).contains("identity.blocked_patterns")
        );
        assert!(bad(|c| {
            c.limits.insert("emial".into(), 2);
        })
        .contains("identity.limits: unknown identifier type \"emial\""));
        assert!(bad(|c| c.priority = vec!["email".into(), "email".into()]).contains("twice"));
        assert!(bad(|c| c.trusted_claims = vec!["mastodon-x".into()]).contains("trusted_claims"));
        assert!(bad(|c| c.max_links_per_day = 0).contains("max_links_per_day"));
    }

    #[test]
    fn defaults_block_junk_and_shared_addresses() {
        let r = Rules::default();
        for v in [
            "null",
            "undefined",
            "0",
            "-1",
            "[object Object]",
            "0000-0000",
        ] {
            assert!(
                r.blocked(&Identifier::new(IdType::AnonymousId, v))
                    .is_some(),
                "{v}"
            );
        }
        for v in ["test@test.com", "test@shop.io", "noreply@shop.io"] {
            assert!(
                r.blocked(&Identifier::new(IdType::Email, v)).is_some(),
                "{v}"
            );
        }
        assert!(r
            .blocked(&Identifier::new(IdType::Email, "ann@shop.io"))
            .is_none());
    }

    #[test]
    fn limits_count_per_type_and_store() {
        let r = Rules::default();
        let w = super::super::Walls::default();
        let none = BTreeMap::new();
        let two_users = [
            Identifier::new(IdType::UserId, "a"),
            Identifier::new(IdType::UserId, "b"),
        ];
        let v = r
            .violation(two_users.iter(), &none, &w)
            .expect("two user ids");
        assert_eq!(v.0, rule::LIMIT);
        let two_stores = [
            Identifier::new(IdType::Shopify, "one.myshopify.com/1"),
            Identifier::new(IdType::Shopify, "two.myshopify.com/1"),
        ];
        assert!(r.violation(two_stores.iter(), &none, &w).is_none());
        let same_store = [
            Identifier::new(IdType::Shopify, "one.myshopify.com/1"),
            Identifier::new(IdType::Shopify, "one.myshopify.com/2"),
        ];
        assert!(r.violation(same_store.iter(), &none, &w).is_some());
        let busy = BTreeMap::from([(20_000, 101)]);
        assert_eq!(
            r.violation(std::iter::empty(), &busy, &w).map(|v| v.0),
            Some(rule::LINK_RATE)
        );
    }
}
