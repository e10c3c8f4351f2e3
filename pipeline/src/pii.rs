//! Personal data of accepted events, protected before anything is stored
//! (`[privacy]`, docs/privacy.md): the configured identifier types and traits
//! become salted hashes, and `context.ip` is truncated, dropped or kept.
//!
//! Runs right after validation and normalisation and before the identity graph, so
//! the same normalised value always gives the same hash (identity resolution still
//! links the person), and the graph, its store, ClickHouse, `crm.profiles` and
//! `crm.identity` only ever hold the hash. The blocked-value rules read the clear
//! value, so they are checked here, before it is replaced.

use std::borrow::Cow;

use socialcrm_schemas::event::RejectedIdentifier;
use socialcrm_schemas::privacy::{protect_ip, Hasher, IpPolicy, PrivacyConfig};
use socialcrm_schemas::{CanonicalEvent, IdError, IdType, Identifier, JsonObject, Normalizer};

use crate::identity::rules::rule;
use crate::identity::Graph;

/// Identifiers refused before they were hashed: (hashed identifier, rule, reason).
pub type Screened = Vec<(Identifier, &'static str, String)>;

/// The `[privacy]` transformations of the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Protector {
    hasher: Option<Hasher>,
    ip: IpPolicy,
}

impl Protector {
    pub fn new(cfg: &PrivacyConfig) -> Protector {
        Protector {
            hasher: cfg.hasher(),
            ip: cfg.ip,
        }
    }

    /// Protects one validated event in place. Identifiers of hashed types whose
    /// clear value a blocked rule refuses (and that the graph does not know yet,
    /// as the graph itself does) are taken out of the event and returned, hashed,
    /// for the ledger. Identifiers that failed normalisation (`rejected`) are
    /// hashed too, trimmed, since the ledger records them.
    pub fn protect(
        &self,
        graph: &Graph,
        ev: &mut CanonicalEvent,
        rejected: &mut [RejectedIdentifier],
        normalizer: &Normalizer,
    ) -> Screened {
        if self.ip != IpPolicy::Keep && ip_may_change(&ev.context) {
            // the other members of the context are copied as text, not parsed; a
            // context that is not an object of JSON text has no `ip` to change
            let policy = self.ip;
            let changed = ev
                .context
                .with_member("ip", |ip| ip.and_then(|v| protect_ip(policy, &v)));
            if let Some(Cow::Owned(ctx)) = changed {
                ev.context = ctx;
            }
        }
        let mut screened = Screened::new();
        let Some(h) = &self.hasher else {
            return screened;
        };
        let screen = |id: &mut Identifier, screened: &mut Screened| -> bool {
            if !h.hashes_type(&id.id_type) {
                return true;
            }
            let clear = id.clone();
            h.protect_identifier(id);
            let key = id.key();
            if graph.ids.contains_key(&key) {
                return true;
            }
            match graph.rules.blocked(&clear) {
                Some(why) => {
                    screened.push((id.clone(), rule::BLOCKED, why.replace(&clear.key(), &key)));
                    false
                }
                None => true,
            }
        };
        ev.identifiers.retain_mut(|id| screen(id, &mut screened));
        let actors = ev.identifiers.clone();
        ev.claimed.retain_mut(|id| {
            // a claim of an actor identifier is the actor's (the graph skips it)
            let mut hashed = id.clone();
            h.protect_identifier(&mut hashed);
            if actors.contains(&hashed) {
                *id = hashed;
                return true;
            }
            screen(id, &mut screened)
        });
        for id in &mut ev.target {
            h.protect_identifier(id);
        }
        for r in rejected.iter_mut() {
            let Ok(t) = r.original.id_type.parse::<IdType>() else {
                continue;
            };
            if !h.hashes_type(t.as_str()) {
                continue;
            }
            let stored = h.identifier_value(t, r.original.value.trim());
            if let IdError::Blocked { value, .. } = &mut r.error {
                value.clone_from(&stored);
            }
            r.original.value = stored;
        }
        if h.hashes_traits() {
            h.protect_traits(&mut ev.traits, normalizer);
        }
        screened
    }
}

/// Whether the context may hold an `ip` member: most events have none (a test on
/// the raw text; an escaped key name is decoded by [`JsonObject::with_member`],
/// which leaves a context whose address does not change as it was).
fn ip_may_change(context: &JsonObject) -> bool {
    let t = context.as_str();
    t.contains("\"ip\"") || t.contains("\\u")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use chrono::Utc;
    use serde_json::json;

    const SALT: &str = "pipeline-test-salt-0123";

    fn protector(types: &[&str], traits: &[&str], ip: IpPolicy) -> Protector {
        Protector::new(&PrivacyConfig {
            salt: SALT.into(),
            hash_identifier_types: types.iter().map(|s| s.to_string()).collect(),
            hash_traits: traits.iter().map(|s| s.to_string()).collect(),
            ip,
        })
    }

    fn parse(raw: serde_json::Value) -> (CanonicalEvent, Vec<RejectedIdentifier>) {
        CanonicalEvent::parse_and_validate(
            raw.to_string().as_bytes(),
            &Normalizer::default(),
            Utc::now(),
        )
        .expect("valid event")
    }

    fn event(identifiers: serde_json::Value, context: serde_json::Value) -> serde_json::Value {
        json!({
            "schema_version": 1, "event_id": "web:1", "source": "web", "channel": "web",
            "type": "identify", "occurred_at": "2026-01-01T00:00:00Z",
            "received_at": "2026-01-01T00:00:00Z", "identifiers": identifiers,
            "traits": {"email": "Ann@Example.com", "name": "Ann", "address": {"city": "Berlin"}},
            "context": context
        })
    }

    fn hash(v: &str) -> String {
        PrivacyConfig {
            salt: SALT.into(),
            hash_traits: vec!["x".into()],
            ..PrivacyConfig::default()
        }
        .hasher()
        .expect("on")
        .hash(v)
    }

    #[test]
    fn hashed_identifiers_still_link_the_same_person() {
        let p = protector(&["email"], &["email", "address"], IpPolicy::Keep);
        let mut g = Graph::new(&IdentityConfig::default());
        let n = Normalizer::default();
        let (mut a, mut ra) = parse(event(
            json!([{"type": "user_id", "value": "u-1"}, {"type": "email", "value": " ANN@example.com"}]),
            json!({}),
        ));
        let screened = p.protect(&g, &mut a, &mut ra, &n);
        assert!(screened.is_empty());
        let h = hash("ann@example.com");
        assert_eq!(a.identifiers[1], Identifier::new(IdType::Email, h.clone()));
        assert_eq!(a.identifiers[0].value, "u-1", "user_id is not hashed");
        assert_eq!(
            a.traits["email"],
            json!(h),
            "trait email hashes like the identifier"
        );
        assert_eq!(a.traits["address"], json!(hash(r#"{"city":"Berlin"}"#)));
        assert_eq!(a.traits["name"], json!("Ann"));
        let first = g.process(&a, &ra).expect("ok");
        // a second device with the same address, written differently
        let (mut b, mut rb) = parse(json!({
            "schema_version": 1, "event_id": "web:2", "source": "web", "channel": "web",
            "type": "page", "occurred_at": "2026-01-02T00:00:00Z",
            "received_at": "2026-01-02T00:00:00Z",
            "identifiers": [{"type": "anonymous_id", "value": "phone-1"}, {"type": "email", "value": "ann@EXAMPLE.com "}]
        }));
        p.protect(&g, &mut b, &mut rb, &n);
        let second = g.process(&b, &rb).expect("ok");
        assert_eq!(first.customer_id, second.customer_id);
        assert_eq!(
            g.customer_of(&format!("email:{h}")),
            Some(first.customer_id.as_str())
        );
        assert!(
            g.ids.keys().all(|k| !k.contains("example.com")),
            "no clear address in the graph: {:?}",
            g.ids.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn blocked_rules_read_the_clear_value_and_record_the_hash() {
        let p = protector(&["email"], &[], IpPolicy::Keep);
        let cfg = IdentityConfig {
            blocked_values: vec!["info@shop.io".into()],
            ..IdentityConfig::default()
        };
        let mut g = Graph::new(&cfg);
        let (mut ev, mut rej) = parse(event(
            json!([
                {"type": "user_id", "value": "u-1"},
                {"type": "email", "value": "info@shop.io"},
                {"type": "email", "value": "noreply@shop.io"},
                {"type": "email", "value": "not-an-email"}
            ]),
            json!({}),
        ));
        let screened = p.protect(&g, &mut ev, &mut rej, &Normalizer::default());
        assert_eq!(ev.identifiers.len(), 1, "{:?}", ev.identifiers);
        assert_eq!(
            screened.len(),
            2,
            "listed value and default pattern: {screened:?}"
        );
        for (id, r, why) in &screened {
            assert_eq!(*r, rule::BLOCKED);
            assert!(id.value.starts_with("sha256:"), "{id:?}");
            assert!(
                !why.contains("shop.io"),
                "reason without the clear value: {why}"
            );
            assert!(why.contains(&id.key()), "{why}");
        }
        assert_eq!(rej.len(), 1);
        assert_eq!(rej[0].original.value, hash("not-an-email"));
        let out = g.process_screened(&ev, &rej, screened).expect("ok");
        let rejects: Vec<_> = out
            .ledger
            .iter()
            .filter(|m| m.action == socialcrm_schemas::messages::IdentityAction::Reject)
            .collect();
        assert_eq!(rejects.len(), 3);
        let text = serde_json::to_string(&out.ledger).expect("json");
        assert!(
            !text.contains("shop.io") && !text.contains("not-an-email"),
            "{text}"
        );
    }

    #[test]
    fn a_known_identifier_is_not_blocked_again() {
        let p = protector(&["email"], &[], IpPolicy::Keep);
        let mut g = Graph::new(&IdentityConfig::default());
        let n = Normalizer::default();
        let (mut a, mut ra) = parse(event(
            json!([{"type": "email", "value": "orders@shop.io"}]),
            json!({}),
        ));
        p.protect(&g, &mut a, &mut ra, &n);
        g.process(&a, &ra).expect("ok");
        // a rule added later (here: the graph's rules) does not detach it by itself
        g.rules = crate::identity::rules::Rules::new(&IdentityConfig {
            blocked_values: vec!["orders@shop.io".into()],
            ..IdentityConfig::default()
        })
        .expect("rules");
        let (mut b, mut rb) = parse(event(
            json!([{"type": "email", "value": "orders@shop.io"}]),
            json!({}),
        ));
        assert!(p.protect(&g, &mut b, &mut rb, &n).is_empty());
        assert_eq!(b.identifiers.len(), 1);
    }

    #[test]
    fn context_ip_follows_the_policy() {
        let ctx = json!({"ip": "203.0.113.77", "locale": "de-DE"});
        let ids = json!([{"type": "user_id", "value": "u-1"}]);
        let run = |ip: IpPolicy| {
            let (mut ev, mut rej) = parse(event(ids.clone(), ctx.clone()));
            let g = Graph::default();
            protector(&[], &[], ip).protect(&g, &mut ev, &mut rej, &Normalizer::default());
            ev.context.to_map()
        };
        assert_eq!(run(IpPolicy::Truncate)["ip"], json!("203.0.113.0"));
        assert!(!run(IpPolicy::Drop).contains_key("ip"));
        assert_eq!(run(IpPolicy::Drop)["locale"], json!("de-DE"));
        assert_eq!(run(IpPolicy::Keep)["ip"], json!("203.0.113.77"));
        // the collector's output passes untouched (the text is not rewritten)
        let (mut ev, mut rej) = parse(event(ids.clone(), json!({"ip": "203.0.113.0", "z": 1})));
        let before = ev.context.as_str().to_string();
        protector(&[], &[], IpPolicy::Truncate).protect(
            &Graph::default(),
            &mut ev,
            &mut rej,
            &Normalizer::default(),
        );
        assert_eq!(ev.context.as_str(), before);
        // not a string, null: dropped under truncate; null removed under drop
        for (ctx, policy) in [
            (json!({"ip": 42}), IpPolicy::Truncate),
            (json!({"ip": null}), IpPolicy::Drop),
        ] {
            let (mut ev, mut rej) = parse(event(ids.clone(), ctx));
            protector(&[], &[], policy).protect(
                &Graph::default(),
                &mut ev,
                &mut rej,
                &Normalizer::default(),
            );
            assert!(!ev.context.to_map().contains_key("ip"), "{policy:?}");
        }
        // an escaped key is still found
        let (mut ev, mut rej) = parse(event(ids.clone(), json!({})));
        ev.context = serde_json::from_str(r#"{"\u0069p": "198.51.100.7"}"#).expect("json");
        protector(&[], &[], IpPolicy::Truncate).protect(
            &Graph::default(),
            &mut ev,
            &mut rej,
            &Normalizer::default(),
        );
        assert_eq!(ev.context.to_map()["ip"], json!("198.51.100.0"));
    }
}
