//! ClickHouse rows of the pipeline's tables (DESIGN §3.4), in column order of the
//! migrations. DateTime columns travel as UInt32 seconds (RowBinary).

use chrono::{DateTime, Utc};
use serde::Serialize;
use socialcrm_schemas::messages::IdentityMessage;
use socialcrm_schemas::CanonicalEvent;

use crate::identity::IdRecord;
use crate::profile::ProfileState;

pub fn secs(t: DateTime<Utc>) -> u32 {
    t.timestamp().clamp(0, u32::MAX as i64) as u32
}

fn json(m: &serde_json::Map<String, serde_json::Value>) -> String {
    if m.is_empty() {
        String::new()
    } else {
        // a map of JSON values always serialises
        serde_json::to_string(m).unwrap_or_default()
    }
}

fn raw(o: &socialcrm_schemas::JsonObject) -> String {
    if o.is_empty() {
        String::new()
    } else {
        o.as_str().to_string()
    }
}

#[derive(Debug, clickhouse::Row, Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub customer_id: String,
    pub source: String,
    pub channel: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub name: String,
    pub occurred_at: u32,
    pub occurred_at_ms: u16,
    pub received_at: u32,
    pub identifier_types: Vec<String>,
    pub identifier_values: Vec<String>,
    pub target_types: Vec<String>,
    pub target_values: Vec<String>,
    pub traits: String,
    pub properties: String,
    pub context: String,
    pub revenue_amount: f64,
    pub revenue_currency: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub ingested_at: u32,
    pub version: u64,
    /// The event's strongest identifier: the event follows it across unlinks and splits.
    pub primary_id: String,
}

impl EventRow {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ev: &CanonicalEvent,
        customer_id: &str,
        primary_id: &str,
        partition: i32,
        offset: i64,
        version: u64,
        now: DateTime<Utc>,
    ) -> Self {
        EventRow {
            event_id: ev.event_id.clone(),
            customer_id: customer_id.to_string(),
            source: ev.source.clone(),
            channel: ev.channel.as_str().to_string(),
            event_type: ev.event_type.clone(),
            name: ev.name.clone().unwrap_or_default(),
            occurred_at: secs(ev.occurred_at),
            occurred_at_ms: ev.occurred_at.timestamp_subsec_millis().min(999) as u16,
            received_at: secs(ev.received_at),
            identifier_types: ev.identifiers.iter().map(|i| i.id_type.clone()).collect(),
            identifier_values: ev.identifiers.iter().map(|i| i.value.clone()).collect(),
            target_types: ev.target.iter().map(|i| i.id_type.clone()).collect(),
            target_values: ev.target.iter().map(|i| i.value.clone()).collect(),
            traits: json(&ev.traits),
            properties: raw(&ev.properties),
            context: raw(&ev.context),
            revenue_amount: ev.revenue.as_ref().map(|r| r.amount).unwrap_or(0.0),
            revenue_currency: ev
                .revenue
                .as_ref()
                .map(|r| r.currency.clone())
                .unwrap_or_default(),
            kafka_partition: partition,
            kafka_offset: offset,
            ingested_at: secs(now),
            version,
            primary_id: primary_id.to_string(),
        }
    }
}

#[derive(Debug, clickhouse::Row, Serialize)]
pub struct IdentityRow {
    pub id_type: String,
    pub id_value: String,
    pub customer_id: String,
    pub is_active: u8,
    pub first_seen: u32,
    pub updated_at: u32,
    pub version: u64,
}

impl IdentityRow {
    pub fn new(key: &str, rec: Option<&IdRecord>, version: u64, now: DateTime<Utc>) -> Self {
        let (t, v) = key.split_once(':').unwrap_or((key, ""));
        IdentityRow {
            id_type: t.to_string(),
            id_value: v.to_string(),
            customer_id: rec.map(|r| r.customer_id.clone()).unwrap_or_default(),
            is_active: u8::from(rec.is_some()),
            first_seen: rec.map(|r| secs(r.first_seen)).unwrap_or(0),
            updated_at: secs(now),
            version,
        }
    }
}

/// One row of `event_moves`: the events of `primary_id` belong to `customer_id` now.
#[derive(Debug, clickhouse::Row, Serialize)]
pub struct EventMoveRow {
    /// One id per written batch (a replayed batch gets another).
    pub move_id: String,
    pub primary_id: String,
    pub customer_id: String,
    pub moved_at: u32,
}

#[derive(Debug, clickhouse::Row, Serialize)]
pub struct AliasRow {
    pub retired_id: String,
    pub survivor_id: String,
    pub merged_at: u32,
    pub version: u64,
}

/// One `identity_ledger` row; written by the pipeline, read back by the CLI.
#[derive(Debug, Clone, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct LedgerRow {
    pub entry_id: String,
    pub at: u32,
    pub action: String,
    pub customer_id: String,
    pub id_type: String,
    pub id_value: String,
    pub merged_customer_id: String,
    pub rule: String,
    pub reason: String,
    pub event_id: String,
    pub version: u64,
    /// Order within the batch (`version`): `identity rebuild` replays in (version, seq).
    pub seq: u32,
}

impl LedgerRow {
    pub fn new(m: &IdentityMessage, version: u64, seq: u32) -> Self {
        LedgerRow {
            entry_id: m.entry_id.clone(),
            at: secs(m.at),
            action: m.action.as_str().to_string(),
            customer_id: m.customer_id.clone(),
            id_type: m
                .identifier
                .as_ref()
                .map(|i| i.id_type.clone())
                .unwrap_or_default(),
            id_value: m
                .identifier
                .as_ref()
                .map(|i| i.value.clone())
                .unwrap_or_default(),
            merged_customer_id: m.merged_customer_id.clone().unwrap_or_default(),
            rule: m.rule.clone().unwrap_or_default(),
            reason: m.reason.clone().unwrap_or_default(),
            event_id: m.event_id.clone(),
            version,
            seq,
        }
    }
}

/// One `profiles` row; written by the pipeline, read back by the CLI.
#[derive(Debug, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct ProfileRow {
    pub customer_id: String,
    pub version: u64,
    pub is_active: u8,
    pub merged_into: String,
    pub identifier_types: Vec<String>,
    pub identifier_values: Vec<String>,
    pub traits: String,
    pub channels: Vec<String>,
    pub sources: Vec<String>,
    pub event_count: u64,
    pub event_count_types: Vec<String>,
    pub event_count_values: Vec<u64>,
    pub channel_count_keys: Vec<String>,
    pub channel_count_values: Vec<u64>,
    pub first_seen: u32,
    pub last_seen: u32,
    pub order_count: u64,
    pub revenue_currencies: Vec<String>,
    pub revenue_amounts: Vec<f64>,
    pub engagement_score: f64,
    pub influence_score: f64,
    pub lifecycle_stage: String,
    pub score_components: String,
    pub merged_from: Vec<String>,
    pub updated_at: u32,
    /// Rules that flagged the profile for review (docs/identity.md).
    pub flags: Vec<String>,
    /// Name to show and search (traits `name`, first + last name, or a handle).
    pub display_name: String,
    /// From the newest applied scoring run (empty before one): what segments filter on.
    pub rfm_segment: String,
    pub top_categories: Vec<String>,
    pub top_channels: Vec<String>,
}

impl ProfileRow {
    /// An inactive row for a customer id that no longer exists (crash recovery).
    pub fn retracted(customer_id: &str, version: u64, now: DateTime<Utc>) -> Self {
        ProfileRow {
            customer_id: customer_id.to_string(),
            version,
            is_active: 0,
            merged_into: String::new(),
            identifier_types: Vec::new(),
            identifier_values: Vec::new(),
            traits: String::new(),
            channels: Vec::new(),
            sources: Vec::new(),
            event_count: 0,
            event_count_types: Vec::new(),
            event_count_values: Vec::new(),
            channel_count_keys: Vec::new(),
            channel_count_values: Vec::new(),
            first_seen: 0,
            last_seen: 0,
            order_count: 0,
            revenue_currencies: Vec::new(),
            revenue_amounts: Vec::new(),
            engagement_score: 0.0,
            influence_score: 0.0,
            lifecycle_stage: String::new(),
            score_components: String::new(),
            merged_from: Vec::new(),
            updated_at: secs(now),
            flags: Vec::new(),
            display_name: String::new(),
            rfm_segment: String::new(),
            top_categories: Vec::new(),
            top_channels: Vec::new(),
        }
    }

    pub fn new(p: &ProfileState, version: u64, now: DateTime<Utc>) -> Self {
        Self::from_message(&p.to_message(version, now), p, version, now)
    }

    /// From the published form (built once for both the row and the message).
    pub fn from_message(
        msg: &socialcrm_schemas::messages::Profile,
        p: &ProfileState,
        version: u64,
        now: DateTime<Utc>,
    ) -> Self {
        ProfileRow {
            customer_id: p.customer_id.clone(),
            version,
            is_active: u8::from(p.is_active()),
            merged_into: p.merged_into.clone().unwrap_or_default(),
            identifier_types: msg.identifiers.iter().map(|i| i.id_type.clone()).collect(),
            identifier_values: msg.identifiers.iter().map(|i| i.value.clone()).collect(),
            traits: json(&msg.traits),
            channels: msg.channels.clone(),
            sources: msg.sources.clone(),
            event_count: msg.event_count,
            event_count_types: msg.event_counts.keys().cloned().collect(),
            event_count_values: msg.event_counts.values().copied().collect(),
            channel_count_keys: msg.channel_counts.keys().cloned().collect(),
            channel_count_values: msg.channel_counts.values().copied().collect(),
            first_seen: secs(msg.first_seen),
            last_seen: secs(msg.last_seen),
            order_count: msg.order_count,
            revenue_currencies: msg.revenue.keys().cloned().collect(),
            revenue_amounts: msg.revenue.values().copied().collect(),
            engagement_score: msg.engagement_score,
            influence_score: msg.influence_score,
            lifecycle_stage: msg.lifecycle_stage.clone(),
            score_components: json(&msg.score_components),
            merged_from: msg.merged_from.clone(),
            updated_at: secs(now),
            flags: msg.flags.clone(),
            display_name: display_name(&msg.traits),
            rfm_segment: p
                .scores
                .as_ref()
                .map(|s| s.rfm_segment.clone())
                .unwrap_or_default(),
            top_categories: p
                .scores
                .as_ref()
                .map(|s| s.top_categories.clone())
                .unwrap_or_default(),
            top_channels: p
                .scores
                .as_ref()
                .map(|s| s.top_channels.clone())
                .unwrap_or_default(),
        }
    }
}

/// The name marketers see and search: trait `name`, else `first_name` + `last_name`,
/// else `display_name`, `username` or `handle`.
pub fn display_name(traits: &serde_json::Map<String, serde_json::Value>) -> String {
    let get = |k: &str| {
        traits
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if let Some(n) = get("name") {
        return n.to_string();
    }
    let full: Vec<&str> = [get("first_name"), get("last_name")]
        .into_iter()
        .flatten()
        .collect();
    if !full.is_empty() {
        return full.join(" ");
    }
    ["display_name", "username", "handle"]
        .into_iter()
        .find_map(get)
        .unwrap_or_default()
        .to_string()
}
