//! Identifier normalisation (`Normalizer::normalize_value`, every type): one
//! selector byte picks the type (low bits) and whether a default phone region is
//! configured (high bit); the rest is the value (UTF-8).
//!
//! Invariants: a normalised value is non-empty, at most 256 characters, free of
//! control characters and junk placeholders, in its type's normal form (checked
//! per type), a fixed point of normalisation with and without a default region,
//! and survives `type:value` keys; a refusal names its rule.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socialcrm_schemas::identifier::{is_junk, MAX_ID_LEN};
use socialcrm_schemas::{IdType, Identifier, Normalizer};

fn no_region() -> &'static Normalizer {
    static N: OnceLock<Normalizer> = OnceLock::new();
    N.get_or_init(Normalizer::default)
}

fn check_form(t: IdType, v: &str) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match t {
        IdType::Email => {
            assert_eq!(v, v.to_lowercase(), "email not lower-cased");
            assert_eq!(v.matches('@').count(), 1, "email without exactly one @");
        }
        IdType::Phone => {
            let rest = v.strip_prefix('+').expect("E.164 starts with +");
            assert!(digits(rest), "E.164 has digits only: {v}");
        }
        IdType::X | IdType::Telegram => {
            assert!(digits(v) && !v.starts_with('0'), "numeric id: {v}");
        }
        IdType::Mastodon => {
            assert!(
                v.starts_with('@') && v.matches('@').count() == 2,
                "handle: {v}"
            );
            assert_eq!(v, v.to_lowercase());
        }
        IdType::Reddit | IdType::Shopify | IdType::Woocommerce => {
            assert_eq!(v, v.to_lowercase(), "{t} not lower-cased");
        }
        IdType::Bluesky => assert!(v.starts_with("did:"), "did: {v}"),
        IdType::UserId | IdType::AnonymousId | IdType::DeviceId => {
            assert_eq!(v, v.trim(), "not trimmed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let t = IdType::ALL[(sel & 0x7f) as usize % IdType::ALL.len()];
    let n = if sel & 0x80 != 0 {
        socialcrm_fuzz::normalizer()
    } else {
        no_region()
    };
    match n.normalize_value(t, value) {
        Ok(v) => {
            assert!(!v.is_empty(), "empty normal form");
            assert!(v.chars().count() <= MAX_ID_LEN, "normal form too long");
            assert!(!v.chars().any(char::is_control), "control characters kept");
            assert!(!is_junk(&v), "normal form is a junk placeholder: {v}");
            check_form(t, &v);
            for other in [socialcrm_fuzz::normalizer(), no_region()] {
                match other.normalize_value(t, &v) {
                    Ok(again) => assert_eq!(again, v, "{t}: not idempotent"),
                    Err(e) => panic!("{t}: normal form `{v}` refused again: {e}"),
                }
            }
            let id = Identifier::new(t, v.clone());
            assert_eq!(Identifier::parse_key(&id.key()).ok(), Some(id.clone()));
            assert_eq!(n.normalize(t.as_str(), &v).ok(), Some(id));
        }
        Err(e) => {
            assert!(!e.rule().is_empty() && !e.to_string().is_empty());
        }
    }
});
