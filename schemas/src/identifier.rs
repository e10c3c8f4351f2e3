//! Identifiers (`type:value`) and their normalisation rules (DESIGN §3.1).
//!
//! Every comparison in the system happens on normalised values, so the same
//! person written `Ann@Example.COM ` and `ann@example.com` is one identifier.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("unknown identifier type `{0}`")]
    UnknownType(String),
    #[error("empty {0} value")]
    Empty(IdType),
    #[error("invalid {id_type}: {reason}")]
    Invalid { id_type: IdType, reason: String },
    #[error("blocked {id_type} value `{value}` (junk placeholder)")]
    Blocked { id_type: IdType, value: String },
    #[error("{id_type} value longer than {max} characters")]
    TooLong { id_type: IdType, max: usize },
}

impl IdError {
    /// Short machine-readable rule name, used in the identity ledger.
    pub fn rule(&self) -> &'static str {
        match self {
            IdError::UnknownType(_) => "unknown_type",
            IdError::Empty(_) => "empty",
            IdError::Invalid { .. } => "invalid",
            IdError::Blocked { .. } => "blocked_value",
            IdError::TooLong { .. } => "too_long",
        }
    }
}

/// Kinds of identifiers. The order of [`IdType::ALL`] is the priority order used
/// to pick an event's Kafka key (strongest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    UserId,
    Email,
    Phone,
    Shopify,
    Woocommerce,
    X,
    Mastodon,
    Telegram,
    Bluesky,
    Reddit,
    DeviceId,
    AnonymousId,
}

impl IdType {
    /// Every type, strongest first.
    pub const ALL: [IdType; 12] = [
        IdType::UserId,
        IdType::Email,
        IdType::Phone,
        IdType::Shopify,
        IdType::Woocommerce,
        IdType::X,
        IdType::Mastodon,
        IdType::Telegram,
        IdType::Bluesky,
        IdType::Reddit,
        IdType::DeviceId,
        IdType::AnonymousId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdType::UserId => "user_id",
            IdType::Email => "email",
            IdType::Phone => "phone",
            IdType::Shopify => "shopify",
            IdType::Woocommerce => "woocommerce",
            IdType::X => "x",
            IdType::Mastodon => "mastodon",
            IdType::Telegram => "telegram",
            IdType::Bluesky => "bluesky",
            IdType::Reddit => "reddit",
            IdType::DeviceId => "device_id",
            IdType::AnonymousId => "anonymous_id",
        }
    }

    /// Rank for priority comparisons: lower is stronger.
    pub fn priority(self) -> usize {
        Self::ALL
            .iter()
            .position(|t| *t == self)
            .unwrap_or(usize::MAX)
    }
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdType {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        IdType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| IdError::UnknownType(s.to_string()))
    }
}

/// One identifier as it travels in events: `{"type": "email", "value": "a@b.com"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub id_type: String,
    pub value: String,
}

impl Identifier {
    pub fn new(id_type: IdType, value: impl Into<String>) -> Self {
        Identifier {
            id_type: id_type.as_str().to_string(),
            value: value.into(),
        }
    }

    /// `type:value`, the written form used on the CLI and in keys.
    pub fn key(&self) -> String {
        // not format!: this runs several times per event on the pipeline's hot path
        let mut k = String::with_capacity(self.id_type.len() + 1 + self.value.len());
        k.push_str(&self.id_type);
        k.push(':');
        k.push_str(&self.value);
        k
    }

    /// Parses `type:value` (the value may itself contain `:`).
    pub fn parse_key(s: &str) -> Result<Identifier, IdError> {
        let (t, v) = s
            .split_once(':')
            .ok_or_else(|| IdError::UnknownType(s.to_string()))?;
        let id_type: IdType = t.trim().parse()?;
        Ok(Identifier::new(id_type, v))
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id_type, self.value)
    }
}

/// Longest value accepted for any identifier.
pub const MAX_ID_LEN: usize = 256;

/// Values that mean "no identifier" in the wild; never linked (compared after
/// normalisation and lower-casing).
pub const DEFAULT_BLOCKED_VALUES: &[&str] = &[
    "",
    "null",
    "nil",
    "undefined",
    "anonymous",
    "none",
    "unknown",
    "n/a",
    "na",
    "nan",
    "0",
    "-1",
    "[object object]",
    "guest",
    "test",
    "00000000-0000-0000-0000-000000000000",
];

/// Normalises identifiers by type; holds the settings normalisation depends on.
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    default_region: Option<phonenumber::country::Id>,
}

impl Normalizer {
    /// `default_region` is an ISO 3166 alpha-2 code (`US`, `DE`) used for phone
    /// numbers written without a country code.
    pub fn new(default_region: Option<&str>) -> Result<Self, IdError> {
        let default_region = match default_region {
            None | Some("") => None,
            Some(r) => Some(
                r.to_ascii_uppercase()
                    .parse()
                    .map_err(|_| IdError::Invalid {
                        id_type: IdType::Phone,
                        reason: format!("unknown default phone region `{r}`"),
                    })?,
            ),
        };
        Ok(Normalizer { default_region })
    }

    /// Normalises an identifier given as separate type and value strings.
    pub fn normalize(&self, id_type: &str, value: &str) -> Result<Identifier, IdError> {
        let t: IdType = id_type.trim().parse()?;
        let v = self.normalize_value(t, value)?;
        Ok(Identifier::new(t, v))
    }

    /// Normalises a value of a known type; rejects junk placeholders.
    pub fn normalize_value(&self, t: IdType, value: &str) -> Result<String, IdError> {
        let raw = value.trim();
        if raw.is_empty() {
            return Err(IdError::Empty(t));
        }
        if raw.chars().count() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                id_type: t,
                max: MAX_ID_LEN,
            });
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid(t, "contains control characters"));
        }
        let lower = raw.to_lowercase();
        if is_junk(&lower) {
            return Err(IdError::Blocked {
                id_type: t,
                value: raw.to_string(),
            });
        }
        let out = match t {
            IdType::Email => normalize_email(&lower)?,
            IdType::Phone => self.normalize_phone(raw)?,
            IdType::UserId | IdType::AnonymousId | IdType::DeviceId => raw.to_string(),
            IdType::X | IdType::Telegram => numeric(t, raw)?,
            IdType::Mastodon => normalize_mastodon(&lower)?,
            IdType::Bluesky => normalize_bluesky(raw)?,
            IdType::Reddit => normalize_reddit(&lower)?,
            IdType::Shopify | IdType::Woocommerce => normalize_shop(t, &lower)?,
        };
        Ok(out)
    }

    fn normalize_phone(&self, raw: &str) -> Result<String, IdError> {
        // parsing runs regexes (~4 µs, and ~9 µs more to validate a US number); the
        // same people send the same numbers again and again, and a connector's
        // mapping and the validation after it run on different threads, so results
        // are cached once per process (bounded)
        let key = (self.default_region, raw.to_string());
        let shard = PHONE_CACHE.shard(&key);
        if let Some(hit) = lock(shard).get(&key) {
            return hit.clone();
        }
        let result = self.parse_phone(raw);
        let mut cache = lock(shard);
        if cache.len() >= PHONE_CACHE_SHARD_MAX {
            cache.clear();
        }
        if let Ok(e164) = &result {
            // the stored form normalises to itself under every default region
            // (`parse_phone` refuses numbers for which it would not), and it is
            // what the validation after a connector's mapping sees
            if e164 != raw {
                cache.insert((self.default_region, e164.clone()), Ok(e164.clone()));
            }
        }
        cache.insert(key, result.clone());
        result
    }

    fn parse_phone(&self, raw: &str) -> Result<String, IdError> {
        let cleaned: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '/'))
            .collect();
        let cleaned = match cleaned.strip_prefix("00") {
            Some(rest) if !cleaned.starts_with('+') => format!("+{rest}"),
            _ => cleaned,
        };
        if !cleaned.starts_with('+') && self.default_region.is_none() {
            return Err(invalid(
                IdType::Phone,
                "no country code and no default region configured",
            ));
        }
        // A number with its country code is read the same whatever the default
        // region: the phonenumber crate would read it with the default region's
        // national prefix (a US default strips the `1` of `+44 1632 ...`).
        let region = if cleaned.starts_with('+') {
            None
        } else {
            self.default_region
        };
        let e164 = to_e164(region, &cleaned)?;
        // The stored form must read back as itself (normalisation is idempotent and
        // the same under every default region); a few numbers written with a
        // national prefix inside (`8 800 ...` in Russia) do not, and are refused
        // rather than stored in a form nothing else reproduces.
        if e164 != cleaned && to_e164(None, &e164).as_deref() != Ok(e164.as_str()) {
            return Err(invalid(
                IdType::Phone,
                "ambiguous number: its E.164 form reads as another number",
            ));
        }
        if e164.trim_start_matches('+').chars().all(|c| c == '0') {
            return Err(IdError::Blocked {
                id_type: IdType::Phone,
                value: raw.to_string(),
            });
        }
        Ok(e164)
    }
}

/// The E.164 form of a cleaned number (`region` for numbers without `+`).
fn to_e164(region: Option<phonenumber::country::Id>, cleaned: &str) -> Result<String, IdError> {
    let parsed = phonenumber::parse(region, cleaned)
        .map_err(|e| invalid(IdType::Phone, &format!("not a phone number ({e})")))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(invalid(IdType::Phone, "not a valid number for its region"));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// Phone parse results by (default region, raw input).
type PhoneKey = (Option<phonenumber::country::Id>, String);
type PhoneShard = std::sync::Mutex<std::collections::HashMap<PhoneKey, Result<String, IdError>>>;

/// Entries per shard before the shard is emptied (16 shards: ~200,000 numbers).
const PHONE_CACHE_SHARD_MAX: usize = 12_500;

/// The process-wide phone cache, in shards so that threads rarely wait on each other.
struct PhoneCache([PhoneShard; 16]);

impl PhoneCache {
    fn shard(&self, key: &PhoneKey) -> &PhoneShard {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        &self.0[(h % 16) as usize]
    }
}

static PHONE_CACHE: std::sync::LazyLock<PhoneCache> =
    std::sync::LazyLock::new(|| PhoneCache(std::array::from_fn(|_| PhoneShard::default())));

/// A shard's map; a thread that panicked while holding it left only a cache behind.
fn lock(
    shard: &PhoneShard,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<PhoneKey, Result<String, IdError>>> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True for placeholder values that must never be linked.
/// (Case-insensitive; no allocation: this runs for every identifier of every event.)
pub fn is_junk(value: &str) -> bool {
    if value.len() <= 36
        && DEFAULT_BLOCKED_VALUES
            .iter()
            .any(|b| b.len() == value.len() && b.eq_ignore_ascii_case(value))
    {
        return true;
    }
    // all zeros (with separators), e.g. `0000`, `000-000`
    let mut any = false;
    for c in value.chars().filter(|c| c.is_alphanumeric()) {
        if c != '0' {
            return false;
        }
        any = true;
    }
    any
}

fn invalid(t: IdType, reason: &str) -> IdError {
    IdError::Invalid {
        id_type: t,
        reason: reason.to_string(),
    }
}

fn normalize_email(lower: &str) -> Result<String, IdError> {
    let e = |r: &str| invalid(IdType::Email, r);
    let lower = lower.strip_prefix("mailto:").unwrap_or(lower);
    let (local, domain) = lower.rsplit_once('@').ok_or_else(|| e("missing @"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(e("local part empty or longer than 64"));
    }
    if local.contains('@') {
        return Err(e("more than one @"));
    }
    if lower.chars().any(char::is_whitespace) {
        return Err(e("contains whitespace"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(e("misplaced dot in local part"));
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok {
        return Err(e("invalid character in local part"));
    }
    validate_domain(domain).map_err(|r| e(&r))?;
    Ok(format!("{local}@{domain}"))
}

fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.len() > 253 || !domain.contains('.') {
        return Err("domain must contain a dot".into());
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("empty or over-long domain label".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with -".into());
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("invalid character in domain".into());
        }
    }
    Ok(())
}

fn numeric(t: IdType, raw: &str) -> Result<String, IdError> {
    let digits = raw.trim_start_matches('+');
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 20 {
        return Err(invalid(t, "must be a numeric user id"));
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Err(IdError::Blocked {
            id_type: t,
            value: raw.to_string(),
        });
    }
    Ok(trimmed.to_string())
}

fn normalize_mastodon(lower: &str) -> Result<String, IdError> {
    let s = lower.strip_prefix('@').unwrap_or(lower);
    let (user, domain) = s
        .split_once('@')
        .ok_or_else(|| invalid(IdType::Mastodon, "expected @user@instance.tld"))?;
    if user.is_empty()
        || user.len() > 64
        || !user
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return Err(invalid(IdType::Mastodon, "invalid user name"));
    }
    validate_domain(domain).map_err(|r| invalid(IdType::Mastodon, &r))?;
    Ok(format!("@{user}@{domain}"))
}

fn normalize_bluesky(raw: &str) -> Result<String, IdError> {
    let lower_prefix = raw.get(..4).map(str::to_ascii_lowercase);
    if lower_prefix.as_deref() != Some("did:") {
        return Err(invalid(
            IdType::Bluesky,
            "expected a DID (did:plc:... or did:web:...)",
        ));
    }
    let rest = &raw[4..];
    let (method, id) = rest
        .split_once(':')
        .ok_or_else(|| invalid(IdType::Bluesky, "expected did:<method>:<id>"))?;
    let method = method.to_ascii_lowercase();
    if method.is_empty() || id.is_empty() || !method.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(invalid(IdType::Bluesky, "expected did:<method>:<id>"));
    }
    if method == "plc" || method == "web" {
        // did:plc is base32-lower; did:web is a host name: both case-insensitive.
        return Ok(format!("did:{method}:{}", id.to_ascii_lowercase()));
    }
    Ok(format!("did:{method}:{id}"))
}

fn normalize_reddit(lower: &str) -> Result<String, IdError> {
    let s = lower.trim_start_matches('/');
    let s = s.strip_prefix("u/").unwrap_or(s);
    if s.len() < 3
        || s.len() > 20
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(IdType::Reddit, "user names are 3-20 of [a-z0-9_-]"));
    }
    Ok(s.to_string())
}

fn normalize_shop(t: IdType, lower: &str) -> Result<String, IdError> {
    let (site, id) = lower
        .rsplit_once('/')
        .ok_or_else(|| invalid(t, "expected <store>/<customer id>"))?;
    let site = site
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    // a Shopify GraphQL gid (gid://shopify/Customer/123) carries the id last
    let site = site.split("/gid:").next().unwrap_or(site);
    validate_domain(site)
        .or_else(|_| {
            // shop handles without domain (`my-store`) are accepted for Shopify
            if t == IdType::Shopify
                && !site.is_empty()
                && site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                Ok(())
            } else {
                Err("store must be a host name".to_string())
            }
        })
        .map_err(|r| invalid(t, &r))?;
    let id = numeric(t, id)?;
    Ok(format!("{site}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str, input: &str, expected: &str) {
        let n = Normalizer::new(Some("US")).expect("region");
        let got = n.normalize(t, input);
        assert_eq!(
            got.as_ref().map(|i| i.value.as_str()),
            Ok(expected),
            "{t}:{input:?}"
        );
    }

    fn bad(t: &str, input: &str, rule: &str) {
        let n = Normalizer::new(Some("US")).expect("region");
        match n.normalize(t, input) {
            Ok(v) => panic!("{t}:{input:?} should be rejected, got {v}"),
            Err(e) => assert_eq!(e.rule(), rule, "{t}:{input:?} -> {e}"),
        }
    }

    #[test]
    fn normalisation_table() {
        let table = [
            ("email", " Ann.Lee@Example.COM ", "ann.lee@example.com"),
            ("email", "mailto:bob@shop.io", "bob@shop.io"),
            (
                "email",
                "o'neil+tag@mail.example.org",
                "o'neil+tag@mail.example.org",
            ),
            ("phone", "+1 (415) 555-0123", "+14155550123"),
            ("phone", "415.555.0123", "+14155550123"),
            ("phone", "0049 30 901820", "+4930901820"),
            ("phone", "+44 20 7946 0958", "+442079460958"),
            ("user_id", "  U-123 ", "U-123"),
            ("anonymous_id", "a1b2c3", "a1b2c3"),
            (
                "mastodon",
                "@Alice@Mastodon.Social",
                "@alice@mastodon.social",
            ),
            ("mastodon", "bob@fosstodon.org", "@bob@fosstodon.org"),
            ("x", "0012345", "12345"),
            ("telegram", "987654321", "987654321"),
            ("bluesky", "did:plc:ABCdef123", "did:plc:abcdef123"),
            ("reddit", "/u/Some_User", "some_user"),
            (
                "shopify",
                "My-Store.myshopify.com/42",
                "my-store.myshopify.com/42",
            ),
            ("shopify", "my-store/42", "my-store/42"),
            (
                "woocommerce",
                "https://Shop.Example.com/7",
                "shop.example.com/7",
            ),
        ];
        for (t, i, o) in table {
            ok(t, i, o);
        }
    }

    #[test]
    fn rejection_table() {
        let table = [
            ("email", "not-an-email", "invalid"),
            ("email", "a@b", "invalid"),
            ("email", "a b@c.com", "invalid"),
            ("email", "a@@c.com", "invalid"),
            ("email", "  ", "empty"),
            ("email", "null", "blocked_value"),
            ("user_id", "undefined", "blocked_value"),
            ("user_id", "0", "blocked_value"),
            ("user_id", "-1", "blocked_value"),
            (
                "anonymous_id",
                "00000000-0000-0000-0000-000000000000",
                "blocked_value",
            ),
            ("anonymous_id", "[object Object]", "blocked_value"),
            ("user_id", "0000", "blocked_value"),
            ("phone", "12345", "invalid"),
            ("phone", "+1 000 000 0000", "invalid"),
            ("x", "@handle", "invalid"),
            ("mastodon", "alice", "invalid"),
            ("bluesky", "alice.bsky.social", "invalid"),
            ("shopify", "42", "invalid"),
            ("fax", "123", "unknown_type"),
            ("user_id", "line\nbreak", "invalid"),
        ];
        for (t, i, r) in table {
            bad(t, i, r);
        }
        let long = "x".repeat(300);
        bad("user_id", &long, "too_long");
    }

    #[test]
    fn phone_without_region_is_rejected_with_reason() {
        let n = Normalizer::default();
        let err = n.normalize("phone", "415 555 0123").expect_err("no region");
        assert!(err.to_string().contains("default region"), "{err}");
        assert_eq!(
            n.normalize("phone", "+14155550123").map(|i| i.value),
            Ok("+14155550123".to_string())
        );
    }

    #[test]
    fn normalisation_is_idempotent() {
        let n = Normalizer::new(Some("US")).expect("region");
        for (t, v) in [
            ("email", "Ann@Example.com"),
            ("phone", "(415) 555-0123"),
            ("mastodon", "Alice@Mastodon.Social"),
            (
                "shopify",
                "https://x.myshopify.com/gid://shopify/Customer/55",
            ),
        ] {
            let once = n.normalize(t, v).expect("valid");
            let twice = n.normalize(t, &once.value).expect("still valid");
            assert_eq!(once, twice);
        }
    }

    /// Found by the `normalize` fuzz target: `0 0780 01818479` with a US default
    /// region became `+78001818479`, which a normaliser without a default region
    /// (or this one, again) refused; and a number with its country code was read
    /// with the default region's national prefix.
    #[test]
    fn phone_normal_forms_are_fixed_points_under_every_region() {
        let us = Normalizer::new(Some("US")).expect("region");
        let none = Normalizer::default();
        let ru = Normalizer::new(Some("RU")).expect("region");
        for raw in [
            "0  0780  01818479",
            "+7 800 181 84 79",
            "8 800 181 84 79",
            "+44 113 496 0000",
            "+44 (0) 20 7946 0958",
            "(415) 555-0123",
            "+1 415 555 0123",
        ] {
            for n in [&us, &none, &ru] {
                let Ok(v) = n.normalize_value(IdType::Phone, raw) else {
                    continue;
                };
                for m in [&us, &none, &ru] {
                    // uncached: the cache holds every normal form as a fixed point
                    assert_eq!(m.parse_phone(&v).as_ref(), Ok(&v), "{raw} -> {v}");
                    assert_eq!(
                        m.normalize_value(IdType::Phone, &v).as_ref(),
                        Ok(&v),
                        "{raw} -> {v}"
                    );
                }
            }
        }
        // a country code is read the same whatever the default region
        for n in [&us, &none, &ru] {
            assert_eq!(
                n.normalize_value(IdType::Phone, "+44 113 496 0000")
                    .as_deref(),
                Ok("+441134960000")
            );
        }
    }

    /// The process-wide cache answers what parsing answers, for the raw inputs and
    /// for the normal forms it stores beside them, under each default region.
    #[test]
    fn cached_phone_answers_are_the_parsed_ones() {
        let regions = [
            Normalizer::new(Some("US")).expect("region"),
            Normalizer::default(),
            Normalizer::new(Some("DE")).expect("region"),
        ];
        let raws = [
            "030 1234567",
            "+49 30 1234567",
            "(212) 555-0199",
            "8 800 181 84 79",
            "0049 30 1234567",
            "12345",
        ];
        for _ in 0..2 {
            for n in &regions {
                for raw in raws {
                    let cached = n.normalize_value(IdType::Phone, raw);
                    assert_eq!(cached, n.parse_phone(raw), "{raw}");
                    if let Ok(v) = cached {
                        for m in &regions {
                            assert_eq!(
                                m.normalize_value(IdType::Phone, &v),
                                m.parse_phone(&v),
                                "{raw} -> {v}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn priority_orders_strongest_first() {
        assert!(IdType::UserId.priority() < IdType::Email.priority());
        assert!(IdType::Email.priority() < IdType::AnonymousId.priority());
        assert_eq!(
            Identifier::parse_key("email:a:b@c.d").map(|i| i.value),
            Ok("a:b@c.d".into())
        );
    }
}
