//! Shopify GraphQL objects → canonical events. Pure functions: no I/O.
//!
//! | Shopify | canonical |
//! |---|---|
//! | `Customer` (each `updatedAt` version) | `identify`, channel `shop`, `event_id` `shopify:<shop>:customer:<id>:<updatedAt>` |
//! | `Customer.id` (`gid://shopify/Customer/123`) | identifier `shopify:<shop>/123` |
//! | `defaultEmailAddress.emailAddress`, `defaultPhoneNumber.phoneNumber` | `email`, `phone` identifiers and traits |
//! | `Order` | `order`, `event_id` `shopify:<shop>:order:<id>`, `revenue` = `totalPriceSet.shopMoney` |
//! | `Order.customer.id`, `Order.email`, `Order.phone` | identifiers of the order and its refunds |
//! | `Order.lineItems` | `properties.line_items` (product id, title, category = `productType`, quantity, unit price, sku) |
//! | `Order.customerJourneySummary` | `properties.landing_page`, `referrer`, `first_visit`, `last_visit`; `context.campaign` (UTM), `context.page` |
//! | `Order.refunds[]` | one `refund` each, `event_id` `shopify:<shop>:refund:<id>`, `revenue` = refunded amount (positive) |
//!
//! Orders nobody can be identified by (no customer, no usable email or phone: a
//! POS sale to a walk-in customer) and test orders are skipped with a reason
//! ([`SkipReason`]), not rejected: they are valid Shopify objects without a person.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use socialcrm_schemas::{
    CanonicalEvent, Channel, IdType, Identifier, JsonObject, Normalizer, Revenue, SCHEMA_VERSION,
};

use crate::runtime::Rejected;

/// Line items kept in one order event (events must stay under 64 KB); the count of
/// all is in `properties.line_item_count`.
pub const MAX_LINE_ITEMS_IN_EVENT: usize = 150;

/// What every mapping needs besides the object.
pub struct MapCtx<'a> {
    /// `eu-store.myshopify.com`.
    pub shop: &'a str,
    /// `shopify:eu-store.myshopify.com`.
    pub source: &'a str,
    pub received_at: DateTime<Utc>,
    pub include_test_orders: bool,
    pub normalizer: &'a Normalizer,
}

/// Why an order produced no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// No customer, and no usable email or phone on the order.
    NoIdentifier,
    /// `test: true` and `include_test_orders` is off.
    TestOrder,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoIdentifier => "no_identifier",
            SkipReason::TestOrder => "test_order",
        }
    }
}

/// The events of one order: the order itself and its refunds.
#[derive(Debug, Default)]
pub struct OrderOutcome {
    pub events: Vec<CanonicalEvent>,
    pub rejected: Vec<Rejected>,
    pub skipped: Option<SkipReason>,
}

type Obj = Map<String, Value>;

fn opt<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a str>, String> {
    match opt(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn opt_obj<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a Obj>, String> {
    match opt(o, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("`{key}` must be an object")),
    }
}

fn opt_bool(o: &Obj, key: &str) -> Result<Option<bool>, String> {
    match opt(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{key}` must be a boolean")),
    }
}

/// `DateTime` scalars are ISO 8601 / RFC 3339 (`2026-04-15T19:26:33Z`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn opt_time(o: &Obj, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match opt_str(o, key)? {
        None => Ok(None),
        Some(s) => parse_time(s)
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not an ISO 8601 date-time: `{s}`")),
    }
}

/// The time as it goes into event ids: whole seconds, UTC, `Z`.
fn time_key(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `gid://shopify/<kind>/<numeric id>` → the numeric id.
pub fn gid_number(gid: &str, kind: &str) -> Option<String> {
    let rest = gid.strip_prefix("gid://shopify/")?.strip_prefix(kind)?;
    let id = rest.strip_prefix('/')?;
    let id = id.split('?').next().unwrap_or(id);
    (!id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.to_string())
}

/// `updatedAt` of a node, when it is there and valid (the sync's watermark).
pub fn node_updated_at(node: &Value) -> Option<DateTime<Utc>> {
    node.get("updatedAt")
        .and_then(Value::as_str)
        .and_then(parse_time)
}

/// An ISO 4217 code as `MoneyV2.currencyCode` carries it (`EUR`).
pub(super) fn is_currency_code(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

/// A `MoneyV2` (`{amount: "12.30", currencyCode: "EUR"}`).
fn money(v: &Value, what: &str) -> Result<(f64, String), String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("`{what}` must be an object"))?;
    let amount = match opt(o, "amount") {
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
    .filter(|a| a.is_finite())
    .ok_or_else(|| format!("`{what}.amount` is not a decimal amount"))?;
    let currency = opt_str(o, "currencyCode")
        .map_err(|e| format!("`{what}`: {e}"))?
        .filter(|c| is_currency_code(c))
        .ok_or_else(|| format!("`{what}.currencyCode` is not an ISO 4217 code"))?;
    Ok((amount, currency.to_string()))
}

/// The shop-currency amount of a `MoneyBag` field (`totalPriceSet.shopMoney`).
fn shop_money(o: &Obj, key: &str) -> Result<Option<(f64, String)>, String> {
    let Some(bag) = opt_obj(o, key)? else {
        return Ok(None);
    };
    match opt(bag, "shopMoney") {
        None => Ok(None),
        Some(m) => money(m, &format!("{key}.shopMoney")).map(Some),
    }
}

fn shop_amount(o: &Obj, key: &str) -> Result<Option<f64>, String> {
    Ok(shop_money(o, key)?.map(|(a, _)| a))
}

/// Identifier lists: normalised when valid, raw when not (the pipeline records the
/// rejection), no duplicates.
struct Ids<'a> {
    list: Vec<Identifier>,
    usable: usize,
    normalizer: &'a Normalizer,
}

impl<'a> Ids<'a> {
    fn new(normalizer: &'a Normalizer) -> Self {
        Ids {
            list: Vec::new(),
            usable: 0,
            normalizer,
        }
    }

    /// Adds `raw`; returns the normalised value when it is usable.
    fn push(&mut self, t: IdType, raw: &str) -> Option<String> {
        if raw.trim().is_empty() {
            return None;
        }
        let normalized = self.normalizer.normalize_value(t, raw).ok();
        let id = match &normalized {
            Some(v) => Identifier::new(t, v.clone()),
            None => Identifier::new(t, raw.chars().take(256).collect::<String>()),
        };
        if !self.list.contains(&id) {
            if normalized.is_some() {
                self.usable += 1;
            }
            self.list.push(id);
        }
        normalized
    }
}

fn reject(node: &Value, id: Option<&str>, reason: String) -> Rejected {
    Rejected::json(id.unwrap_or("?"), reason, node)
}

fn base_event(
    ctx: &MapCtx<'_>,
    event_id: String,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    identifiers: Vec<Identifier>,
) -> CanonicalEvent {
    CanonicalEvent {
        claimed: Vec::new(),
        schema_version: SCHEMA_VERSION,
        event_id,
        source: ctx.source.to_string(),
        channel: Channel::Shop,
        event_type: event_type.to_string(),
        name: None,
        occurred_at,
        received_at: ctx.received_at,
        identifiers,
        target: Vec::new(),
        traits: Map::new(),
        properties: JsonObject::empty(),
        revenue: None,
        context: JsonObject::empty(),
    }
}

fn put(m: &mut Obj, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v.into());
    }
}

/// What a customer's `identify` is built from, read from either form of the
/// customer (see [`OrderFacts`]).
pub(super) struct CustomerFacts<'a> {
    /// The numeric id.
    pub id: String,
    pub updated_at: DateTime<Utc>,
    pub created_at: Option<DateTime<Utc>>,
    /// `defaultEmailAddress`: the address and its marketing state.
    pub email: Option<(Option<&'a str>, Option<&'a str>)>,
    /// `defaultPhoneNumber`: the number and its marketing state.
    pub phone: Option<(Option<&'a str>, Option<&'a str>)>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub tags: Option<Vec<Value>>,
    pub orders_count: Option<serde_json::Number>,
    pub amount_spent: Option<(f64, String)>,
    pub state: Option<&'a str>,
    pub verified_email: Option<bool>,
    pub locale: Option<&'a str>,
    /// `defaultAddress`: city, province code, country code.
    pub address: Option<[Option<&'a str>; 3]>,
}

/// The `identify` of a customer version.
pub(super) fn customer_event(f: CustomerFacts<'_>, ctx: &MapCtx<'_>) -> CanonicalEvent {
    let mut ids = Ids::new(ctx.normalizer);
    ids.push(IdType::Shopify, &format!("{}/{}", ctx.shop, f.id));
    let mut traits = Map::new();
    for (contact, t, key, consent) in [
        (f.email, IdType::Email, "email", "email_marketing_consent"),
        (f.phone, IdType::Phone, "phone", "sms_marketing_consent"),
    ] {
        let Some((value, marketing)) = contact else {
            continue;
        };
        if let Some(value) = value {
            let n = ids.push(t, value);
            traits.insert(
                key.into(),
                Value::String(n.unwrap_or_else(|| value.to_string())),
            );
        }
        put(&mut traits, consent, marketing);
    }
    let (first, last) = (f.first_name.map(str::trim), f.last_name.map(str::trim));
    put(&mut traits, "first_name", first.filter(|s| !s.is_empty()));
    put(&mut traits, "last_name", last.filter(|s| !s.is_empty()));
    let full: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if !full.is_empty() {
        traits.insert("name".into(), Value::String(full.join(" ")));
    }
    put(&mut traits, "tags", f.tags);
    put(&mut traits, "shopify_orders_count", f.orders_count);
    if let Some((amount, currency)) = f.amount_spent {
        traits.insert("shopify_amount_spent".into(), amount.into());
        traits.insert("shopify_currency".into(), currency.into());
    }
    put(&mut traits, "shopify_account_state", f.state);
    put(&mut traits, "verified_email", f.verified_email);
    put(&mut traits, "locale", f.locale);
    if let Some([city, region, country]) = f.address {
        put(&mut traits, "city", city);
        put(&mut traits, "region", region);
        put(&mut traits, "country", country);
    }
    put(
        &mut traits,
        "shopify_created_at",
        f.created_at.as_ref().map(time_key),
    );

    let mut props = Map::new();
    props.insert("customer_id".into(), Value::String(f.id.clone()));
    let mut ev = base_event(
        ctx,
        format!(
            "{}:customer:{}:{}",
            ctx.source,
            f.id,
            time_key(&f.updated_at)
        ),
        "identify",
        f.updated_at,
        ids.list,
    );
    ev.traits = traits;
    ev.properties = JsonObject::from_map(&props);
    ev
}

/// A customer version → `identify`.
pub fn map_customer(node: &Value, ctx: &MapCtx<'_>) -> Result<CanonicalEvent, Rejected> {
    let raw_id = node.get("id").and_then(Value::as_str);
    let r = |reason: String| reject(node, raw_id, reason);
    let o = node
        .as_object()
        .ok_or_else(|| r("customer is not a JSON object".into()))?;
    let gid = raw_id.ok_or_else(|| r("customer has no `id`".into()))?;
    let id = gid_number(gid, "Customer").ok_or_else(|| {
        r(format!(
            "`id` `{gid}` is not a gid://shopify/Customer/<number>"
        ))
    })?;
    let updated_at = opt_time(o, "updatedAt")
        .map_err(&r)?
        .ok_or_else(|| r("customer has no `updatedAt`".into()))?;
    let created_at = opt_time(o, "createdAt").map_err(&r)?;
    let email = match opt_obj(o, "defaultEmailAddress").map_err(&r)? {
        Some(e) => Some((
            opt_str(e, "emailAddress").map_err(|e| r(format!("defaultEmailAddress: {e}")))?,
            opt_str(e, "marketingState").map_err(&r)?,
        )),
        None => None,
    };
    let phone = match opt_obj(o, "defaultPhoneNumber").map_err(&r)? {
        Some(p) => Some((
            opt_str(p, "phoneNumber").map_err(|e| r(format!("defaultPhoneNumber: {e}")))?,
            opt_str(p, "marketingState").map_err(&r)?,
        )),
        None => None,
    };
    let first_name = opt_str(o, "firstName").map_err(&r)?;
    let last_name = opt_str(o, "lastName").map_err(&r)?;
    let tags = match opt(o, "tags") {
        None => None,
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => Some(tags.clone()),
        Some(_) => return Err(r("`tags` must be a list of strings".into())),
    };
    // UnsignedInt64 travels as a string
    let orders_count = match opt(o, "numberOfOrders") {
        None => None,
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(n) => Some(n.into()),
            Err(_) => return Err(r(format!("`numberOfOrders` `{s}` is not a count"))),
        },
        Some(Value::Number(n)) => Some(n.clone()),
        Some(_) => return Err(r("`numberOfOrders` must be a count".into())),
    };
    let amount_spent = match opt(o, "amountSpent") {
        Some(spent) => Some(money(spent, "amountSpent").map_err(&r)?),
        None => None,
    };
    let state = opt_str(o, "state").map_err(&r)?;
    let verified_email = opt_bool(o, "verifiedEmail").map_err(&r)?;
    let locale = opt_str(o, "locale").map_err(&r)?;
    let address = match opt_obj(o, "defaultAddress").map_err(&r)? {
        Some(a) => Some([
            opt_str(a, "city").map_err(&r)?,
            opt_str(a, "provinceCode").map_err(&r)?,
            opt_str(a, "countryCodeV2").map_err(&r)?,
        ]),
        None => None,
    };
    Ok(customer_event(
        CustomerFacts {
            id,
            updated_at,
            created_at,
            email,
            phone,
            first_name,
            last_name,
            tags,
            orders_count,
            amount_spent,
            state,
            verified_email,
            locale,
            address,
        },
        ctx,
    ))
}

/// The fields of a `CustomerVisit` that the mapping reads.
#[derive(Default)]
pub(super) struct VisitFacts<'a> {
    pub occurred_at: Option<&'a str>,
    pub landing_page: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub source: Option<&'a str>,
    /// `utmParameters` when present: campaign, source, medium, content, term.
    pub utm: Option<[Option<&'a str>; 5]>,
}

/// A visit as event facts, and its campaign (Segment's `context.campaign`).
pub(super) fn visit_facts(v: &VisitFacts<'_>) -> (Obj, Obj) {
    let mut out = Map::new();
    put(&mut out, "occurred_at", v.occurred_at);
    put(&mut out, "landing_page", v.landing_page);
    put(&mut out, "referrer", v.referrer);
    put(&mut out, "source", v.source);
    let mut campaign = Map::new();
    if let Some(utm) = &v.utm {
        // Segment's context.campaign names utm_campaign `name`
        for (to, value) in ["name", "source", "medium", "content", "term"]
            .into_iter()
            .zip(utm)
        {
            put(&mut campaign, to, *value);
        }
        if !campaign.is_empty() {
            out.insert("utm".into(), Value::Object(campaign.clone()));
        }
    }
    (out, campaign)
}

/// One `CustomerVisit` as event facts.
fn visit(v: &Obj) -> Result<(Obj, Obj), String> {
    let mut facts = VisitFacts {
        occurred_at: opt_str(v, "occurredAt")?,
        landing_page: opt_str(v, "landingPage")?,
        referrer: opt_str(v, "referrerUrl")?,
        source: opt_str(v, "source")?,
        utm: None,
    };
    if let Some(u) = opt_obj(v, "utmParameters")? {
        let mut utm = [None; 5];
        for (slot, from) in utm
            .iter_mut()
            .zip(["campaign", "source", "medium", "content", "term"])
        {
            *slot = opt_str(u, from)?;
        }
        facts.utm = Some(utm);
    }
    Ok(visit_facts(&facts))
}

/// The fields of a line item that the mapping reads.
pub(super) struct LineFacts<'a> {
    pub id: Option<&'a str>,
    /// `product.id` and `product.productType` (`None`: no product).
    pub product: Option<(Option<&'a str>, Option<&'a str>)>,
    pub title: Option<&'a str>,
    pub variant_title: Option<&'a str>,
    pub sku: Option<&'a str>,
    pub quantity: Option<serde_json::Number>,
    pub unit_price: Option<f64>,
    pub total: Option<f64>,
}

/// A line item as it goes into `properties.line_items`.
pub(super) fn line_item_value(f: LineFacts<'_>) -> Value {
    let mut m = Map::new();
    if let Some(id) = f.id {
        put(&mut m, "line_item_id", gid_number(id, "LineItem"));
    }
    if let Some((pid, product_type)) = f.product {
        if let Some(pid) = pid {
            m.insert(
                "product_id".into(),
                Value::String(gid_number(pid, "Product").unwrap_or_else(|| pid.to_string())),
            );
        }
        put(
            &mut m,
            "category",
            product_type.filter(|t| !t.trim().is_empty()),
        );
    }
    put(&mut m, "title", f.title);
    put(&mut m, "variant_title", f.variant_title);
    put(&mut m, "sku", f.sku.filter(|s| !s.is_empty()));
    put(&mut m, "quantity", f.quantity);
    put(&mut m, "unit_price", f.unit_price);
    put(&mut m, "total", f.total);
    Value::Object(m)
}

fn line_item(li: &Value) -> Result<Value, String> {
    let o = li
        .as_object()
        .ok_or_else(|| "a line item is not an object".to_string())?;
    let id = opt_str(o, "id")?;
    let product = match opt_obj(o, "product")? {
        Some(p) => Some((opt_str(p, "id")?, opt_str(p, "productType")?)),
        None => None,
    };
    let (title, variant_title, sku) = (
        opt_str(o, "title")?,
        opt_str(o, "variantTitle")?,
        opt_str(o, "sku")?,
    );
    let quantity = match opt(o, "quantity") {
        None => None,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.clone()),
        Some(_) => return Err("line item `quantity` must be an integer".into()),
    };
    Ok(line_item_value(LineFacts {
        id,
        product,
        title,
        variant_title,
        sku,
        quantity,
        unit_price: shop_amount(o, "originalUnitPriceSet")?,
        total: shop_amount(o, "discountedTotalSet")?,
    }))
}

/// An order → `order` plus one `refund` per refund (or a skip reason).
pub fn map_order(node: &Value, ctx: &MapCtx<'_>) -> OrderOutcome {
    let mut out = OrderOutcome::default();
    match map_order_inner(node, ctx, &mut out) {
        Ok(()) => {}
        Err(reason) => {
            out.events.clear();
            let raw_id = node.get("id").and_then(Value::as_str);
            out.rejected.push(reject(node, raw_id, reason));
        }
    }
    out
}

/// What an order's event is built from, read from either form of the order (the
/// JSON tree here, the typed lines of a bulk result in [`super::typed`]).
pub(super) struct OrderFacts<'a> {
    pub head: OrderHead,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub test: Option<bool>,
    pub customer_id: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub amount: f64,
    pub currency: String,
    pub presentment: Option<(f64, String)>,
    pub name: Option<&'a str>,
    pub financial_status: Option<&'a str>,
    pub fulfillment_status: Option<&'a str>,
    pub source_name: Option<&'a str>,
    pub tags: Option<Vec<Value>>,
    pub discount_codes: Option<Vec<Value>>,
    /// Shop-currency amounts of [`ORDER_AMOUNTS`], in that order.
    pub amounts: [Option<f64>; 5],
    /// The first [`MAX_LINE_ITEMS_IN_EVENT`] line items, with the count and total
    /// quantity of all.
    pub items: Vec<Value>,
    pub item_count: usize,
    pub quantity: i64,
    pub first_visit: Option<(Obj, Obj)>,
    pub last_visit: Option<(Obj, Obj)>,
}

/// The order's `MoneyBag` fields read as shop-currency amounts, and their names in
/// `properties`.
pub(super) const ORDER_AMOUNTS: [(&str, &str); 5] = [
    ("subtotalPriceSet", "subtotal"),
    ("totalDiscountsSet", "discounts"),
    ("totalTaxSet", "tax"),
    ("totalShippingPriceSet", "shipping"),
    ("totalRefundedSet", "refunded"),
];

/// The first steps of reading an order, shared by both forms: its id, times, and
/// whether it is skipped as a test order.
pub(super) struct OrderHead {
    pub id: String,
    pub updated_at: DateTime<Utc>,
    pub created_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
}

/// A field as read from the order: absent, or its value, or why it is unusable.
pub(super) type Field<T> = Result<Option<T>, String>;

impl OrderHead {
    /// Checks the fields in the order the mapping reports them.
    pub(super) fn new(
        gid: Field<&str>,
        updated_at: Field<DateTime<Utc>>,
        created_at: Field<DateTime<Utc>>,
        processed_at: Field<DateTime<Utc>>,
    ) -> Result<OrderHead, String> {
        let gid = gid?.ok_or_else(|| "order has no `id`".to_string())?;
        let id = gid_number(gid, "Order")
            .ok_or_else(|| format!("`id` `{gid}` is not a gid://shopify/Order/<number>"))?;
        let updated_at = updated_at?.ok_or_else(|| "order has no `updatedAt`".to_string())?;
        let created_at = created_at?;
        let processed_at = processed_at?;
        let occurred_at = processed_at
            .or(created_at)
            .ok_or_else(|| "order has neither `processedAt` nor `createdAt`".to_string())?;
        Ok(OrderHead {
            id,
            updated_at,
            created_at,
            processed_at,
            occurred_at,
        })
    }
}

/// The order's identifiers (customer, email, phone) and its customer's id; `None`
/// when none of them is usable.
pub(super) fn order_identifiers(
    ctx: &MapCtx<'_>,
    customer_gid: Option<&str>,
    email: Field<&str>,
    phone: Field<&str>,
) -> Field<(Vec<Identifier>, Option<String>)> {
    let mut ids = Ids::new(ctx.normalizer);
    let mut customer_id = None;
    if let Some(cgid) = customer_gid {
        let cid = gid_number(cgid, "Customer")
            .ok_or_else(|| format!("`customer.id` `{cgid}` is not a Customer gid"))?;
        ids.push(IdType::Shopify, &format!("{}/{cid}", ctx.shop));
        customer_id = Some(cid);
    }
    if let Some(email) = email? {
        ids.push(IdType::Email, email);
    }
    if let Some(phone) = phone? {
        ids.push(IdType::Phone, phone);
    }
    Ok((ids.usable > 0).then_some((ids.list, customer_id)))
}

/// Adds one line item to the facts' list (only the first
/// [`MAX_LINE_ITEMS_IN_EVENT`] are kept; all are counted).
pub(super) fn add_line_item(
    items: &mut Vec<Value>,
    count: &mut usize,
    quantity: &mut i64,
    item: Value,
) {
    *count += 1;
    *quantity += item.get("quantity").and_then(Value::as_i64).unwrap_or(0);
    if items.len() < MAX_LINE_ITEMS_IN_EVENT {
        items.push(item);
    }
}

/// The `order` event of an order.
pub(super) fn order_event(f: OrderFacts<'_>, ctx: &MapCtx<'_>) -> CanonicalEvent {
    let mut p = Map::new();
    p.insert("order_id".into(), Value::String(f.head.id.clone()));
    put(&mut p, "order_name", f.name);
    put(&mut p, "customer_id", f.customer_id);
    put(
        &mut p,
        "created_at",
        f.head.created_at.as_ref().map(time_key),
    );
    put(
        &mut p,
        "processed_at",
        f.head.processed_at.as_ref().map(time_key),
    );
    put(
        &mut p,
        "cancelled_at",
        f.cancelled_at.as_ref().map(time_key),
    );
    put(&mut p, "financial_status", f.financial_status);
    put(&mut p, "fulfillment_status", f.fulfillment_status);
    put(&mut p, "source_name", f.source_name);
    put(&mut p, "test", f.test);
    put(&mut p, "tags", f.tags);
    put(&mut p, "discount_codes", f.discount_codes);
    p.insert("currency".into(), Value::String(f.currency.clone()));
    p.insert("total".into(), f.amount.into());
    for ((_, name), amount) in ORDER_AMOUNTS.iter().zip(f.amounts) {
        put(&mut p, name, amount);
    }
    if let Some((pa, pc)) = f.presentment {
        if pc != f.currency {
            p.insert("presentment_total".into(), pa.into());
            p.insert("presentment_currency".into(), pc.into());
        }
    }
    p.insert("line_item_count".into(), f.item_count.into());
    p.insert("quantity".into(), f.quantity.into());
    if f.item_count > f.items.len() {
        p.insert("line_items_truncated".into(), Value::Bool(true));
    }
    p.insert("line_items".into(), Value::Array(f.items));

    // attribution
    let mut context = Map::new();
    if let Some((first, _)) = &f.first_visit {
        put(&mut p, "landing_page", first.get("landing_page").cloned());
        put(&mut p, "referrer", first.get("referrer").cloned());
    }
    // the session that led to the order (last touch) is the event's context, as
    // Segment puts the current page's campaign in context.campaign
    if let Some((v, campaign)) = f.last_visit.as_ref().or(f.first_visit.as_ref()) {
        if !campaign.is_empty() {
            context.insert("campaign".into(), Value::Object(campaign.clone()));
        }
        let mut page = Map::new();
        put(&mut page, "url", v.get("landing_page").cloned());
        put(&mut page, "referrer", v.get("referrer").cloned());
        if !page.is_empty() {
            context.insert("page".into(), Value::Object(page));
        }
    }
    if let Some((first, _)) = f.first_visit {
        p.insert("first_visit".into(), Value::Object(first));
    }
    if let Some((last, _)) = f.last_visit {
        p.insert("last_visit".into(), Value::Object(last));
    }

    let mut order = base_event(
        ctx,
        format!("{}:order:{}", ctx.source, f.head.id),
        "order",
        f.head.occurred_at,
        f.identifiers,
    );
    order.revenue = Some(Revenue {
        amount: f.amount,
        currency: f.currency,
    });
    order.properties = JsonObject::from_map(&p);
    order.context = JsonObject::from_map(&context);
    order
}

/// A list of strings (`tags`, `discountCodes`) as it goes into `properties`.
fn string_list(o: &Obj, key: &str) -> Result<Option<Vec<Value>>, String> {
    match opt(o, key) {
        None => Ok(None),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(Some(a.clone())),
        Some(_) => Err(format!("`{key}` must be a list of strings")),
    }
}

fn map_order_inner(node: &Value, ctx: &MapCtx<'_>, out: &mut OrderOutcome) -> Result<(), String> {
    let o = node
        .as_object()
        .ok_or_else(|| "order is not a JSON object".to_string())?;
    let head = OrderHead::new(
        opt_str(o, "id"),
        opt_time(o, "updatedAt"),
        opt_time(o, "createdAt"),
        opt_time(o, "processedAt"),
    )?;
    let test = opt_bool(o, "test")?;
    if test == Some(true) && !ctx.include_test_orders {
        out.skipped = Some(SkipReason::TestOrder);
        return Ok(());
    }

    // who
    let customer_gid = match opt_obj(o, "customer")? {
        Some(c) => opt_str(c, "id")?,
        None => None,
    };
    let Some((identifiers, customer_id)) =
        order_identifiers(ctx, customer_gid, opt_str(o, "email"), opt_str(o, "phone"))?
    else {
        out.skipped = Some(SkipReason::NoIdentifier);
        return Ok(());
    };

    // money
    let total_bag =
        opt_obj(o, "totalPriceSet")?.ok_or_else(|| "order has no `totalPriceSet`".to_string())?;
    let (amount, currency) = money(
        opt(total_bag, "shopMoney")
            .ok_or_else(|| "order has no `totalPriceSet.shopMoney`".to_string())?,
        "totalPriceSet.shopMoney",
    )?;
    let presentment = match opt(total_bag, "presentmentMoney") {
        Some(m) => Some(money(m, "totalPriceSet.presentmentMoney")?),
        None => None,
    };
    let name = opt_str(o, "name")?;
    let cancelled_at = opt_time(o, "cancelledAt")?;
    let financial_status = opt_str(o, "displayFinancialStatus")?;
    let fulfillment_status = opt_str(o, "displayFulfillmentStatus")?;
    let source_name = opt_str(o, "sourceName")?;
    let tags = string_list(o, "tags")?;
    let discount_codes = string_list(o, "discountCodes")?;
    let mut amounts = [None; 5];
    for (slot, (key, _)) in amounts.iter_mut().zip(ORDER_AMOUNTS) {
        *slot = shop_amount(o, key)?;
    }

    // line items
    let (mut items, mut item_count, mut quantity) = (Vec::new(), 0, 0);
    if let Some(li) = opt_obj(o, "lineItems")? {
        match opt(li, "nodes") {
            None => {}
            Some(Value::Array(nodes)) => {
                for n in nodes {
                    add_line_item(&mut items, &mut item_count, &mut quantity, line_item(n)?);
                }
            }
            Some(_) => return Err("`lineItems.nodes` must be a list".into()),
        }
    }

    // attribution
    let (mut first_visit, mut last_visit) = (None, None);
    if let Some(j) = opt_obj(o, "customerJourneySummary")? {
        first_visit = opt_obj(j, "firstVisit")?.map(visit).transpose()?;
        last_visit = opt_obj(j, "lastVisit")?.map(visit).transpose()?;
    }

    let (id, updated_at) = (head.id.clone(), head.updated_at);
    out.events.push(order_event(
        OrderFacts {
            head,
            cancelled_at,
            test,
            customer_id,
            identifiers: identifiers.clone(),
            amount,
            currency,
            presentment,
            name,
            financial_status,
            fulfillment_status,
            source_name,
            tags,
            discount_codes,
            amounts,
            items,
            item_count,
            quantity,
            first_visit,
            last_visit,
        },
        ctx,
    ));

    // refunds: each is its own event; a malformed one is rejected alone
    match opt(o, "refunds") {
        None => {}
        Some(Value::Array(refunds)) => {
            for rf in refunds {
                match map_refund(rf, ctx, &id, name, updated_at, &identifiers) {
                    Ok(ev) => out.events.push(ev),
                    Err(reason) => {
                        let rid = rf.get("id").and_then(Value::as_str);
                        out.rejected.push(reject(
                            rf,
                            rid,
                            format!("refund of order {id}: {reason}"),
                        ));
                    }
                }
            }
        }
        Some(_) => return Err("`refunds` must be a list".into()),
    }
    Ok(())
}

/// What a refund's event is built from.
pub(super) struct RefundFacts<'a> {
    pub id: String,
    pub at: DateTime<Utc>,
    pub amount: f64,
    pub currency: String,
    pub note: Option<&'a str>,
}

/// The `refund` event of one of an order's refunds.
pub(super) fn refund_event(
    f: RefundFacts<'_>,
    ctx: &MapCtx<'_>,
    order_id: &str,
    order_name: Option<&str>,
    identifiers: &[Identifier],
) -> CanonicalEvent {
    let mut p = Map::new();
    p.insert("refund_id".into(), Value::String(f.id.clone()));
    p.insert("order_id".into(), Value::String(order_id.to_string()));
    put(&mut p, "order_name", order_name);
    put(&mut p, "note", f.note.filter(|n| !n.is_empty()));
    let mut ev = base_event(
        ctx,
        format!("{}:refund:{}", ctx.source, f.id),
        "refund",
        f.at,
        identifiers.to_vec(),
    );
    // the refunded amount, positive: the `refund` type says it is money going back
    // (the pipeline subtracts it from the customer's revenue)
    ev.revenue = Some(Revenue {
        amount: f.amount.abs(),
        currency: f.currency,
    });
    ev.properties = JsonObject::from_map(&p);
    ev
}

fn map_refund(
    rf: &Value,
    ctx: &MapCtx<'_>,
    order_id: &str,
    order_name: Option<&str>,
    order_updated_at: DateTime<Utc>,
    identifiers: &[Identifier],
) -> Result<CanonicalEvent, String> {
    let o = rf
        .as_object()
        .ok_or_else(|| "refund is not a JSON object".to_string())?;
    let gid = opt_str(o, "id")?.ok_or_else(|| "refund has no `id`".to_string())?;
    let id = gid_number(gid, "Refund")
        .ok_or_else(|| format!("`id` `{gid}` is not a gid://shopify/Refund/<number>"))?;
    // `createdAt` may be null for refunds being processed: the order's update is
    // when the refund appeared
    let at = opt_time(o, "createdAt")?.unwrap_or(order_updated_at);
    let (amount, currency) = shop_money(o, "totalRefundedSet")?
        .ok_or_else(|| "refund has no `totalRefundedSet.shopMoney`".to_string())?;
    let note = opt_str(o, "note")?;
    Ok(refund_event(
        RefundFacts {
            id,
            at,
            amount,
            currency,
            note,
        },
        ctx,
        order_id,
        order_name,
        identifiers,
    ))
}
