//! The canonical event (DESIGN §3.2): what every connector emits on `crm.events`
//! and the only input the pipeline understands.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::identifier::{IdError, IdType, Identifier, Normalizer};

/// Current `schema_version` of canonical events.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest encoded event the pipeline accepts (bytes).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// How far in the future `occurred_at` may be (clock skew allowance).
pub const MAX_FUTURE_SKEW_HOURS: i64 = 24;

/// Where an interaction happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Social,
    Web,
    Shop,
    Support,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Social => "social",
            Channel::Web => "web",
            Channel::Shop => "shop",
            Channel::Support => "support",
            Channel::Email => "email",
        }
    }
}

/// Money attached to orders and refunds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revenue {
    pub amount: f64,
    /// ISO 4217 code, upper case (`EUR`).
    pub currency: String,
}

/// A JSON object kept as its raw text. Event facts (`properties`, `context`) pass
/// through the pipeline to storage without being built into a tree of values, which
/// would cost more than everything else the pipeline does with an event.
#[derive(Clone)]
pub struct JsonObject(Box<RawValue>);

impl JsonObject {
    /// `{}`.
    pub fn empty() -> Self {
        JsonObject::from_map(&Map::new())
    }

    pub fn from_map(m: &Map<String, Value>) -> Self {
        // serialising a map of JSON values cannot fail
        let text = serde_json::to_string(m).unwrap_or_else(|_| "{}".to_string());
        JsonObject(
            RawValue::from_string(text)
                .unwrap_or_else(|_| RawValue::from_string("{}".to_string()).expect("`{}` is JSON")),
        )
    }

    /// The object with its top-level member `key` changed by `change` (given the
    /// member's value if there is one; `None` back removes it), without building
    /// the other members into values: their text is copied. A changed object is
    /// written with its keys sorted, as `from_map` writes a `Map`; when `change`
    /// gives back what it was given, the object itself comes back, borrowed. `None`
    /// when the text is not an object of unique keys that this can rewrite (use
    /// [`Self::to_map`]).
    pub fn with_member(
        &self,
        key: &str,
        change: impl FnOnce(Option<Value>) -> Option<Value>,
    ) -> Option<std::borrow::Cow<'_, JsonObject>> {
        let mut members = top_members(self.0.get())?;
        members.sort_by(|a, b| a.0.cmp(&b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let old = match members.iter().find(|(k, _)| k == key) {
            Some((_, raw)) => Some(serde_json::from_str::<Value>(raw.get()).ok()?),
            None => None,
        };
        let new = change(old.clone());
        if new == old {
            return Some(std::borrow::Cow::Borrowed(self));
        }
        let new_raw = match new {
            Some(v) => Some(serde_json::value::to_raw_value(&v).ok()?),
            None => None,
        };
        let mut out: Vec<(&str, &RawValue)> = members
            .iter()
            .filter(|(k, _)| k != key)
            .map(|(k, raw)| (k.as_ref(), *raw))
            .collect();
        if let Some(raw) = &new_raw {
            // the members stay sorted
            let at = out.partition_point(|(k, _)| *k < key);
            out.insert(at, (key, raw));
        }
        // written as serde_json writes a map of raw values, without checking the
        // text again
        struct Members<'a>(&'a [(&'a str, &'a RawValue)]);
        impl Serialize for Members<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        serde_json::value::to_raw_value(&Members(&out))
            .ok()
            .map(|raw| std::borrow::Cow::Owned(JsonObject(raw)))
    }

    /// The object as values (parses the text).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The JSON text, as received.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// True for `{}` (with any inner whitespace).
    pub fn is_empty(&self) -> bool {
        let t = self.0.get().trim();
        t.len() >= 2 && t[1..t.len() - 1].trim().is_empty()
    }
}

/// The top-level members of a JSON object's text: keys (borrowed unless they
/// have escapes) and the values' text, in order, duplicates included; `None`
/// when the text is not an object.
fn top_members(text: &str) -> Option<Vec<(std::borrow::Cow<'_, str>, &RawValue)>> {
    use crate::borrowed::Str;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use std::borrow::Cow;
    struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Members<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                    let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                    while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
                        out.push((k, m.next_value::<&'de RawValue>()?));
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Members<'_>>(text).ok().map(|m| m.0)
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject::empty()
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get() || self.to_map() == other.to_map()
    }
}

impl std::fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for JsonObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("expected a JSON object"));
        }
        Ok(JsonObject(raw))
    }
}

/// One canonical event. Field docs are the contract; `schemas/json/canonical-event.v1.schema.json`
/// is its machine-readable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalEvent {
    pub schema_version: u32,
    /// Deterministic from the source, so a replay yields the same id.
    pub event_id: String,
    /// Connector instance that produced the event (`web`, `mastodon:mastodon.social`).
    pub source: String,
    pub channel: Channel,
    /// `identify`, `track`, `page`, `post`, `mention`, `reply`, `reshare`, `like`,
    /// `follow`, `message`, `order`, `refund`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The actor's identifiers, at least one.
    pub identifiers: Vec<Identifier>,
    /// For interactions: who was mentioned, replied to, reshared, followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<Identifier>,
    /// Identifiers the actor *claims* but no source vouches for (an address in a
    /// social bio, a handle typed in a form). They link only where
    /// `identity.trusted_claims` says so; otherwise they are recorded as candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimed: Vec<Identifier>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub properties: JsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Revenue>,
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub context: JsonObject,
}

/// Why an event was refused. The text is what lands in `crm.dlq`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("event larger than {max} bytes ({size})")]
    TooLarge { size: usize, max: usize },
    #[error("not valid UTF-8: {0}")]
    NotUtf8(String),
    #[error("not a canonical event: {0}")]
    Malformed(String),
    #[error("unsupported schema_version {0} (expected {SCHEMA_VERSION})")]
    SchemaVersion(u32),
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("no usable identifier: {0}")]
    NoIdentifier(String),
}

impl EventError {
    /// Machine-readable class for metrics and the DLQ.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::TooLarge { .. } => "too_large",
            EventError::NotUtf8(_) => "not_utf8",
            EventError::Malformed(_) => "malformed",
            EventError::SchemaVersion(_) => "schema_version",
            EventError::Field { .. } => "invalid_field",
            EventError::NoIdentifier(_) => "no_identifier",
        }
    }
}

/// An identifier dropped during validation, with the reason (recorded in the ledger).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedIdentifier {
    pub original: Identifier,
    pub error: IdError,
}

fn field(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Field {
        field,
        reason: reason.into(),
    }
}

fn check_token(name: &'static str, v: &str, max: usize) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(field(name, "must not be empty"));
    }
    if v.len() > max {
        return Err(field(name, format!("longer than {max} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(field(name, "contains control characters"));
    }
    Ok(())
}

impl CanonicalEvent {
    /// A web event that carries nothing but its identifiers, received when it
    /// occurred: for tools (identity simulation), benchmarks and tests.
    pub fn bare(
        event_id: impl Into<String>,
        source: &str,
        event_type: &str,
        at: DateTime<Utc>,
        identifiers: Vec<Identifier>,
    ) -> CanonicalEvent {
        CanonicalEvent {
            schema_version: crate::SCHEMA_VERSION,
            event_id: event_id.into(),
            source: source.to_string(),
            channel: Channel::Web,
            event_type: event_type.to_string(),
            name: None,
            occurred_at: at,
            received_at: at,
            identifiers,
            target: Vec::new(),
            claimed: Vec::new(),
            traits: Map::new(),
            properties: JsonObject::default(),
            revenue: None,
            context: JsonObject::default(),
        }
    }

    /// Parses raw bytes from Kafka, checks every field, and normalises identifiers.
    /// Returns the event with normalised `identifiers`/`target` plus the identifiers
    /// that had to be dropped.
    pub fn parse_and_validate(
        bytes: &[u8],
        normalizer: &Normalizer,
        now: DateTime<Utc>,
    ) -> Result<(CanonicalEvent, Vec<RejectedIdentifier>), EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: bytes.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| EventError::NotUtf8(e.to_string()))?;
        let mut ev: CanonicalEvent =
            serde_json::from_str(text).map_err(|e| EventError::Malformed(e.to_string()))?;
        let rejected = ev.validate_and_normalize(normalizer, now)?;
        Ok((ev, rejected))
    }

    /// Semantic checks that serde cannot express; normalises identifiers in place.
    pub fn validate_and_normalize(
        &mut self,
        normalizer: &Normalizer,
        now: DateTime<Utc>,
    ) -> Result<Vec<RejectedIdentifier>, EventError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(EventError::SchemaVersion(self.schema_version));
        }
        check_token("event_id", &self.event_id, 512)?;
        check_token("source", &self.source, 128)?;
        check_token("type", &self.event_type, 64)?;
        if !self
            .event_type
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(field("type", "must match ^[a-z0-9_]+$"));
        }
        if let Some(name) = &self.name {
            if name.len() > 512 {
                return Err(field("name", "longer than 512 bytes"));
            }
        }
        if self.occurred_at > now + Duration::hours(MAX_FUTURE_SKEW_HOURS) {
            return Err(field(
                "occurred_at",
                format!("more than {MAX_FUTURE_SKEW_HOURS}h in the future"),
            ));
        }
        if self.occurred_at.timestamp() < 0 || self.received_at.timestamp() < 0 {
            return Err(field("occurred_at", "before 1970-01-01"));
        }
        if let Some(r) = &self.revenue {
            if !r.amount.is_finite() {
                return Err(field("revenue.amount", "must be a finite number"));
            }
            if r.currency.len() != 3 || !r.currency.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(field(
                    "revenue.currency",
                    "must be an ISO 4217 code like EUR",
                ));
            }
        }
        if self.identifiers.is_empty() {
            return Err(EventError::NoIdentifier("identifiers is empty".into()));
        }
        if self.identifiers.len() > 64 || self.target.len() > 64 {
            return Err(field("identifiers", "more than 64 entries"));
        }
        let mut rejected = Vec::new();
        self.identifiers = normalize_list(&self.identifiers, normalizer, &mut rejected);
        self.target = normalize_list(&self.target, normalizer, &mut rejected);
        if self.claimed.len() > 64 {
            return Err(field("claimed", "more than 64 entries"));
        }
        self.claimed = normalize_list(&self.claimed, normalizer, &mut rejected);
        if self.identifiers.is_empty() {
            let reasons: Vec<String> = rejected.iter().map(|r| r.error.to_string()).collect();
            return Err(EventError::NoIdentifier(reasons.join("; ")));
        }
        Ok(rejected)
    }

    /// The actor's strongest usable identifier: the Kafka key, so one actor's events
    /// stay in order. Junk placeholders (`undefined`, ...) are never the key.
    pub fn partition_key(&self) -> String {
        self.identifiers
            .iter()
            .filter(|i| !crate::identifier::is_junk(i.value.trim()))
            .min_by_key(|i| {
                let p = i
                    .id_type
                    .parse::<IdType>()
                    .map(IdType::priority)
                    .unwrap_or(usize::MAX);
                (p, i.value.clone())
            })
            .map(Identifier::key)
            .unwrap_or_else(|| self.event_id.clone())
    }
}

fn normalize_list(
    list: &[Identifier],
    normalizer: &Normalizer,
    rejected: &mut Vec<RejectedIdentifier>,
) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = Vec::with_capacity(list.len());
    for id in list {
        match normalizer.normalize(&id.id_type, &id.value) {
            Ok(n) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Err(error) => rejected.push(RejectedIdentifier {
                original: id.clone(),
                error,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_member_changes_one_member_and_copies_the_others_as_text() {
        let o: JsonObject =
            serde_json::from_str(r#"{"z": {"a" : [1, 2.50]}, "ip": "203.0.113.7", "b": "\u00e9"}"#)
                .expect("object");
        let seen = std::cell::RefCell::new(None);
        let changed = o
            .with_member("ip", |v| {
                *seen.borrow_mut() = v;
                Some(Value::String("203.0.113.0".into()))
            })
            .expect("rewritten");
        assert_eq!(*seen.borrow(), Some(Value::String("203.0.113.7".into())));
        // sorted keys as from_map writes them; other members keep their text
        assert_eq!(
            changed.as_str(),
            r#"{"b":"\u00e9","ip":"203.0.113.0","z":{"a" : [1, 2.50]}}"#
        );
        let mut want = o.to_map();
        want.insert("ip".into(), Value::String("203.0.113.0".into()));
        assert_eq!(changed.to_map(), want);
        // None removes it; an absent member is given as None
        let dropped = o.with_member("ip", |_| None).expect("rewritten");
        assert!(!dropped.to_map().contains_key("ip"));
        assert_eq!(dropped.to_map().len(), 2);
        let absent = dropped.with_member("ip", |v| v).expect("rewritten");
        assert_eq!(absent.to_map(), dropped.to_map());
        // a member given back unchanged leaves the text as it was (unsorted)
        let same = o.with_member("ip", |v| v).expect("unchanged");
        assert_eq!(same.as_str(), o.as_str());
        // an escaped key is the key it spells
        let esc: JsonObject =
            serde_json::from_str(r#"{"\u0069p": "203.0.113.7", "a\"b": 1}"#).expect("object");
        let changed = esc
            .with_member("ip", |v| {
                assert_eq!(v, Some(Value::String("203.0.113.7".into())));
                None
            })
            .expect("rewritten");
        assert_eq!(changed.as_str(), r#"{"a\"b":1}"#);
        // duplicate keys and non-objects are not rewritten
        let dup: JsonObject =
            serde_json::from_str(r#"{"ip": "1.2.3.4", "ip": "5.6.7.8"}"#).expect("object");
        assert!(dup.with_member("ip", |_| None).is_none());
    }

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "event_id": "web:m-1",
            "source": "web",
            "channel": "web",
            "type": "identify",
            "occurred_at": "2026-11-01T10:00:00Z",
            "received_at": "2026-11-01T10:00:01Z",
            "identifiers": [{"type": "email", "value": " Ann@Example.com"}, {"type": "user_id", "value": "null"}],
            "traits": {"name": "Ann"}
        })
    }

    fn parse(
        v: &serde_json::Value,
    ) -> Result<(CanonicalEvent, Vec<RejectedIdentifier>), EventError> {
        let now = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        CanonicalEvent::parse_and_validate(
            &serde_json::to_vec(v).expect("json"),
            &Normalizer::default(),
            now,
        )
    }

    #[test]
    fn normalises_and_reports_rejected_identifiers() {
        let (ev, rejected) = parse(&sample()).expect("valid");
        assert_eq!(
            ev.identifiers,
            vec![Identifier::new(IdType::Email, "ann@example.com")]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].error.rule(), "blocked_value");
        assert_eq!(ev.partition_key(), "email:ann@example.com");
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn rejects_with_reasons() {
        let cases: Vec<(Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
            (
                Box::new(|v| v["schema_version"] = 2.into()),
                "schema_version",
            ),
            (
                Box::new(|v| v["identifiers"] = serde_json::json!([])),
                "no_identifier",
            ),
            (
                Box::new(|v| {
                    v["identifiers"] = serde_json::json!([{"type":"email","value":"undefined"}])
                }),
                "no_identifier",
            ),
            (Box::new(|v| v["channel"] = "fax".into()), "malformed"),
            (
                Box::new(|v| v["occurred_at"] = "yesterday".into()),
                "malformed",
            ),
            (
                Box::new(|v| v["occurred_at"] = "2030-01-01T00:00:00Z".into()),
                "invalid_field",
            ),
            (
                Box::new(|v| v["type"] = "Not Valid".into()),
                "invalid_field",
            ),
            (Box::new(|v| v["unexpected"] = 1.into()), "malformed"),
            (
                Box::new(|v| v["revenue"] = serde_json::json!({"amount": 1.0, "currency": "euro"})),
                "invalid_field",
            ),
            (Box::new(|v| v["event_id"] = "".into()), "invalid_field"),
            (
                Box::new(|v| v["properties"] = serde_json::json!([1])),
                "malformed",
            ),
            (Box::new(|v| v["context"] = "x".into()), "malformed"),
        ];
        for (mutate, code) in cases {
            let mut v = sample();
            mutate(&mut v);
            let err = parse(&v).expect_err("must be rejected");
            assert_eq!(err.code(), code, "{v} -> {err}");
        }
    }

    #[test]
    fn event_facts_pass_through_as_sent() {
        let mut v = sample();
        v["properties"] = serde_json::json!({"url": "https://x.io/?a=1", "n": [1, 2.5, null]});
        let (ev, _) = parse(&v).expect("valid");
        assert_eq!(
            ev.properties.to_map()["n"],
            serde_json::json!([1, 2.5, null])
        );
        assert!(ev.context.is_empty() && !ev.properties.is_empty());
        let back: serde_json::Value = serde_json::to_value(&ev).expect("json");
        assert_eq!(back["properties"], v["properties"]);
        assert!(back.get("context").is_none());
    }

    #[test]
    fn rejects_non_utf8_and_oversized() {
        let now = Utc::now();
        let n = Normalizer::default();
        assert_eq!(
            CanonicalEvent::parse_and_validate(&[0xff, 0xfe, b'{'], &n, now)
                .expect_err("bad")
                .code(),
            "not_utf8"
        );
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            CanonicalEvent::parse_and_validate(&big, &n, now)
                .expect_err("big")
                .code(),
            "too_large"
        );
    }
}
