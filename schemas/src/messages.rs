//! Messages the pipeline publishes: `crm.dlq`, `crm.identity`, `crm.profiles`
//! (DESIGN §3.3). Each has a JSON Schema in `schemas/json/`.
//!
//! The published message types ignore properties they do not know, so a consumer
//! built on them keeps working when a later v1 adds an optional property
//! (docs/consumers.md §6). The inputs (`IdentityCommand` here, the canonical event)
//! stay strict: the pipeline refuses what it does not understand.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identifier::Identifier;

/// Where a rejected message came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DlqOrigin {
    /// Kafka topic, partition and offset of a rejected message (pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Connector instance that refused a provider object (connectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// The provider's id of the refused object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
}

/// A rejected input on `crm.dlq`: the original bytes, why, and where from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqMessage {
    pub schema_version: u32,
    /// Machine-readable class (`malformed`, `no_identifier`, ...).
    pub error_code: String,
    /// Human-readable reason.
    pub reason: String,
    /// Pipeline stage that rejected it (`validate`).
    pub stage: String,
    pub origin: DlqOrigin,
    /// The original payload when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// The original payload, base64, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_base64: Option<String>,
    /// True when the original was longer than the DLQ keeps (the first 256 KiB are kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_truncated: bool,
    /// Size of the original payload in bytes.
    pub original_size: u64,
    pub failed_at: DateTime<Utc>,
}

/// The DLQ keeps at most this many bytes of the original payload.
pub const MAX_DLQ_ORIGINAL_BYTES: usize = 256 * 1024;

impl DlqMessage {
    /// A DLQ message keeping the first [`MAX_DLQ_ORIGINAL_BYTES`] of `payload`: as
    /// text when it is UTF-8 (cut at a character boundary), else base64.
    pub fn new(
        code: &str,
        reason: String,
        stage: &str,
        origin: DlqOrigin,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> DlqMessage {
        use base64::Engine as _;
        let truncated = payload.len() > MAX_DLQ_ORIGINAL_BYTES;
        let kept = &payload[..payload.len().min(MAX_DLQ_ORIGINAL_BYTES)];
        let (original, original_base64) = match std::str::from_utf8(payload) {
            Ok(t) => {
                let mut end = kept.len();
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                (Some(t[..end].to_string()), None)
            }
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(kept)),
            ),
        };
        DlqMessage {
            schema_version: crate::SCHEMA_VERSION,
            error_code: code.to_string(),
            reason,
            stage: stage.to_string(),
            origin,
            original,
            original_base64,
            original_truncated: truncated,
            original_size: payload.len() as u64,
            failed_at: now,
        }
    }
}

/// Kinds of identity changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityAction {
    /// A new profile was created for an identifier.
    Create,
    /// An identifier was attached to an existing profile.
    Link,
    /// Two profiles became one; `merged_customer_id` is retired into `customer_id`.
    Merge,
    /// An identifier was refused (`rule` says which rule).
    Reject,
    /// A claimed identifier (a bio, a form) that no rule trusts: recorded, not linked.
    Candidate,
    /// An identifier was detached from its profile (`socialcrm identity unlink`).
    Unlink,
    /// An identifier moved to another profile (`identity split`/`unlink`, or a
    /// conflict re-resolved); `merged_customer_id` is the profile it left.
    Split,
    /// A person's data was erased.
    Erase,
    /// An action added by a later v1 that this build does not know (docs/consumers.md
    /// §6: consumers skip what they do not know). Only read, never written:
    /// serialising it is an error.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl IdentityAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityAction::Create => "create",
            IdentityAction::Link => "link",
            IdentityAction::Merge => "merge",
            IdentityAction::Reject => "reject",
            IdentityAction::Candidate => "candidate",
            IdentityAction::Unlink => "unlink",
            IdentityAction::Split => "split",
            IdentityAction::Erase => "erase",
            IdentityAction::Unknown => "unknown",
        }
    }
}

/// One identity-ledger entry; published on `crm.identity` and stored in
/// `crm.identity_ledger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityMessage {
    pub schema_version: u32,
    /// Deterministic: the same event replayed yields the same entry id.
    pub entry_id: String,
    pub action: IdentityAction,
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The event that caused the change.
    pub event_id: String,
    pub at: DateTime<Utc>,
}

/// The unified profile: one per live `customer_id`. Published (full, current)
/// on the compacted `crm.profiles` topic and stored in `crm.profiles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub schema_version: u32,
    pub customer_id: String,
    /// Monotonic per workspace; the newest version of a profile wins.
    pub version: u64,
    pub identifiers: Vec<Identifier>,
    pub traits: Map<String, Value>,
    pub channels: Vec<String>,
    pub sources: Vec<String>,
    pub event_count: u64,
    pub event_counts: BTreeMap<String, u64>,
    pub channel_counts: BTreeMap<String, u64>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub order_count: u64,
    /// Net revenue per currency (orders minus refunds).
    pub revenue: BTreeMap<String, f64>,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub lifecycle_stage: String,
    pub score_components: Map<String, Value>,
    /// Retired customer ids merged into this profile.
    pub merged_from: Vec<String>,
    pub updated_at: DateTime<Utc>,
    /// Rules that refused links to this profile and ask for a human look
    /// (`profile_size_cap`, `link_rate`); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// What an identity command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// One identifier leaves its profile for good.
    Unlink,
    /// Some identifiers of a profile become a profile of their own, for good.
    Split,
}

/// An operator's command to the identity writer, on `crm.identity.commands`
/// (key `command_id`). It carries both sides of the separation as the operator
/// saw them, so it still holds when the writer's state is rebuilt from scratch:
/// no identifier of `identifiers` ever shares a profile with one of `others` again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCommand {
    pub schema_version: u32,
    pub command_id: String,
    pub action: CommandAction,
    /// The profile the identifiers are taken from.
    pub customer_id: String,
    /// The side that leaves.
    pub identifiers: Vec<Identifier>,
    /// The side that stays.
    pub others: Vec<Identifier>,
    /// Free text for the ledger (a ticket number, a reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub requested_at: DateTime<Utc>,
}

/// What a privacy command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyAction {
    /// A person leaves for good: profile, identifiers and stored data; their
    /// identifiers are suppressed (docs/privacy.md).
    Erase,
    /// Lifts the suppression of the listed identifier hashes from `requested_at`
    /// on: events that occurred after it are accepted again, older ones stay
    /// dropped (docs/privacy.md, "Lifting a suppression"). `customer_ids` is empty.
    Unsuppress,
}

/// An identifier as a salted hash (`sha256:` + 64 hex digits of its stored
/// `type:value`), with its type in clear.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashedIdentifier {
    #[serde(rename = "type")]
    pub id_type: String,
    pub hash: String,
}

/// An erasure request to the identity writer, on `crm.privacy.commands` (key
/// `request_id`, compacted). It names no personal value, so the compacted topic
/// may keep it for good: a writer rebuilt from scratch meets it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseCommand {
    pub schema_version: u32,
    pub request_id: String,
    pub action: PrivacyAction,
    /// The person's customer ids as the requester saw them (the live one first).
    pub customer_ids: Vec<String>,
    /// The person's identifiers, hashed.
    pub identifiers: Vec<HashedIdentifier>,
    /// Fingerprint of the salt of the hashes (the writer refuses other salts).
    pub salt_id: String,
    /// Who asked (`cli`, `api:<key name>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_by: String,
    /// What was asked for: the hash of an identifier, or a customer id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub requested_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity_entry(action: &str) -> Value {
        json!({"schema_version": 1, "entry_id": "e1", "action": action,
               "customer_id": "c_0123456789abcdef", "event_id": "web:m1",
               "at": "2026-11-01T10:00:00Z"})
    }

    #[test]
    fn published_types_read_properties_a_later_v1_adds() {
        // the additive changes of docs/consumers.md §6 must not break a consumer
        // built on these types
        let mut m = identity_entry("merge");
        m["merged_customer_id"] = json!("c_fedcba9876543210");
        m["confidence"] = json!(0.9);
        let e: IdentityMessage = serde_json::from_value(m).expect("unknown property ignored");
        assert_eq!(e.action, IdentityAction::Merge);
        let mut p = serde_json::to_value(Profile {
            schema_version: 1,
            customer_id: "c_0123456789abcdef".into(),
            version: 3,
            identifiers: vec![Identifier::new(crate::IdType::Email, "a@b.io")],
            traits: Map::new(),
            channels: vec!["web".into()],
            sources: vec!["web".into()],
            event_count: 1,
            event_counts: BTreeMap::from([("page".into(), 1)]),
            channel_counts: BTreeMap::from([("web".into(), 1)]),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            order_count: 0,
            revenue: BTreeMap::new(),
            engagement_score: 0.0,
            influence_score: 0.0,
            lifecycle_stage: "prospect".into(),
            score_components: Map::new(),
            merged_from: Vec::new(),
            updated_at: Utc::now(),
            flags: Vec::new(),
        })
        .expect("serialise");
        p["segment"] = json!("vip");
        let back: Profile = serde_json::from_value(p).expect("unknown property ignored");
        assert_eq!(back.version, 3);
        let mut d = json!({"schema_version": 1, "error_code": "malformed", "reason": "r",
            "stage": "validate", "origin": {"topic": "t", "partition": 0, "offset": 1, "shard": 2},
            "original": "x", "original_size": 1, "failed_at": "2026-11-01T10:00:00Z"});
        d["retry_after"] = json!(5);
        serde_json::from_value::<DlqMessage>(d).expect("unknown properties ignored");
    }

    #[test]
    fn an_action_a_later_v1_adds_reads_as_unknown_and_is_never_written() {
        let e: IdentityMessage =
            serde_json::from_value(identity_entry("consent")).expect("unknown action read");
        assert_eq!(e.action, IdentityAction::Unknown);
        assert!(
            serde_json::to_string(&e).is_err(),
            "Unknown must not be published"
        );
        let known: IdentityMessage =
            serde_json::from_value(identity_entry("erase")).expect("erase");
        assert_eq!(known.action, IdentityAction::Erase);
    }

    #[test]
    fn erase_commands_match_their_schema_and_carry_no_clear_value() {
        let schema: Value = serde_json::from_str(crate::json_schema::ERASE_COMMAND).expect("json");
        let v = jsonschema::validator_for(&schema).expect("schema");
        let cmd = EraseCommand {
            schema_version: 1,
            request_id: "erase-20261101T100000-1a2b3c4d".into(),
            action: PrivacyAction::Erase,
            customer_ids: vec!["c_0123456789abcdef".into()],
            identifiers: vec![HashedIdentifier {
                id_type: "email".into(),
                hash: format!("sha256:{}", "ab".repeat(32)),
            }],
            salt_id: "0011223344556677".into(),
            requested_by: "api:dpo".into(),
            subject: "c_0123456789abcdef".into(),
            requested_at: Utc::now(),
        };
        let mut j = serde_json::to_value(&cmd).expect("serialise");
        assert!(v.is_valid(&j), "{j}");
        assert_eq!(
            serde_json::from_value::<EraseCommand>(j.clone()).expect("read"),
            cmd
        );
        j["identifiers"][0]["hash"] = json!("ann@example.com");
        assert!(!v.is_valid(&j), "a clear value is refused by the schema");
        j["identifiers"][0] = json!({"type": "email", "value": "ann@example.com"});
        assert!(serde_json::from_value::<EraseCommand>(j).is_err());
    }

    #[test]
    fn commands_stay_strict() {
        let c = json!({"schema_version": 1, "command_id": "k", "action": "unlink",
            "customer_id": "c_0123456789abcdef", "identifiers": [{"type": "email", "value": "a@b.io"}],
            "others": [{"type": "user_id", "value": "u"}], "requested_at": "2026-11-01T10:00:00Z",
            "force": true});
        assert!(serde_json::from_value::<IdentityCommand>(c).is_err());
    }
}
