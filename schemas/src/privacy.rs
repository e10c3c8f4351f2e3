//! `[privacy]`: protection of personal data before it is stored (docs/privacy.md).
//!
//! Owns the settings every process shares (the salt, which identifier types and
//! traits are stored as salted hashes, what happens to IP addresses) and the pure
//! functions that apply them. The pipeline hashes right after validation, so the
//! identity graph, ClickHouse, `crm.profiles` and `crm.identity` only ever see
//! hashes; the CLI and the HTTP API hash a clear value the same way to look it up.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::identifier::{IdType, Identifier, Normalizer};

/// Prefix of every hashed value: `sha256:` + 64 hex digits.
pub const HASH_PREFIX: &str = "sha256:";
/// Shortest accepted salt when anything is hashed.
pub const MIN_SALT_CHARS: usize = 16;

/// What happens to IP addresses (`context.ip`) before they are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpPolicy {
    /// IPv4 to its /24 (`203.0.113.0`), IPv6 to its /48 (`2001:db8:85a3::`);
    /// a value that is not an IP address is dropped.
    #[default]
    Truncate,
    /// Removed.
    Drop,
    /// Stored as received.
    Keep,
}

/// `[privacy]` section of the config file.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Secret salt of every hash (`salt = "${SOCIALCRM_PRIVACY_SALT}"`), at least
    /// 16 characters when anything is hashed. Never logged. Changing it (or the
    /// lists below) on a workspace that holds data cuts every person in two: the
    /// pipeline refuses to start on a store built with other settings.
    #[serde(default)]
    pub salt: String,
    /// Identifier types stored as salted hashes (e.g. `["email", "phone"]`).
    /// Shop ids (`shopify`, `woocommerce`) keep their store: `<store>/sha256:…`.
    #[serde(default)]
    pub hash_identifier_types: Vec<String>,
    /// Trait names whose values are stored as salted hashes (e.g.
    /// `["email", "phone", "address"]`). A trait named like an identifier type
    /// is normalised first, so it hashes to the identifier's hash.
    #[serde(default)]
    pub hash_traits: Vec<String>,
    /// `truncate` (default), `drop` or `keep`: what happens to `context.ip`, in
    /// the collector before Kafka and in the pipeline before storage.
    #[serde(default)]
    pub ip: IpPolicy,
}

impl std::fmt::Debug for PrivacyConfig {
    // the salt is a secret: say whether it is set, never what it is
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field(
                "salt",
                &if self.salt.is_empty() {
                    "<empty>"
                } else {
                    "<redacted>"
                },
            )
            .field("hash_identifier_types", &self.hash_identifier_types)
            .field("hash_traits", &self.hash_traits)
            .field("ip", &self.ip)
            .finish()
    }
}

impl PrivacyConfig {
    /// True when identifiers or traits are hashed.
    pub fn hashing(&self) -> bool {
        !self.hash_identifier_types.is_empty() || !self.hash_traits.is_empty()
    }

    /// Pure checks; errors name the field (and never print the salt).
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.hash_identifier_types {
            t.parse::<IdType>().map_err(|_| {
                let known: Vec<&str> = IdType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "privacy.hash_identifier_types: unknown identifier type \"{t}\" (known: {})",
                    known.join(", ")
                )
            })?;
        }
        if let Some(t) = self.hash_traits.iter().find(|t| t.trim().is_empty()) {
            return Err(format!("privacy.hash_traits: trait name \"{t}\" is empty"));
        }
        if self.hashing() && self.salt.chars().count() < MIN_SALT_CHARS {
            return Err(format!(
                "privacy.salt: must be at least {MIN_SALT_CHARS} characters when privacy.hash_identifier_types or privacy.hash_traits is set (e.g. salt = \"${{SOCIALCRM_PRIVACY_SALT}}\"); it is {}",
                if self.salt.is_empty() { "empty".to_string() } else { format!("{} characters", self.salt.chars().count()) }
            ));
        }
        Ok(())
    }

    /// The hasher of these settings; `None` when nothing is hashed.
    pub fn hasher(&self) -> Option<Hasher> {
        if !self.hashing() {
            return None;
        }
        let mut types = [false; IdType::ALL.len()];
        for t in self
            .hash_identifier_types
            .iter()
            .filter_map(|t| t.parse::<IdType>().ok())
        {
            types[t.priority()] = true;
        }
        Some(Hasher {
            salt: self.salt.as_bytes().to_vec(),
            types,
            traits: self
                .hash_traits
                .iter()
                .map(|t| t.trim().to_string())
                .collect(),
        })
    }
}

/// Salted SHA-256 of values, for the configured identifier types and traits.
#[derive(Clone)]
pub struct Hasher {
    salt: Vec<u8>,
    /// Indexed by [`IdType::priority`].
    types: [bool; IdType::ALL.len()],
    traits: BTreeSet<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("salt", &"<redacted>")
            .field("types", &self.types)
            .field("traits", &self.traits)
            .finish()
    }
}

impl Hasher {
    /// `sha256:` + hex of SHA-256(salt ‖ 0x00 ‖ value).
    pub fn hash(&self, value: &str) -> String {
        salted_hash(&self.salt, value)
    }

    /// A fingerprint of the settings (salt, types, traits) that decide what a
    /// stored hash is; it reveals neither the salt nor any value. Never 0.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"socialcrm-privacy-v1\0");
        h.update(&self.salt);
        for (t, on) in IdType::ALL.iter().zip(self.types) {
            if on {
                h.update(format!("\0type:{t}").as_bytes());
            }
        }
        for t in &self.traits {
            h.update(format!("\0trait:{t}").as_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b).max(1)
    }

    /// True when identifiers of type `id_type` (e.g. `email`) are hashed.
    pub fn hashes_type(&self, id_type: &str) -> bool {
        id_type
            .parse::<IdType>()
            .is_ok_and(|t| self.types[t.priority()])
    }

    /// The stored value of an identifier value of type `t`: its hash when the
    /// type is hashed, else the value itself. Shop ids keep their store, so that
    /// per-store limits still hold: `shop.io/sha256:…`.
    pub fn identifier_value(&self, t: IdType, value: &str) -> String {
        if !self.types[t.priority()] {
            return value.to_string();
        }
        match (t, value.split_once('/')) {
            (IdType::Shopify | IdType::Woocommerce, Some((store, id))) => {
                format!("{store}/{}", self.hash(id))
            }
            _ => self.hash(value),
        }
    }

    /// Replaces the identifier's value by its stored form (see [`Hasher::identifier_value`]).
    pub fn protect_identifier(&self, id: &mut Identifier) {
        if let Ok(t) = id.id_type.parse::<IdType>() {
            if self.types[t.priority()] {
                id.value = self.identifier_value(t, &id.value);
            }
        }
    }

    /// True when some trait is hashed.
    pub fn hashes_traits(&self) -> bool {
        !self.traits.is_empty()
    }

    /// Hashes the configured traits in place. A string trait named like an
    /// identifier type is normalised first when it is valid (so `email` hashes
    /// to the identifier's hash); other strings are trimmed; other values are
    /// hashed as their JSON text. Nulls stay null (they carry nothing).
    pub fn protect_traits(&self, traits: &mut Map<String, Value>, normalizer: &Normalizer) {
        for name in &self.traits {
            let Some(v) = traits.get_mut(name) else {
                continue;
            };
            let clear = match &*v {
                Value::Null => continue,
                Value::String(s) => match name.parse::<IdType>() {
                    Ok(t) => normalizer
                        .normalize_value(t, s)
                        .unwrap_or_else(|_| s.trim().to_string()),
                    Err(_) => s.trim().to_string(),
                },
                other => other.to_string(),
            };
            *v = Value::String(self.hash(&clear));
        }
    }
}

/// True for a value in hashed form: `sha256:` + 64 lower-case hex digits.
pub fn is_hash(value: &str) -> bool {
    value.strip_prefix(HASH_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The stored form of an identifier a person typed (CLI, API): normalised, then
/// hashed when `hasher` hashes its type, so that a lookup from the clear value
/// finds the hashed one. A value of a hashed type that is already a hash (copied
/// from a profile, e.g. `email:sha256:…` or `shopify:shop.io/sha256:…`) is taken
/// as it is.
pub fn lookup_identifier(
    hasher: Option<&Hasher>,
    normalizer: &Normalizer,
    id_type: &str,
    value: &str,
) -> Result<Identifier, crate::IdError> {
    let t: IdType = id_type.trim().parse()?;
    if let Some(h) = hasher.filter(|h| h.types[t.priority()]) {
        let v = value.trim();
        let hashed = match t {
            IdType::Shopify | IdType::Woocommerce => {
                v.split_once('/').is_some_and(|(_, id)| is_hash(id))
            }
            _ => is_hash(v),
        };
        if hashed {
            return Ok(Identifier::new(t, v));
        }
        let mut id = normalizer.normalize(t.as_str(), value)?;
        h.protect_identifier(&mut id);
        return Ok(id);
    }
    normalizer.normalize(t.as_str(), value)
}

/// `sha256:` + hex of SHA-256(salt ‖ 0x00 ‖ value): every salted hash of socialcrm
/// (stored identifiers and traits, the suppression list).
pub fn salted_hash(salt: &[u8], value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update([0u8]);
    h.update(value.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(h.finalize()))
}

/// Applies `policy` to one IP address value: the value to store, or `None` to
/// drop it.
pub fn protect_ip(policy: IpPolicy, value: &Value) -> Option<Value> {
    match policy {
        IpPolicy::Keep => Some(value.clone()),
        IpPolicy::Drop => None,
        IpPolicy::Truncate => {
            let ip = parse_ip(value.as_str()?)?;
            Some(Value::String(truncate_ip(ip).to_string()))
        }
    }
}

/// An address as SDKs and proxies write it: bare, `[v6]`, or with a port.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// IPv4 to its /24, IPv6 to its /48 (an IPv4-mapped IPv6 address as IPv4).
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4([a, b, c, 0].into())
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate_ip(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::V6([s[0], s[1], s[2], 0, 0, 0, 0, 0].into())
            }
        },
    }
}

/// Applies `policy` to `context.ip` in place; true when something changed.
pub fn protect_context_ip(policy: IpPolicy, context: &mut Map<String, Value>) -> bool {
    if policy == IpPolicy::Keep {
        return false;
    }
    let Some(v) = context.remove("ip") else {
        return false;
    };
    if let Some(kept) = protect_ip(policy, &v) {
        let changed = kept != v;
        context.insert("ip".to_string(), kept);
        return changed;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(types: &[&str], traits: &[&str], salt: &str) -> PrivacyConfig {
        PrivacyConfig {
            salt: salt.into(),
            hash_identifier_types: types.iter().map(|s| s.to_string()).collect(),
            hash_traits: traits.iter().map(|s| s.to_string()).collect(),
            ip: IpPolicy::default(),
        }
    }

    #[test]
    fn hashing_needs_a_salt_and_known_types() {
        assert!(
            cfg(&[], &[], "").validate().is_ok(),
            "nothing hashed, no salt needed"
        );
        let e = cfg(&["email"], &[], "").validate().expect_err("empty salt");
        assert!(e.contains("privacy.salt") && e.contains("empty"), "{e}");
        let e = cfg(&[], &["address"], "short-salt")
            .validate()
            .expect_err("short");
        assert!(
            e.contains("privacy.salt") && e.contains("10 characters"),
            "{e}"
        );
        assert!(
            !e.contains("short-salt"),
            "the salt itself is never printed: {e}"
        );
        let e = cfg(&["emial"], &[], "0123456789abcdef")
            .validate()
            .expect_err("type");
        assert!(
            e.contains("privacy.hash_identifier_types") && e.contains("emial"),
            "{e}"
        );
        let e = cfg(&[], &[" "], "0123456789abcdef")
            .validate()
            .expect_err("trait");
        assert!(e.contains("privacy.hash_traits"), "{e}");
        assert!(cfg(&["email", "phone"], &["address"], "0123456789abcdef")
            .validate()
            .is_ok());
        let shown = format!("{:?}", cfg(&["email"], &[], "0123456789abcdef"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn hashes_are_salted_and_deterministic() {
        let a = cfg(&["email"], &[], "salt-number-one!")
            .hasher()
            .expect("on");
        let b = cfg(&["email"], &[], "salt-number-two!")
            .hasher()
            .expect("on");
        let h = a.hash("ann@example.com");
        assert_eq!(h, a.hash("ann@example.com"));
        assert_ne!(h, b.hash("ann@example.com"));
        assert!(
            h.starts_with(HASH_PREFIX) && h.len() == HASH_PREFIX.len() + 64,
            "{h}"
        );
        // SHA-256("salt-number-one!" ‖ 0x00 ‖ "ann@example.com"), computed independently
        assert_eq!(
            h,
            "sha256:3a393542918471e9c601bf280c21f2015cd0a04e262425c2b510367c0be8563e"
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(cfg(&[], &[], "").hasher().is_none());
    }

    #[test]
    fn only_configured_types_are_hashed_and_shops_keep_their_store() {
        let h = cfg(&["email", "shopify"], &[], "0123456789abcdef")
            .hasher()
            .expect("on");
        let mut e = Identifier::new(IdType::Email, "ann@example.com");
        h.protect_identifier(&mut e);
        assert_eq!(e.value, h.hash("ann@example.com"));
        let mut u = Identifier::new(IdType::UserId, "u-1");
        h.protect_identifier(&mut u);
        assert_eq!(u.value, "u-1");
        let mut s = Identifier::new(IdType::Shopify, "shop.io/55");
        h.protect_identifier(&mut s);
        assert_eq!(s.value, format!("shop.io/{}", h.hash("55")));
    }

    #[test]
    fn lookups_from_the_clear_value_find_the_hash() {
        let h = cfg(&["email", "woocommerce"], &[], "0123456789abcdef")
            .hasher()
            .expect("on");
        let n = Normalizer::new(None).expect("normalizer");
        let look = |t: &str, v: &str| lookup_identifier(Some(&h), &n, t, v).expect("valid");
        let stored = look("email", " Ann@Example.COM");
        assert_eq!(stored.value, h.hash("ann@example.com"));
        assert_eq!(
            look("email", &stored.value),
            stored,
            "a hash is taken as is"
        );
        assert_eq!(look("user_id", "u-1").value, "u-1", "types not hashed");
        let shop = look("woocommerce", "https://Shop.io/42");
        assert_eq!(shop.value, format!("shop.io/{}", h.hash("42")));
        assert_eq!(look("woocommerce", &shop.value), shop);
        assert!(lookup_identifier(Some(&h), &n, "email", "not-an-email").is_err());
        assert!(lookup_identifier(Some(&h), &n, "email", "sha256:abc").is_err());
        assert_eq!(
            lookup_identifier(None, &n, "email", "ANN@example.com")
                .expect("ok")
                .value,
            "ann@example.com"
        );
    }

    #[test]
    fn traits_named_like_identifiers_hash_like_the_identifier() {
        let h = cfg(
            &["email"],
            &["email", "address", "phone"],
            "0123456789abcdef",
        )
        .hasher()
        .expect("on");
        let n = Normalizer::new(None).expect("normalizer");
        let mut t = json!({
            "email": " Ann@Example.COM ",
            "address": {"city": "Berlin"},
            "phone": null,
            "name": "Ann"
        })
        .as_object()
        .cloned()
        .expect("object");
        h.protect_traits(&mut t, &n);
        assert_eq!(t["email"], json!(h.hash("ann@example.com")));
        assert_eq!(t["address"], json!(h.hash(r#"{"city":"Berlin"}"#)));
        assert_eq!(t["phone"], Value::Null);
        assert_eq!(t["name"], json!("Ann"));
    }

    #[test]
    fn ip_policies() {
        let v4 = json!("203.0.113.77");
        let v6 = json!("2001:db8:85a3:8d3:1319:8a2e:370:7348");
        let t = IpPolicy::Truncate;
        assert_eq!(protect_ip(t, &v4), Some(json!("203.0.113.0")));
        assert_eq!(protect_ip(t, &v6), Some(json!("2001:db8:85a3::")));
        assert_eq!(
            protect_ip(t, &json!("::ffff:198.51.100.9")),
            Some(json!("198.51.100.0"))
        );
        assert_eq!(
            protect_ip(t, &json!("198.51.100.9:4431")),
            Some(json!("198.51.100.0"))
        );
        assert_eq!(
            protect_ip(t, &json!("[2001:db8::1]")),
            Some(json!("2001:db8::"))
        );
        assert_eq!(protect_ip(t, &json!("not an ip")), None);
        assert_eq!(protect_ip(t, &json!(12345)), None);
        assert_eq!(protect_ip(IpPolicy::Drop, &v4), None);
        assert_eq!(protect_ip(IpPolicy::Keep, &v4), Some(v4.clone()));

        let mut ctx = json!({"ip": "203.0.113.77", "locale": "de"})
            .as_object()
            .cloned()
            .expect("object");
        assert!(protect_context_ip(IpPolicy::Drop, &mut ctx));
        assert_eq!(
            ctx,
            json!({"locale": "de"}).as_object().cloned().expect("o")
        );
        assert!(
            !protect_context_ip(IpPolicy::Truncate, &mut ctx),
            "no ip, no change"
        );
    }
}
