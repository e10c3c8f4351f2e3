//! Keys that clients present (collector write keys, HTTP API keys): kept only as
//! SHA-256 digests and compared in constant time against every configured key, so
//! the time an answer takes says nothing about which key matched or how much of a
//! guess was right, whatever the keys' lengths.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(<redacted>)")
    }
}

/// Configured keys, each with what it grants (`T`: a name, a source, scopes).
#[derive(Clone)]
pub struct KeyRing<T> {
    entries: Vec<(KeyDigest, T)>,
}

impl<T> KeyRing<T> {
    pub fn new(keys: impl IntoIterator<Item = (String, T)>) -> KeyRing<T> {
        KeyRing {
            entries: keys
                .into_iter()
                .map(|(k, v)| (KeyDigest::of(&k), v))
                .collect(),
        }
    }

    /// What `presented` grants, if it is one of the keys. Every key is compared
    /// (no early exit); with duplicates the last one wins.
    pub fn find(&self, presented: &str) -> Option<&T> {
        let digest = KeyDigest::of(presented);
        let mut found = None;
        for (d, v) in &self.entries {
            if d.matches(&digest) {
                found = Some(v);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T> std::fmt::Debug for KeyRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing(<{} keys>)", self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_the_configured_keys() {
        let ring = KeyRing::new([
            ("alpha-key-1".to_string(), "a"),
            ("beta-key-22".to_string(), "b"),
        ]);
        assert_eq!(ring.find("alpha-key-1"), Some(&"a"));
        assert_eq!(ring.find("beta-key-22"), Some(&"b"));
        for wrong in [
            "",
            "alpha-key-",
            "alpha-key-12",
            "ALPHA-KEY-1",
            "beta-key-22 ",
        ] {
            assert_eq!(ring.find(wrong), None, "{wrong:?}");
        }
        assert_eq!(ring.len(), 2);
        assert!(!format!("{ring:?}").contains("alpha"));
        assert!(KeyDigest::of("x").matches(&KeyDigest::of("x")));
        assert!(!KeyDigest::of("x").matches(&KeyDigest::of("y")));
    }
}
