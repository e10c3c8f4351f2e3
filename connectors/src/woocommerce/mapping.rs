//! WooCommerce customers and orders → canonical events. Pure functions: no I/O.
//!
//! | WooCommerce | canonical |
//! |---|---|
//! | customer | `identify`, channel `shop`, `event_id` `woocommerce:<site>:customer:<id>:<date_modified_gmt>` |
//! | customer `id` / order `customer_id` (> 0) | identifier `woocommerce:<site>/<id>` |
//! | `email`, `billing.email` | `email` identifiers |
//! | `billing.phone` (read with `billing.country` as the region) | `phone` identifier (E.164) |
//! | paid order (`processing`, `completed`, `refunded`, or paid per `date_paid_gmt`) | `order`, `event_id` `woocommerce:<site>:order:<id>`, `revenue` {`total`, `currency`} |
//! | each of the order's `refunds` | `refund`, `event_id` `woocommerce:<site>:refund:<refund id>`, `revenue` {\|`total`\|, `currency`} |
//! | `_wc_order_attribution_*` meta | `context.campaign`, `context.referrer`, `context.attribution` |

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, JsonObject, Normalizer, Revenue, SCHEMA_VERSION,
};

use crate::runtime::Rejected;

/// The fields of an order that [`order_key`] and [`map_order`] read.
pub const ORDER_FIELDS: &[&str] = &[
    "billing",
    "coupon_lines",
    "created_via",
    "currency",
    "customer_id",
    "customer_user_agent",
    "date_completed_gmt",
    "date_created_gmt",
    "date_modified_gmt",
    "date_paid_gmt",
    "discount_total",
    "id",
    "line_items",
    "meta_data",
    "number",
    "parent_id",
    "payment_method",
    "payment_method_title",
    "refunds",
    "shipping_total",
    "status",
    "total",
    "total_tax",
];

/// The fields of a customer that the walk and [`map_customer`] read.
pub const CUSTOMER_FIELDS: &[&str] = &[
    "billing",
    "date_created_gmt",
    "date_modified_gmt",
    "email",
    "first_name",
    "id",
    "is_paying_customer",
    "last_name",
    "role",
    "username",
];

/// The fields of an order that [`order_key`] reads: what the walk needs of
/// each listed order before the mapping (which slims with [`ORDER_FIELDS`]).
pub const ORDER_KEY_FIELDS: &[&str] = &["date_modified_gmt", "id"];

/// The fields of a customer that [`customer_id`] and [`customer_modified`] read.
pub const CUSTOMER_KEY_FIELDS: &[&str] = &["date_created_gmt", "date_modified_gmt", "id"];

/// The fields of a line item that [`map_order`] reads.
pub const LINE_ITEM_FIELDS: &[&str] = &[
    "name",
    "product_id",
    "quantity",
    "sku",
    "total",
    "variation_id",
];

/// A JSON object keeping only some of its fields (the others are skipped while
/// parsing, without being built); a duplicate key keeps its last value, as
/// [`Value`] does.
struct Slim(Map<String, Value>);

struct SlimVisitor(&'static [&'static str]);

impl<'de> serde::de::Visitor<'de> for SlimVisitor {
    type Value = Slim;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Slim, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            match key {
                Some("line_items") => {
                    // a list of line items: each keeps only what the mapping reads
                    let raw: Box<serde_json::value::RawValue> = map.next_value()?;
                    let v = match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(
                        raw.get(),
                    ) {
                        Ok(items) => Value::Array(
                            items
                                .iter()
                                .map(|li| slim(li, LINE_ITEM_FIELDS).unwrap_or(Value::Null))
                                .collect(),
                        ),
                        Err(_) => {
                            serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?
                        }
                    };
                    out.insert("line_items".into(), v);
                }
                Some(k) => {
                    let v: Value = map.next_value()?;
                    out.insert(k.to_string(), v);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Slim(out))
    }
}

/// A key: the field of the list it is, or `None` (without allocating). The
/// lists of fields must be sorted.
struct KeySeed(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Self::Value, E> {
        // the field lists are sorted (a test checks it)
        Ok(self.0.binary_search(&k).ok().map(|i| self.0[i]))
    }
}

/// One listed object as the mapping reads it: only `fields` of it when it is a
/// JSON object, else the whole value (the mapping rejects it). `None` when the
/// text is not JSON.
pub fn slim(raw: &serde_json::value::RawValue, fields: &'static [&'static str]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match serde::Deserializer::deserialize_map(&mut de, SlimVisitor(fields)) {
        Ok(Slim(m)) => Some(Value::Object(m)),
        Err(_) => serde_json::from_str(raw.get()).ok(),
    }
}

/// At most this many line items are kept in an order's properties.
pub const MAX_LINE_ITEMS: usize = 50;
/// Longest text kept for names, reasons, UTM values.
const MAX_TEXT: usize = 200;

/// What the mapping needs besides the object.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The shop's host (`shop.example.com`).
    pub site: &'a str,
    pub received_at: DateTime<Utc>,
}

/// The result of mapping one order.
#[derive(Debug)]
pub enum OrderMapped {
    /// The order event (when paid) and one event per refund.
    Events(Vec<CanonicalEvent>),
    /// No event: the reason (a metrics label).
    Skipped(&'static str),
    Rejected(Rejected),
}

/// A WooCommerce date: `2017-03-22T16:28:08` (the `_gmt` fields carry no zone
/// and are UTC), or RFC 3339 with a zone.
pub fn parse_wc_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = plain_wc_date(s) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .ok()
        .map(|n| n.and_utc())
}

/// `2017-03-22T16:28:08` exactly (how WooCommerce writes every date), read
/// without the general parser; anything else is `None` (the general parser
/// decides).
fn plain_wc_date(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b'T', b':', b':') {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(
        date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?
            .and_utc(),
    )
}

fn date_field(o: &Value, key: &str) -> Option<DateTime<Utc>> {
    o.get(key).and_then(Value::as_str).and_then(parse_wc_date)
}

fn id_of(o: &Value, key: &str) -> Option<u64> {
    match o.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An order's position in the `orderby=modified` list: `(date_modified_gmt, id)`.
pub fn order_key(o: &Value) -> Option<(DateTime<Utc>, u64)> {
    let id = id_of(o, "id").filter(|i| *i > 0)?;
    Some((date_field(o, "date_modified_gmt")?, id))
}

/// A customer's id.
pub fn customer_id(o: &Value) -> Option<u64> {
    id_of(o, "id").filter(|i| *i > 0)
}

/// When a customer last changed (`date_modified_gmt`, else `date_created_gmt`).
pub fn customer_modified(o: &Value) -> Option<DateTime<Utc>> {
    date_field(o, "date_modified_gmt").or_else(|| date_field(o, "date_created_gmt"))
}

fn object_id(kind: &str, o: &Value) -> String {
    match id_of(o, "id") {
        Some(i) => format!("{kind}:{i}"),
        None => "?".into(),
    }
}

/// A rejected order.
pub fn rejected_order(o: &Value, reason: impl Into<String>) -> Rejected {
    Rejected::json(object_id("order", o), reason, o)
}

/// A rejected customer.
pub fn rejected_customer(o: &Value, reason: impl Into<String>) -> Rejected {
    Rejected::json(object_id("customer", o), reason, o)
}

fn text<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// A decimal as WooCommerce writes it (`"29.35"`, sometimes a number).
fn money(v: Option<&Value>) -> Option<f64> {
    let x = match v? {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// The texts of a `billing` address that the mapping reads (trimmed, non-empty).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Billing<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub country: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub city: Option<&'a str>,
    pub company: Option<&'a str>,
}

/// The `billing` of a customer or order when it is an object.
fn billing_of(b: Option<&Value>) -> Option<Billing<'_>> {
    let b = b.filter(|b| b.is_object())?;
    Some(Billing {
        email: text(b, "email"),
        phone: text(b, "phone"),
        country: text(b, "country"),
        first_name: text(b, "first_name"),
        last_name: text(b, "last_name"),
        city: text(b, "city"),
        company: text(b, "company"),
    })
}

/// Identifiers and traits of a person from an `email` and a `billing` address.
struct Person {
    identifiers: Vec<Identifier>,
    traits: Map<String, Value>,
}

fn person(
    site: &str,
    wc_id: Option<u64>,
    emails: &[Option<&str>],
    billing: Option<Billing<'_>>,
    names: (Option<&str>, Option<&str>),
) -> Person {
    let mut identifiers = Vec::new();
    let mut traits = Map::new();
    if let Some(id) = wc_id.filter(|i| *i > 0) {
        identifiers.push(Identifier::new(IdType::Woocommerce, format!("{site}/{id}")));
    }
    let plain = Normalizer::default();
    for e in emails.iter().flatten() {
        if let Ok(v) = plain.normalize_value(IdType::Email, e) {
            let id = Identifier::new(IdType::Email, v.clone());
            if !identifiers.contains(&id) {
                identifiers.push(id);
            }
            traits.entry("email").or_insert(Value::String(v));
        }
    }
    let b = billing.unwrap_or_default();
    let country = b.country.map(str::to_ascii_uppercase);
    if let Some(phone) = b.phone {
        // national numbers are read in the billing country; E.164 stays as is
        let n = country
            .as_deref()
            .and_then(|c| Normalizer::new(Some(c)).ok())
            .unwrap_or_default();
        if let Ok(v) = n.normalize_value(IdType::Phone, phone) {
            identifiers.push(Identifier::new(IdType::Phone, v.clone()));
            traits.insert("phone".into(), Value::String(v));
        }
    }
    let (first, last) = (names.0.or(b.first_name), names.1.or(b.last_name));
    if let Some(f) = first {
        traits.insert("first_name".into(), Value::String(bounded(f)));
    }
    if let Some(l) = last {
        traits.insert("last_name".into(), Value::String(bounded(l)));
    }
    let name: Vec<&str> = [first, last].into_iter().flatten().collect();
    if !name.is_empty() {
        traits.insert("name".into(), Value::String(bounded(&name.join(" "))));
    }
    if billing.is_some() {
        if let Some(c) = b.city {
            traits.insert("city".into(), Value::String(bounded(c)));
        }
        if let Some(c) = country {
            traits.insert("country".into(), Value::String(c));
        }
        if let Some(c) = b.company {
            traits.insert("company".into(), Value::String(bounded(c)));
        }
    }
    Person {
        identifiers,
        traits,
    }
}

/// A customer (`GET /customers`) → `identify`.
pub fn map_customer(c: &Value, ctx: &Ctx<'_>) -> Result<CanonicalEvent, Rejected> {
    let reject = |r: &str| rejected_customer(c, r);
    if !c.is_object() {
        return Err(reject("customer is not a JSON object"));
    }
    let id = customer_id(c).ok_or_else(|| reject("`id` is missing or not a positive integer"))?;
    let created = match c.get("date_created_gmt") {
        None | Some(Value::Null) => None,
        Some(_) => Some(
            date_field(c, "date_created_gmt")
                .ok_or_else(|| reject("`date_created_gmt` is not a date"))?,
        ),
    };
    let modified = match c.get("date_modified_gmt") {
        None | Some(Value::Null) => None,
        Some(_) => Some(
            date_field(c, "date_modified_gmt")
                .ok_or_else(|| reject("`date_modified_gmt` is not a date"))?,
        ),
    };
    let at = modified
        .or(created)
        .ok_or_else(|| reject("neither `date_modified_gmt` nor `date_created_gmt` is set"))?;
    let billing = billing_of(c.get("billing"));
    let p = person(
        ctx.site,
        Some(id),
        &[text(c, "email"), billing.and_then(|b| b.email)],
        billing,
        (text(c, "first_name"), text(c, "last_name")),
    );
    let mut traits = p.traits;
    if let Some(u) = text(c, "username") {
        traits.insert("woocommerce_username".into(), Value::String(bounded(u)));
    }
    if let Some(Value::Bool(b)) = c.get("is_paying_customer") {
        traits.insert("is_paying_customer".into(), Value::Bool(*b));
    }
    if let Some(t) = created {
        traits.insert(
            "woocommerce_customer_since".into(),
            Value::String(t.to_rfc3339()),
        );
    }
    let mut props = Map::new();
    props.insert("customer_id".into(), id.into());
    if let Some(r) = text(c, "role") {
        props.insert("role".into(), Value::String(r.to_string()));
    }
    if let Some(t) = created {
        props.insert("date_created".into(), Value::String(t.to_rfc3339()));
    }
    Ok(CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id: format!(
            "woocommerce:{}:customer:{id}:{}",
            ctx.site,
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        source: format!("woocommerce:{}", ctx.site),
        channel: Channel::Shop,
        event_type: "identify".into(),
        name: None,
        occurred_at: at,
        received_at: ctx.received_at,
        identifiers: p.identifiers,
        target: Vec::new(),
        traits,
        properties: JsonObject::from_map(&props),
        revenue: None,
        context: JsonObject::empty(),
    })
}

/// Statuses that never count as a sale, whatever `date_paid_gmt` says.
const UNPAID: &[&str] = &[
    "pending",
    "failed",
    "checkout-draft",
    "draft",
    "auto-draft",
    "trash",
];

/// True when the order is a sale: `processing`, `completed`, `refunded`, or any
/// other status (custom ones too) with a payment date, except the unpaid ones.
pub fn is_paid(status: &str, date_paid: Option<DateTime<Utc>>) -> bool {
    matches!(status, "processing" | "completed" | "refunded")
        || (date_paid.is_some() && !UNPAID.contains(&status) && status != "on-hold")
}

/// A value of an order attribution meta entry as it goes into `context`: a
/// non-blank text other than `(none)`, trimmed and bounded, or a number.
pub(crate) fn meta_value(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => meta_text(s),
        Value::Number(n) => Some(Value::Number(n.clone())),
        _ => None,
    }
}

pub(crate) fn meta_text(s: &str) -> Option<Value> {
    (!s.trim().is_empty() && s != "(none)").then(|| Value::String(bounded(s.trim())))
}

/// Order attribution meta → `context` (WooCommerce 8.5+ order attribution).
fn attribution(meta: Option<&Value>) -> Map<String, Value> {
    let items = meta
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    attribution_of(items.iter().filter_map(|m| {
        let k = m.get("key").and_then(Value::as_str)?;
        Some((k, meta_value(m.get("value")?)))
    }))
}

/// `context` from the meta entries (key, value as [`meta_value`] keeps it).
pub(crate) fn attribution_of<'k>(
    entries: impl Iterator<Item = (&'k str, Option<Value>)>,
) -> Map<String, Value> {
    let mut campaign = Map::new();
    let mut attr = Map::new();
    let mut ctx = Map::new();
    for (k, v) in entries {
        let Some(k) = k.strip_prefix("_wc_order_attribution_") else {
            continue;
        };
        let Some(v) = v else { continue };
        match k {
            "utm_source" => campaign.insert("source".into(), v),
            "utm_medium" => campaign.insert("medium".into(), v),
            "utm_campaign" => campaign.insert("name".into(), v),
            "utm_term" => campaign.insert("term".into(), v),
            "utm_content" => campaign.insert("content".into(), v),
            "utm_id" => campaign.insert("id".into(), v),
            "utm_source_platform" => campaign.insert("source_platform".into(), v),
            "referrer" => ctx.insert("referrer".into(), serde_json::json!({ "url": v })),
            "user_agent" => ctx.insert("userAgent".into(), v),
            "source_type" | "device_type" | "session_entry" | "session_start_time"
            | "session_pages" | "session_count" => attr.insert(k.to_string(), v),
            _ => None,
        };
    }
    if !campaign.is_empty() {
        ctx.insert("campaign".into(), Value::Object(campaign));
    }
    if !attr.is_empty() {
        ctx.insert("attribution".into(), Value::Object(attr));
    }
    ctx
}

/// The fields of a line item that the mapping reads.
#[derive(Default)]
pub(crate) struct LineFacts<'a> {
    pub product_id: Option<u64>,
    pub variation_id: Option<u64>,
    pub name: Option<&'a str>,
    pub sku: Option<&'a str>,
    pub quantity: Option<serde_json::Number>,
    pub total: Option<f64>,
}

/// The line items as they go into `properties` (the first [`MAX_LINE_ITEMS`]),
/// whether some were left out, and the total quantity.
pub(crate) fn line_items_of<'a>(
    items: impl ExactSizeIterator<Item = LineFacts<'a>>,
) -> (Vec<Value>, bool, f64) {
    let truncated = items.len() > MAX_LINE_ITEMS;
    let mut out = Vec::new();
    let mut qty = 0.0;
    for li in items {
        qty += li
            .quantity
            .as_ref()
            .and_then(serde_json::Number::as_f64)
            .unwrap_or(0.0);
        if out.len() >= MAX_LINE_ITEMS {
            continue;
        }
        let mut m = Map::new();
        for (k, v) in [
            ("product_id", li.product_id),
            ("variation_id", li.variation_id),
        ] {
            if let Some(v) = v.filter(|v| *v > 0) {
                m.insert(k.into(), v.into());
            }
        }
        if let Some(n) = li.name {
            m.insert("name".into(), Value::String(bounded(n)));
        }
        if let Some(s) = li.sku {
            m.insert("sku".into(), Value::String(bounded(s)));
        }
        if let Some(q) = li.quantity {
            m.insert("quantity".into(), Value::Number(q));
        }
        if let Some(t) = li.total {
            m.insert("total".into(), t.into());
        }
        out.push(Value::Object(m));
    }
    (out, truncated, qty)
}

fn line_items(o: &Value) -> (Vec<Value>, bool, f64) {
    let items = o
        .get("line_items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    line_items_of(items.iter().map(|li| LineFacts {
        product_id: id_of(li, "product_id"),
        variation_id: id_of(li, "variation_id"),
        name: text(li, "name"),
        sku: text(li, "sku"),
        quantity: match li.get("quantity") {
            Some(Value::Number(n)) => Some(n.clone()),
            _ => None,
        },
        total: money(li.get("total")),
    }))
}

/// A coupon as it goes into `properties.coupons` (none without a code).
pub(crate) fn coupon(code: Option<&str>, discount: Option<f64>) -> Option<Value> {
    let mut m = Map::new();
    m.insert("code".into(), Value::String(bounded(code?)));
    if let Some(d) = discount {
        m.insert("discount".into(), d.into());
    }
    Some(Value::Object(m))
}

/// An order (`GET /orders`) → an `order` event when it is paid, plus a
/// `refund` event per refund.
pub fn map_order(o: &Value, ctx: &Ctx<'_>) -> OrderMapped {
    match order_events(o, ctx) {
        Ok(Some(evs)) => OrderMapped::Events(evs),
        Ok(None) => OrderMapped::Skipped("order_not_paid"),
        Err(reason) => OrderMapped::Rejected(rejected_order(o, reason)),
    }
}

/// What an order's events are built from, read from either form of the order (the
/// slim JSON tree here, typed fields in [`super::typed`]).
pub(crate) struct OrderFacts<'a> {
    pub id: u64,
    pub status: &'a str,
    pub date_paid: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub currency: String,
    pub total: f64,
    pub customer_id: u64,
    pub billing: Option<Billing<'a>>,
    pub number: Option<&'a str>,
    pub parent_id: Option<u64>,
    /// `discount_total`, `shipping_total`, `total_tax`.
    pub amounts: [Option<f64>; 3],
    /// `payment_method`, `payment_method_title`, `created_via`.
    pub texts: [Option<&'a str>; 3],
    pub date_completed: Option<DateTime<Utc>>,
    /// From [`line_items_of`].
    pub items: (Vec<Value>, bool, f64),
    pub coupons: Vec<Value>,
    /// From [`attribution_of`].
    pub context: Map<String, Value>,
    pub user_agent: Option<&'a str>,
    /// Each refund, or why one is unusable.
    pub refunds: Result<Vec<RefundFacts<'a>>, String>,
}

/// A refund of an order: id, amount, reason.
pub(crate) type RefundFacts<'a> = (u64, f64, Option<&'a str>);

/// The checks of an order up to whether it is a sale, in the order the mapping
/// reports them: `None` when it is not paid.
pub(crate) struct OrderHead<'a> {
    pub id: u64,
    pub status: &'a str,
    pub date_paid: Option<DateTime<Utc>>,
}

impl<'a> OrderHead<'a> {
    /// `date_paid`: absent, or the text of the field (`None` when it is not a text).
    pub(crate) fn new(
        id: Option<u64>,
        status: Option<&'a str>,
        date_paid: Option<Option<&str>>,
    ) -> Result<Option<OrderHead<'a>>, String> {
        let id = id
            .filter(|i| *i > 0)
            .ok_or("`id` is missing or not a positive integer")?;
        let status = status.ok_or("`status` is missing")?;
        let date_paid = match date_paid {
            None => None,
            Some(t) => Some(
                t.and_then(parse_wc_date)
                    .ok_or("`date_paid_gmt` is not a date")?,
            ),
        };
        Ok(is_paid(status, date_paid).then_some(OrderHead {
            id,
            status,
            date_paid,
        }))
    }
}

/// `currency` as an ISO 4217 code.
pub(crate) fn currency_of(c: Option<&str>) -> Result<String, String> {
    c.map(str::to_ascii_uppercase)
        .filter(|c| c.len() == 3 && c.chars().all(|x| x.is_ascii_uppercase()))
        .ok_or_else(|| "`currency` is not an ISO 4217 code".to_string())
}

fn order_events(o: &Value, ctx: &Ctx<'_>) -> Result<Option<Vec<CanonicalEvent>>, String> {
    if !o.is_object() {
        return Err("order is not a JSON object".into());
    }
    let date_paid = match o.get("date_paid_gmt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str()),
    };
    let Some(head) = OrderHead::new(id_of(o, "id"), text(o, "status"), date_paid)? else {
        return Ok(None);
    };
    let created =
        date_field(o, "date_created_gmt").ok_or("`date_created_gmt` is missing or not a date")?;
    let modified =
        date_field(o, "date_modified_gmt").ok_or("`date_modified_gmt` is missing or not a date")?;
    let currency = currency_of(text(o, "currency"))?;
    let total = money(o.get("total")).ok_or("`total` is not a decimal")?;
    let customer_id = match o.get("customer_id") {
        None | Some(Value::Null) => 0,
        Some(_) => id_of(o, "customer_id").ok_or("`customer_id` is not an integer")?,
    };
    let coupons = o
        .get("coupon_lines")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .take(20)
        .filter_map(|c| coupon(text(c, "code"), money(c.get("discount"))))
        .collect();
    let refunds = match o.get("refunds") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| {
                let rid = id_of(r, "id")
                    .filter(|i| *i > 0)
                    .ok_or("a refund without a positive `id`")?;
                let amount = money(r.get("total"))
                    .ok_or_else(|| format!("refund {rid}: `total` is not a decimal"))?;
                Ok((rid, amount, text(r, "reason")))
            })
            .collect(),
        Some(_) => Err("`refunds` is not an array".into()),
    };
    order_events_of(
        OrderFacts {
            id: head.id,
            status: head.status,
            date_paid: head.date_paid,
            created,
            modified,
            currency,
            total,
            customer_id,
            billing: billing_of(o.get("billing")),
            number: text(o, "number"),
            parent_id: id_of(o, "parent_id"),
            amounts: ["discount_total", "shipping_total", "total_tax"].map(|k| money(o.get(k))),
            texts: ["payment_method", "payment_method_title", "created_via"].map(|k| text(o, k)),
            date_completed: date_field(o, "date_completed_gmt"),
            items: line_items(o),
            coupons,
            context: attribution(o.get("meta_data")),
            user_agent: text(o, "customer_user_agent"),
            refunds,
        },
        ctx,
    )
    .map(Some)
}

/// The events of a paid order: the order, and one per refund.
pub(crate) fn order_events_of(
    f: OrderFacts<'_>,
    ctx: &Ctx<'_>,
) -> Result<Vec<CanonicalEvent>, String> {
    let id = f.id;
    let p = person(
        ctx.site,
        Some(f.customer_id),
        &[f.billing.and_then(|b| b.email)],
        f.billing,
        (None, None),
    );
    if p.identifiers.is_empty() {
        return Err(
            "no usable identifier: a guest order without a valid billing email or phone".into(),
        );
    }
    let site = ctx.site;
    let number = f
        .number
        .map(str::to_string)
        .unwrap_or_else(|| id.to_string());

    let mut props = Map::new();
    props.insert("order_id".into(), id.into());
    props.insert("number".into(), Value::String(number.clone()));
    props.insert("status".into(), Value::String(f.status.to_string()));
    if f.customer_id > 0 {
        props.insert("customer_id".into(), f.customer_id.into());
    }
    if let Some(p) = f.parent_id.filter(|p| *p > 0) {
        props.insert("parent_id".into(), p.into());
    }
    for (k, v) in ["discount_total", "shipping_total", "total_tax"]
        .iter()
        .zip(f.amounts)
    {
        if let Some(v) = v {
            props.insert((*k).into(), v.into());
        }
    }
    for (k, v) in ["payment_method", "payment_method_title", "created_via"]
        .iter()
        .zip(f.texts)
    {
        if let Some(v) = v {
            props.insert((*k).into(), Value::String(bounded(v)));
        }
    }
    if let Some(t) = f.date_paid {
        props.insert("date_paid".into(), Value::String(t.to_rfc3339()));
    }
    if let Some(t) = f.date_completed {
        props.insert("date_completed".into(), Value::String(t.to_rfc3339()));
    }
    let (items, truncated, qty) = f.items;
    props.insert("item_count".into(), qty.into());
    props.insert("line_items".into(), Value::Array(items));
    if truncated {
        props.insert("line_items_truncated".into(), Value::Bool(true));
    }
    if !f.coupons.is_empty() {
        props.insert("coupons".into(), Value::Array(f.coupons));
    }
    let mut context = f.context;
    if !context.contains_key("userAgent") {
        if let Some(ua) = f.user_agent {
            context.insert("userAgent".into(), Value::String(bounded(ua)));
        }
    }

    let mut events = vec![CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id: format!("woocommerce:{site}:order:{id}"),
        source: format!("woocommerce:{site}"),
        channel: Channel::Shop,
        event_type: "order".into(),
        name: None,
        occurred_at: f.created,
        received_at: ctx.received_at,
        identifiers: p.identifiers.clone(),
        target: Vec::new(),
        traits: p.traits,
        properties: JsonObject::from_map(&props),
        revenue: Some(Revenue {
            amount: f.total,
            currency: f.currency.clone(),
        }),
        context: JsonObject::from_map(&context),
    }];

    for (rid, amount, reason) in f.refunds? {
        let mut rp = Map::new();
        rp.insert("refund_id".into(), rid.into());
        rp.insert("order_id".into(), id.into());
        rp.insert("order_number".into(), Value::String(number.clone()));
        if let Some(reason) = reason {
            rp.insert("reason".into(), Value::String(bounded(reason)));
        }
        events.push(CanonicalEvent {
            claimed: Vec::new(),
            schema_version: SCHEMA_VERSION,
            event_id: format!("woocommerce:{site}:refund:{rid}"),
            source: format!("woocommerce:{site}"),
            channel: Channel::Shop,
            event_type: "refund".into(),
            name: None,
            // the order's refund list carries no date; the order changed when it was refunded
            occurred_at: f.modified,
            received_at: ctx.received_at,
            identifiers: p.identifiers.clone(),
            target: Vec::new(),
            traits: Map::new(),
            properties: JsonObject::from_map(&rp),
            revenue: Some(Revenue {
                amount: amount.abs(),
                currency: f.currency.clone(),
            }),
            context: JsonObject::empty(),
        });
    }
    Ok(events)
}
