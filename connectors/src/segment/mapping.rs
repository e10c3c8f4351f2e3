//! Segment message → canonical event. Pure functions: no I/O.
//!
//! | Segment | canonical |
//! |---|---|
//! | `messageId` | `event_id` = `<source>:<messageId>` (a content hash when absent) |
//! | `type` (`track` named `Order Completed` / `Order Refunded`) | `type` (`order` / `refund`), `name` = event name |
//! | `userId`, `anonymousId`, `previousId` (alias) | `user_id`, `anonymous_id` identifiers |
//! | `traits.email`, `traits.phone` (identify) or `context.traits.*` | `email`, `phone` identifiers |
//! | `context.device.id` | `device_id` |
//! | `timestamp`, else `originalTimestamp` corrected by `sentAt` | `occurred_at` |
//! | `properties.revenue`/`total` + `currency` (orders) | `revenue` |
//! | `context.ip` | truncated, dropped or kept by `[privacy] ip` |

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, JsonObject, Normalizer, Revenue, SCHEMA_VERSION,
};

/// Why a message was refused (answered as HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

fn err(s: impl Into<String>) -> MappingError {
    MappingError(s.into())
}

/// Segment call types.
pub const TYPES: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

/// Request-level facts shared by the messages of one call.
pub struct Envelope<'a> {
    pub source: &'a str,
    pub received_at: DateTime<Utc>,
    /// `sentAt` of the batch, when given at batch level.
    pub sent_at: Option<DateTime<Utc>>,
    /// Batch-level `context`, merged under each message's own context.
    pub context: Option<&'a Map<String, Value>>,
    pub normalizer: &'a Normalizer,
    /// `[privacy] ip`: applied to `context.ip` before the event leaves the collector.
    pub ip: socialcrm_schemas::privacy::IpPolicy,
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, MappingError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(err(format!("`{key}` must be a string"))),
    }
}

/// Ids may be strings or numbers in SDKs; anything else is an error.
fn opt_id(m: &Map<String, Value>, key: &str) -> Result<Option<String>, MappingError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(err(format!("`{key}` must be a string or a number"))),
    }
}

fn opt_obj<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, MappingError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(err(format!("`{key}` must be an object"))),
    }
}

fn opt_time(m: &Map<String, Value>, key: &str) -> Result<Option<DateTime<Utc>>, MappingError> {
    match opt_str(m, key)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| err(format!("`{key}` is not an RFC 3339 date-time ({e})"))),
    }
}

/// Maps one Segment message. `implied_type` comes from the endpoint (`/v1/track`).
pub fn map_message(
    msg: &Value,
    implied_type: Option<&str>,
    env: &Envelope<'_>,
) -> Result<CanonicalEvent, MappingError> {
    let m = msg
        .as_object()
        .ok_or_else(|| err("message must be a JSON object"))?;
    let given_type = opt_str(m, "type")?;
    let seg_type = match (implied_type, given_type) {
        (Some(i), Some(g)) if i != g => {
            return Err(err(format!("`type` is `{g}` but the endpoint is /v1/{i}")))
        }
        (Some(i), _) => i,
        (None, Some(g)) => g,
        (None, None) => return Err(err("`type` is required in a batch")),
    };
    if !TYPES.contains(&seg_type) {
        return Err(err(format!("unknown `type` `{seg_type}`")));
    }

    // context: batch context under the message's own
    let mut context: Map<String, Value> = env.context.cloned().unwrap_or_default();
    if let Some(c) = opt_obj(m, "context")? {
        for (k, v) in c {
            context.insert(k.clone(), v.clone());
        }
    }
    let context_traits = match context.remove("traits") {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(err("`context.traits` must be an object")),
    };
    socialcrm_schemas::privacy::protect_context_ip(env.ip, &mut context);
    let mut traits = if seg_type == "identify" {
        let mut t = context_traits.clone();
        if let Some(own) = opt_obj(m, "traits")? {
            t.extend(own.clone());
        }
        t
    } else {
        context_traits
    };

    // identifiers
    let mut identifiers: Vec<Identifier> = Vec::new();
    let mut push = |t: IdType, raw: &str| {
        if raw.trim().is_empty() {
            return;
        }
        // normalised when valid; raw when not, so the pipeline records the rejection
        let id = match env.normalizer.normalize_value(t, raw) {
            Ok(v) => Identifier::new(t, v),
            Err(_) => Identifier::new(t, raw.chars().take(256).collect::<String>()),
        };
        if !identifiers.contains(&id) {
            identifiers.push(id);
        }
    };
    let user_id = opt_id(m, "userId")?;
    let anonymous_id = opt_id(m, "anonymousId")?;
    if let Some(u) = &user_id {
        push(IdType::UserId, u);
    }
    if let Some(a) = &anonymous_id {
        push(IdType::AnonymousId, a);
    }
    if seg_type == "alias" {
        match opt_id(m, "previousId")? {
            Some(p) => push(IdType::AnonymousId, &p),
            None => return Err(err("alias requires `previousId`")),
        }
    }
    for (key, t) in [("email", IdType::Email), ("phone", IdType::Phone)] {
        let normalized = match traits.get(key) {
            Some(Value::String(s)) => {
                push(t, s);
                env.normalizer.normalize_value(t, s).ok()
            }
            None | Some(Value::Null) => None,
            Some(_) => return Err(err(format!("`traits.{key}` must be a string"))),
        };
        // profiles show the normalised form; an invalid value stays as sent
        if let Some(n) = normalized {
            traits.insert(key.to_string(), Value::String(n));
        }
    }
    if let Some(Value::Object(device)) = context.get("device") {
        if let Some(Value::String(d)) = device.get("id") {
            push(IdType::DeviceId, d);
        }
    }
    let usable = identifiers
        .iter()
        .filter(|i| {
            i.id_type
                .parse::<IdType>()
                .is_ok_and(|t| env.normalizer.normalize_value(t, &i.value).is_ok())
        })
        .count();
    if usable == 0 {
        return Err(err(
            "no usable identifier: `userId` or `anonymousId` is required (blocked placeholder values such as `null` or `undefined` do not count)",
        ));
    }

    // time
    let timestamp = opt_time(m, "timestamp")?;
    let original = opt_time(m, "originalTimestamp")?;
    let sent_at = opt_time(m, "sentAt")?.or(env.sent_at);
    let occurred_at = match (timestamp, original, sent_at) {
        (Some(t), _, _) => t,
        // clock-skew correction as Segment does: receivedAt - (sentAt - originalTimestamp)
        (None, Some(o), Some(s)) => env.received_at - (s - o),
        (None, Some(o), None) => o,
        (None, None, _) => env.received_at,
    };

    // name, type, properties
    let mut properties = opt_obj(m, "properties")?.cloned().unwrap_or_default();
    let (event_type, name) = match seg_type {
        "track" => {
            let ev = opt_str(m, "event")?
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| err("track requires a non-empty `event`"))?;
            let t = match ev {
                "Order Completed" => "order",
                "Order Refunded" => "refund",
                _ => "track",
            };
            (t, Some(ev.to_string()))
        }
        "page" | "screen" => {
            let name = opt_str(m, "name")?.map(str::to_string);
            let category = opt_str(m, "category")?;
            if let Some(c) = category {
                properties.insert("category".into(), Value::String(c.to_string()));
            }
            (seg_type, name)
        }
        "group" => {
            let gid = opt_id(m, "groupId")?.ok_or_else(|| err("group requires `groupId`"))?;
            properties.insert("group_id".into(), Value::String(gid));
            if let Some(gt) = opt_obj(m, "traits")? {
                properties.insert("group_traits".into(), Value::Object(gt.clone()));
            }
            (seg_type, None)
        }
        other => (other, None),
    };
    if event_type == "group" {
        // group traits describe the account, not the person
        traits.remove("email");
        traits.remove("phone");
    }
    let revenue = if event_type == "order" || event_type == "refund" {
        let amount = ["revenue", "total", "value"]
            .iter()
            .find_map(|k| match properties.get(*k) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                _ => None,
            })
            .filter(|a| a.is_finite());
        let currency = match properties.get("currency") {
            Some(Value::String(c)) if c.trim().len() == 3 => c.trim().to_ascii_uppercase(),
            Some(Value::String(c)) => {
                return Err(err(format!(
                    "`properties.currency` `{c}` is not an ISO 4217 code"
                )))
            }
            _ => "USD".to_string(),
        };
        amount.map(|amount| Revenue { amount, currency })
    } else {
        None
    };

    let message_id = match opt_id(m, "messageId")? {
        Some(id) if !id.trim().is_empty() => id,
        _ => {
            // deterministic: a retried request yields the same id
            let d = Sha256::digest(msg.to_string().as_bytes());
            format!("h-{}", hex::encode(&d[..16]))
        }
    };
    if message_id.len() > 256 {
        return Err(err("`messageId` longer than 256 characters"));
    }
    if let Some(n) = &name {
        if n.len() > 512 {
            return Err(err("event/page name longer than 512 characters"));
        }
    }

    Ok(CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id: format!("{}:{}", env.source, message_id),
        source: env.source.to_string(),
        channel: Channel::Web,
        event_type: event_type.to_string(),
        name,
        occurred_at,
        received_at: env.received_at,
        identifiers,
        target: Vec::new(),
        traits,
        properties: JsonObject::from_map(&properties),
        revenue,
        context: JsonObject::from_map(&context),
    })
}
